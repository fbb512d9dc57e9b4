// Canonical keys of tagged senders: verbatim BATV, SRS and VERP return paths as MTAs and list
// managers write them, and look-alikes that must keep their own key.
#include "callout/tagged_sender.hpp"

#include <gtest/gtest.h>

namespace calloutd {
namespace {

struct Case {
    const char* sender;
    const char* key;   // expected canonical key
    const char* form;  // "" = untagged (key is the address itself)
};

TEST(TaggedSender, Table) {
    const Case cases[] = {
        // BATV (draft-levine-smtp-batv-01: K DDD SSSSSS)
        {"prvs=1234abcdef=alice@batv.example", "alice@batv.example", "batv"},
        {"PRVS=0123456789=Alice.Smith@batv.example", "Alice.Smith@batv.example", "batv"},
        {"msprvs1=17913S4pF8xNI=bounces-321@ms.example", "bounces-321@ms.example", "batv"},
        {"btv1==12a34b56c78d==bob@barracuda.example", "bob@barracuda.example", "batv"},
        {"prvs=1234abcdef=list-bounces+carol=c.example@lists.example", "list-bounces@lists.example",
         "batv"},  // BATV-signed VERP
        // SRS (libsrs2/postsrsd), the per-message hash and timestamp dropped
        {"SRS0=Ab3d=ZQ=orig.example=alice@fwd.example", "SRS0=orig.example=alice@fwd.example",
         "srs0"},
        {"SRS0=xyz9=AB=orig.example=alice@fwd.example", "SRS0=orig.example=alice@fwd.example",
         "srs0"},
        {"srs0+Ab3d=ZQ=ORIG.example=alice@fwd.example", "SRS0=orig.example=alice@fwd.example",
         "srs0"},
        {"SRS0-Ab/+=ZQ=orig.example=a=b@fwd.example", "SRS0=orig.example=a=b@fwd.example", "srs0"},
        {"SRS1=Hh1=first.example==Ab3d=ZQ=orig.example=alice@second.example",
         "SRS1=first.example==orig.example=alice@second.example", "srs1"},
        // VERP
        {"mylist-bounces+alice=example.org@lists.example.net", "mylist-bounces@lists.example.net",
         "verp"},
        {"owner-list+bob=mail.example.com@example.net", "owner-list@example.net", "verp"},
        {"list-return-1234-carol=example.org@ezmlm.example", "list-return@ezmlm.example", "verp"},
        {"list-return-1234-@ezmlm.example", "list-return@ezmlm.example", "verp"},
        // look-alikes: each keeps its own key
        {"alice@plain.example", "alice@plain.example", ""},
        {"alice+news@plain.example", "alice+news@plain.example", ""},          // sub-address
        {"alice+a=b@plain.example", "alice+a=b@plain.example", ""},            // no domain after =
        {"prvs=abc=alice@batv.example", "prvs=abc=alice@batv.example", ""},    // tag too short
        {"prvs=1234abcdef@batv.example", "prvs=1234abcdef@batv.example", ""},  // no local
        {"prvs=12-4abcdef=alice@batv.example", "prvs=12-4abcdef=alice@batv.example", ""},
        {"SRS0=Ab3d=Z=orig.example=alice@fwd.example", "SRS0=Ab3d=Z=orig.example=alice@fwd.example",
         ""},  // timestamp is two base32 characters
        {"SRS0=Ab3d=ZQ=orig=alice@fwd.example", "SRS0=Ab3d=ZQ=orig=alice@fwd.example", ""},
        {"SRS0=Ab3d=ZQ=orig.example=@fwd.example", "SRS0=Ab3d=ZQ=orig.example=@fwd.example", ""},
        {"SRS2=Ab3d=ZQ=orig.example=alice@fwd.example",
         "SRS2=Ab3d=ZQ=orig.example=alice@fwd.example", ""},
        {"list-return-12a-carol=example.org@ezmlm.example",
         "list-return-12a-carol=example.org@ezmlm.example", ""},
        {"\"prvs=1234abcdef=alice\"@batv.example", "\"prvs=1234abcdef=alice\"@batv.example", ""},
    };
    for (const auto& c : cases) {
        AddressParse p = parse_sender(c.sender);
        ASSERT_TRUE(p) << c.sender << ": " << p.refusal;
        SenderKey k = sender_key(*p.address);
        EXPECT_EQ(k.key, c.key) << c.sender;
        EXPECT_EQ(k.form, c.form) << c.sender;
        EXPECT_EQ(k.tagged(), std::string_view(c.form) != "") << c.sender;
    }
}

// Every message of one mailbox maps to one key; different mailboxes never share one.
TEST(TaggedSender, VariantsShareAKeyAndMailboxesDoNot) {
    auto key = [](const char* s) { return sender_key(*parse_sender(s).address).key; };
    EXPECT_EQ(key("prvs=1111aaaaaa=alice@d.example"), key("prvs=2222bbbbbb=alice@d.example"));
    EXPECT_NE(key("prvs=1111aaaaaa=alice@d.example"), key("prvs=1111aaaaaa=bob@d.example"));
    EXPECT_NE(key("prvs=1111aaaaaa=alice@d.example"), key("prvs=1111aaaaaa=alice@e.example"));
    EXPECT_EQ(key("SRS0=aaaa=AA=o.example=alice@f.example"),
              key("SRS0=bbbb=ZZ=o.example=alice@f.example"));
    EXPECT_NE(key("SRS0=aaaa=AA=o.example=alice@f.example"),
              key("SRS0=aaaa=AA=o.example=bob@f.example"));
    EXPECT_NE(key("SRS0=aaaa=AA=o.example=alice@f.example"),
              key("SRS0=aaaa=AA=p.example=alice@f.example"));
    EXPECT_NE(key("SRS0=aaaa=AA=o.example=alice@f.example"),
              key("SRS0=aaaa=AA=o.example=alice@g.example"));
    // The original address inside SRS is not taken for the mailbox.
    EXPECT_NE(key("SRS0=aaaa=AA=o.example=alice@f.example"), "alice@o.example");
}

}  // namespace
}  // namespace calloutd
