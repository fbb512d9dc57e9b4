// Decision pipeline: skip rules table, one verdict per message, action mapping, dry run.
#include <gtest/gtest.h>

#include "daemon/config.hpp"
#include "policy/decider.hpp"
#include "policy/domain_list.hpp"
#include "policy/skip_rules.hpp"

namespace calloutd {
namespace {

PolicySettings default_settings() {
    auto r = load_config_text("", "t.toml");
    return std::get<Config>(r).policy;
}

PolicyRequest rcpt(std::string sender, std::string client = "198.51.100.7") {
    PolicyRequest r;
    r.request = "smtpd_access_policy";
    r.protocol_state = "RCPT";
    r.sender = std::move(sender);
    r.client_address = std::move(client);
    return r;
}

struct SkipCase {
    const char* name;
    PolicyRequest req;
    const char* reason;  // nullptr = must be verified
};

TEST(SkipRules, Table) {
    PolicySettings s = default_settings();
    s.trusted_networks = CidrSet({*Cidr::parse("192.0.2.0/24"), *Cidr::parse("2001:db8::/32")});
    s.own_domains = DomainSet({"example.com"});
    s.skip_domains = DomainSet({"gmail.com", "hotmail.com"});

    auto with = [](PolicyRequest r, auto fn) {
        fn(r);
        return r;
    };
    const SkipCase cases[] = {
        {"verified", rcpt("alice@example.org"), nullptr},
        {"mail_state", with(rcpt("a@example.org"), [](auto& r) { r.protocol_state = "MAIL"; }),
         "protocol-state"},
        {"data_state", with(rcpt("a@example.org"), [](auto& r) { r.protocol_state = "DATA"; }),
         "protocol-state"},
        {"null_sender", rcpt(""), "null-sender"},
        {"angle_null_sender", rcpt("<>"), "null-sender"},
        {"sasl_user", with(rcpt("a@example.org"), [](auto& r) { r.sasl_username = "alice"; }),
         "sasl-authenticated"},
        {"sasl_method", with(rcpt("a@example.org"), [](auto& r) { r.sasl_method = "PLAIN"; }),
         "sasl-authenticated"},
        {"trusted_v4", rcpt("a@example.org", "192.0.2.99"), "trusted-client"},
        {"trusted_v6", rcpt("a@example.org", "2001:db8::25"), "trusted-client"},
        {"untrusted_v6", rcpt("a@example.org", "2001:db9::25"), nullptr},
        {"unknown_client", rcpt("a@example.org", "unknown"), nullptr},
        {"own_domain", rcpt("bob@Example.COM"), "own-domain"},
        {"own_subdomain", rcpt("bob@lists.example.com"), "own-domain"},
        {"own_lookalike", rcpt("bob@notexample.com"), nullptr},
        {"skip_domain", rcpt("x@gmail.com"), "skip-domain"},
        {"skip_subdomain", rcpt("x@eu.hotmail.com"), "skip-domain"},
        {"skip_trailing_dot", rcpt("x@gmail.com."), "skip-domain"},
        {"skip_upper_case_trailing_dot", rcpt("x@GMail.COM."), "skip-domain"},
        {"skip_quoted_local_with_at", rcpt("\"a@b\"@gmail.com"), "skip-domain"},
        {"unparsable_local_listed_domain", rcpt("a..b@gmail.com"), "skip-domain"},
        // Spellings that the probe maps to a listed domain are that domain for the lists too.
        {"skip_fullwidth", rcpt("x@\uff47\uff4d\uff41\uff49\uff4c.com"), "skip-domain"},
        {"skip_soft_hyphen", rcpt("x@gm\u00adail.com"), "skip-domain"},
        {"skip_ideographic_stop", rcpt("x@gmail\u3002com"), "skip-domain"},
        {"skip_halfwidth_stop", rcpt("x@hotmail\uff61com"), "skip-domain"},
        {"own_fullwidth", rcpt("x@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com"), "own-domain"},
        {"own_soft_hyphen", rcpt("x@lists.exam\u00adple.com"), "own-domain"},
        {"own_ideographic_stop", rcpt("x@example\u3002com"), "own-domain"},
        // A name that cannot be mapped is never probed.
        {"bad_domain", rcpt("x@\u2603.example.org"), "bad-domain: invalid IDN domain"},
        {"bad_a_label", rcpt("x@xn--zz.example.org"), "bad-domain: invalid IDN domain"},
    };
    for (const auto& c : cases) {
        // Alone, and with the sender parsed first as the Decider does: the same outcome.
        for (bool parsed : {false, true}) {
            auto v = parsed ? skip_rule(c.req, s, parse_sender(c.req.sender)) : skip_rule(c.req, s);
            std::string name = std::string(c.name) + (parsed ? " (parsed)" : "");
            if (c.reason == nullptr) {
                EXPECT_FALSE(v) << name << " skipped as " << v->reason;
            } else {
                ASSERT_TRUE(v) << name;
                EXPECT_EQ(v->cls, VerdictClass::skipped) << name;
                EXPECT_EQ(v->reason.substr(0, std::string_view(c.reason).size()), c.reason) << name;
            }
        }
    }
}

// Lists accept U-labels and A-labels alike; both match senders written either way.
TEST(SkipRules, IdnListEntriesMatchBothForms) {
    PolicySettings s = default_settings();
    s.own_domains = DomainSet({*list_domain("B\u00fccher.example")});
    s.skip_domains = DomainSet({*list_domain("xn--mnchen-3ya.example")});
    for (const char* sender : {"x@b\u00fccher.example", "x@xn--bcher-kva.example",
                               "x@B\u00dcCHER.example", "x@\uff42\u00fccher.example"}) {
        for (auto v :
             {skip_rule(rcpt(sender), s), skip_rule(rcpt(sender), s, parse_sender(sender))}) {
            ASSERT_TRUE(v) << sender;
            EXPECT_EQ(v->reason, "own-domain") << sender;
        }
    }
    for (const char* sender : {"x@m\u00fcnchen.example", "x@XN--MNCHEN-3YA.example"}) {
        for (auto v :
             {skip_rule(rcpt(sender), s), skip_rule(rcpt(sender), s, parse_sender(sender))}) {
            ASSERT_TRUE(v) << sender;
            EXPECT_EQ(v->reason, "skip-domain") << sender;
        }
    }
    EXPECT_FALSE(skip_rule(rcpt("x@bucher.example"), s));
}

TEST(Decider, WithoutEngineSaysSoAndDoesNotPretend) {
    Decider d(default_settings(), nullptr);
    auto dec = d.decide(rcpt("alice@example.org"), [](Decision) { FAIL(); });
    ASSERT_TRUE(dec);
    EXPECT_EQ(dec->verdict.cls, VerdictClass::skipped);
    EXPECT_EQ(dec->verdict.reason, "no-engine");
    EXPECT_EQ(dec->action, "DUNNO");
    EXPECT_EQ(dec->source, DecisionSource::skip);
}

// A verifier that answers from a table, at once or later.
class TableVerifier : public SenderVerifier {
  public:
    std::optional<Immediate> verify(const PolicyRequest& req, Done done) override {
        ++calls;
        if (later) {
            pending.push_back(std::move(done));
            return std::nullopt;
        }
        return Immediate{
            {req.sender.starts_with("bad") ? VerdictClass::invalid : VerdictClass::valid, "table"},
            DecisionSource::probe};
    }
    int calls = 0;
    bool later = false;
    std::vector<Done> pending;
};

TEST(Decider, MapsEveryClassToItsConfiguredAction) {
    PolicySettings s = default_settings();
    for (auto c : kAllVerdictClasses) {
        s.actions[static_cast<size_t>(c)] = "WARN " + std::string(to_string(c));
    }
    TableVerifier v;
    Decider d(s, &v);
    EXPECT_EQ(d.decide(rcpt("bad@example.org"), {})->action, "WARN invalid");
    EXPECT_EQ(d.decide(rcpt("good@example.org"), {})->action, "WARN valid");
    EXPECT_EQ(d.decide(rcpt(""), {})->action, "WARN skipped");
}

TEST(Decider, DefaultActionsWithCodesCarryText) {
    PolicySettings s = default_settings();
    for (auto c : kAllVerdictClasses) {
        const auto& a = s.actions[static_cast<size_t>(c)];
        if (a != "DUNNO") {
            EXPECT_NE(a.find(' '), std::string::npos) << to_string(c);
        }
    }
    EXPECT_TRUE(s.actions[static_cast<size_t>(VerdictClass::invalid)].starts_with("REJECT 5.1.7"));
    EXPECT_TRUE(
        s.actions[static_cast<size_t>(VerdictClass::no_mail_domain)].starts_with("REJECT 5.1.8"));
    EXPECT_TRUE(s.actions[static_cast<size_t>(VerdictClass::in_progress)].starts_with(
        "DEFER_IF_PERMIT 4.1.7"));
}

TEST(Decider, DryRunAlwaysAnswersDunnoButKeepsTheVerdict) {
    PolicySettings s = default_settings();
    s.dry_run = true;
    TableVerifier v;
    Decider d(s, &v);
    auto dec = d.decide(rcpt("bad@example.org"), {});
    EXPECT_EQ(dec->verdict.cls, VerdictClass::invalid);
    EXPECT_EQ(dec->action, "DUNNO");
}

TEST(Decider, OneVerdictPerMessage) {
    TableVerifier v;
    Decider d(default_settings(), &v);
    auto r = rcpt("bad@example.org");
    r.instance = "abc.123.1";
    // Postfix asks once per recipient; only the recipient (not kept in PolicyRequest) differs.
    for (int i = 0; i < 5; ++i) {
        auto dec = d.decide(r, {});
        ASSERT_TRUE(dec);
        EXPECT_EQ(dec->verdict.cls, VerdictClass::invalid);
        EXPECT_EQ(dec->repeat, i > 0);
    }
    EXPECT_EQ(v.calls, 1);
    // Another message, or a new MAIL FROM in the same instance, is decided afresh.
    r.instance = "abc.123.2";
    d.decide(r, {});
    r.sender = "good@example.org";
    EXPECT_EQ(d.decide(r, {})->verdict.cls, VerdictClass::valid);
    EXPECT_EQ(v.calls, 3);
    // A DATA-state request of the same message is skipped by state, not repeated.
    r.protocol_state = "DATA";
    EXPECT_EQ(d.decide(r, {})->verdict.reason, "protocol-state");
}

// The memo holds one sender per instance: a new MAIL FROM under it is decided afresh and is
// what later requests of the instance repeat; the sender before it is no longer remembered.
TEST(Decider, ANewSenderUnderAnInstanceReplacesItsMemo) {
    TableVerifier v;
    Decider d(default_settings(), &v);
    auto first = rcpt("bad@example.org");
    first.instance = "abc.124.1";
    auto second = first;
    second.sender = "good@example.org";
    EXPECT_FALSE(d.decide(first, {})->repeat);
    EXPECT_TRUE(d.decide(first, {})->repeat);
    auto dec = d.decide(second, {});
    EXPECT_FALSE(dec->repeat);
    EXPECT_EQ(dec->verdict.cls, VerdictClass::valid);
    dec = d.decide(second, {});
    EXPECT_TRUE(dec->repeat);
    EXPECT_EQ(dec->verdict.cls, VerdictClass::valid);
    dec = d.decide(first, {});
    EXPECT_FALSE(dec->repeat);
    EXPECT_EQ(dec->verdict.cls, VerdictClass::invalid);
    EXPECT_EQ(v.calls, 3);
}

TEST(Decider, AsyncVerdictIsDeliveredLaterAndMemoised) {
    TableVerifier v;
    v.later = true;
    Decider d(default_settings(), &v);
    auto r = rcpt("alice@example.org");
    r.instance = "i1";
    std::optional<Decision> got;
    EXPECT_FALSE(d.decide(r, [&](Decision dec) { got = dec; }));
    EXPECT_FALSE(got);  // never synchronous
    ASSERT_EQ(v.pending.size(), 1u);
    v.pending[0]({VerdictClass::valid, "rcpt-ok"}, DecisionSource::probe);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->verdict.cls, VerdictClass::valid);
    EXPECT_EQ(got->source, DecisionSource::probe);
    auto again = d.decide(r, {});
    ASSERT_TRUE(again);
    EXPECT_TRUE(again->repeat);
}

TEST(Decider, InProgressIsNotMemoised) {
    TableVerifier v;
    v.later = true;
    Decider d(default_settings(), &v);
    auto r = rcpt("alice@example.org");
    r.instance = "i2";
    d.decide(r, [](Decision) {});
    v.pending[0]({VerdictClass::in_progress, "probe-running"}, DecisionSource::probe);
    EXPECT_FALSE(d.decide(r, [](Decision) {}));
    EXPECT_EQ(v.calls, 2);
}

}  // namespace
}  // namespace calloutd
