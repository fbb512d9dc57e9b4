// Sender address syntax: RFC 5321 forms, IDN domains, limits and SMTP injection attempts.
#include "callout/address.hpp"

#include <gtest/gtest.h>

#include "callout/smtp_probe.hpp"

#include <random>
#include <set>
#include <string>

namespace calloutd {
namespace {

struct Case {
    std::string input;
    std::string expected;  // normalised address, or the refusal text (prefix match)
    bool ok;
};

TEST(Address, Table) {
    const std::string l64(64, 'a');
    const std::string l65(65, 'a');
    const std::string l300(300, 'a');
    const std::string label63(63, 'b');
    const std::string label64(64, 'b');
    // 64 + 1 + 189 = 254 octets, and a 255-octet address.
    const std::string d189 = label63 + "." + label63 + "." + std::string(53, 'c') + ".example";
    const std::string d190 = label63 + "." + label63 + "." + std::string(54, 'c') + ".example";
    const Case cases[] = {
        // accepted
        {"user@example.org", "user@example.org", true},
        {"user@EXAMPLE.org", "user@example.org", true},
        {"User.Name+tag@Example.ORG", "User.Name+tag@example.org", true},
        {"o'brien@example.org", "o'brien@example.org", true},
        {"!#$%&'*+-/=?^_`{|}~@example.org", "!#$%&'*+-/=?^_`{|}~@example.org", true},
        {"\"john smith\"@example.org", "\"john smith\"@example.org", true},
        {"\"a\\\"b\\\\c\"@example.org", "\"a\\\"b\\\\c\"@example.org", true},
        {"\"a@b\"@example.org", "\"a@b\"@example.org", true},
        {"\"a>b\"@example.org", "\"a>b\"@example.org", true},  // legal qtextSMTP, no line break
        {"user@bücher.example", "user@xn--bcher-kva.example", true},
        {"user@BÜCHER.example", "user@xn--bcher-kva.example", true},
        {"user@xn--bcher-kva.example", "user@xn--bcher-kva.example", true},
        {"user@faß.de", "user@xn--fa-hia.de", true},  // non-transitional: ß is kept
        // UTS-46 mapping: how a resolver would read these spellings.
        {"user@\uff47\uff4d\uff41\uff49\uff4c.com", "user@gmail.com", true},  // full-width
        {"user@gm\u00adail.com", "user@gmail.com", true},                     // soft hyphen
        {"user@gmail\u3002com", "user@gmail.com", true},                      // ideographic stop
        {"user@\uff27\uff2d\uff21\uff29\uff2c\uff0e\uff23\uff2f\uff2d", "user@gmail.com",
         true},                                          // full-width capitals and full stop
        {"jörg@example.org", "jörg@example.org", true},  // RFC 6531 UTF-8 local part
        {"\"jörg m\"@example.org", "\"jörg m\"@example.org", true},
        {"user@localhost", "user@localhost", true},  // syntax only; the target guard refuses 127/8
        {"user@ab--cd.example", "user@ab--cd.example", true},
        {"user@123.example", "user@123.example", true},
        {l64 + "@example.org", l64 + "@example.org", true},
        {l64 + "@" + d189, l64 + "@" + d189, true},
        {"user@" + label63 + ".example", "user@" + label63 + ".example", true},
        // injection attempts
        {"a\r\nRCPT TO:<x>@d.example", "bad-address: CR or LF", false},
        {"a@d.example\r\nDATA", "bad-address: CR or LF", false},
        {"a@d.example\nDATA", "bad-address: CR or LF", false},
        {std::string("a\0b@example.org", 15), "bad-address: NUL", false},
        {std::string("ab@example.org\0", 15), "bad-address: NUL", false},
        {"\"a\r\n\"@example.org", "bad-address: CR or LF", false},
        {"a\tb@example.org", "bad-address: control character", false},
        {"a\x7f@example.org", "bad-address: control character", false},
        {"a>@example.org", "bad-address: angle bracket", false},
        {"<a@example.org>", "bad-address: angle bracket", false},
        {"a@example.org> SIZE=1", "bad-address: character not allowed in domain", false},
        {"a@example.org>", "bad-address: character not allowed in domain", false},
        {"a b@example.org", "bad-address: space outside quotes", false},
        {"a@exa mple.org", "bad-address: character not allowed in domain", false},
        {"a\xc2\x85@example.org", "bad-address: invalid UTF-8", false},  // U+0085 NEL
        {"\"a\\\x01\"@example.org", "bad-address: control character", false},
        // lengths
        {l65 + "@example.org", "bad-address: local part longer than 64", false},
        {l300 + "@example.org", "bad-address: local part longer than 64", false},
        {l64 + "@" + d190, "bad-address: longer than 254", false},
        {"user@" + label64 + ".example", "bad-address: domain label longer than 63", false},
        {"a@" + label63 + "." + label63 + "." + label63 + "." + label63,
         "bad-address: domain longer than 253", false},
        {std::string(2000, 'a') + "@example.org", "bad-address: longer than 254", false},
        // structure
        {"", "bad-address: empty", false},
        {"@example.org", "bad-address: empty local part", false},
        {"\"\"@example.org", "bad-address: empty local part", false},
        {"user", "bad-address: missing @", false},
        {"user@", "bad-address: empty domain", false},
        {"a@b@example.org", "bad-address: more than one @", false},
        {"a..b@example.org", "bad-address: double dot", false},
        {".a@example.org", "bad-address: leading dot", false},
        {"a.@example.org", "bad-address: trailing dot in local part", false},
        {"\"abc@example.org", "bad-address: unbalanced quotes", false},
        {"abc\"@example.org", "bad-address: unbalanced quotes", false},
        {"\"a\"b@example.org", "bad-address: text after quoted", false},
        {"a\"b\"@example.org", "bad-address: unbalanced quotes", false},
        {"\"abc\\\"@example.org", "bad-address: unbalanced quotes", false},
        {"a\xff@example.org", "bad-address: invalid UTF-8", false},
        {"a\xc0\xaf@example.org", "bad-address: invalid UTF-8", false},      // overlong '/'
        {"a\xed\xa0\x80@example.org", "bad-address: invalid UTF-8", false},  // surrogate
        // domains
        {"user@[192.0.2.1]", "address-literal", false},
        {"user@[IPv6:2001:db8::1]", "address-literal", false},
        {"user@[192.0.2.1", "bad-address: unbalanced bracket", false},
        {"user@192.0.2.1", "bad-address: numeric top-level label", false},
        {"user@example.org.", "bad-address: trailing dot in domain", false},
        {"user@.example.org", "bad-address: empty label", false},
        {"user@example..org", "bad-address: empty label", false},
        {"user@my_host.example", "bad-address: character not allowed in domain", false},
        {"user@-a.example", "bad-address: hyphen", false},
        {"user@a-.example", "bad-address: hyphen", false},
        {"user@xn--zz.example", "bad-domain: invalid IDN domain", false},
        {"user@\xe2\x98\x83.example", "bad-domain: invalid IDN domain", false},  // ☃ disallowed
        {"user@a\xe2\x80\x8d"
         "b.example",
         "bad-domain: invalid IDN domain", false},  // ZWJ
        {"user@b\xfc"
         "cher.example",
         "bad-address: invalid UTF-8 in domain", false},  // Latin-1
    };
    for (const auto& c : cases) {
        AddressParse p = parse_sender(c.input);
        if (c.ok) {
            ASSERT_TRUE(p) << c.input << " refused: " << p.refusal;
            EXPECT_EQ(p.address->address(), c.expected) << c.input;
            EXPECT_TRUE(p.refusal.empty());
        } else {
            EXPECT_FALSE(p) << c.input << " accepted as " << p.address->address();
            EXPECT_EQ(p.refusal.rfind(c.expected, 0), 0u)
                << c.input << ": refusal '" << p.refusal << "' does not start with '" << c.expected
                << "'";
        }
    }
}

// The skip rules, the lists and the probe share one normalisation, so a spelling that the probe
// would send to gmail.com is the domain gmail.com for every rule too.
TEST(Address, ParseDomainIsTheProbesNormalisation) {
    for (const char* spelling : {"gmail.com", "GMAIL.com", "\uff47\uff4d\uff41\uff49\uff4c.com",
                                 "gm\u00adail.com", "gmail\u3002com", "gmail\uff61com",
                                 "\uff27\uff2d\uff21\uff29\uff2c\uff0e\uff23\uff2f\uff2d"}) {
        DomainParse d = parse_domain(spelling);
        ASSERT_TRUE(d) << spelling << ": " << d.refusal;
        EXPECT_EQ(d.domain, "gmail.com") << spelling;
        AddressParse a = parse_sender(std::string("x@") + spelling);
        ASSERT_TRUE(a) << spelling;
        EXPECT_EQ(a.address->domain, d.domain) << spelling;
    }
    EXPECT_EQ(parse_domain("B\u00fccher.example").domain, "xn--bcher-kva.example");
    EXPECT_EQ(parse_domain("XN--BCHER-KVA.example").domain, "xn--bcher-kva.example");

    DomainParse snowman = parse_domain("\u2603.example");
    EXPECT_FALSE(snowman);
    EXPECT_TRUE(snowman.idna_failed()) << snowman.refusal;
    EXPECT_TRUE(snowman.domain.empty());
    EXPECT_TRUE(parse_domain("xn--zz.example").idna_failed());
    DomainParse syntax = parse_domain("a..example");
    EXPECT_FALSE(syntax);
    EXPECT_FALSE(syntax.idna_failed()) << syntax.refusal;
    EXPECT_TRUE(syntax.refusal.starts_with("bad-address: ")) << syntax.refusal;
}

TEST(Address, SplitsLocalAndDomain) {
    AddressParse p = parse_sender("\"john smith\"@Bücher.Example");
    ASSERT_TRUE(p);
    EXPECT_EQ(p.address->local, "\"john smith\"");
    EXPECT_EQ(p.address->domain, "xn--bcher-kva.example");
}

// parse_sender() answers plain ASCII senders in one pass and hands everything else to the full
// parse: for any input, both must give the same address or the same refusal. Inputs are built
// from the characters and lengths where the two could disagree (dots, hyphens, "xn--", digits
// in the last label, upper case, '@', non-ASCII, the length limits).
TEST(Address, ShortcutAgreesWithTheFullParse) {
    const std::string pieces[] = {"a",
                                  "Z",
                                  "0",
                                  "9",
                                  ".",
                                  "-",
                                  "@",
                                  "xn--",
                                  "XN--",
                                  "x",
                                  "n",
                                  "+",
                                  "=",
                                  "_",
                                  "\"",
                                  " ",
                                  "\xc3\xa9",
                                  "[",
                                  "]",
                                  "..",
                                  std::string(62, 'q'),
                                  std::string(63, 'r'),
                                  "org",
                                  "123"};
    std::mt19937 rng(15);
    // parse_sender_into() into one object reused across every input (the Decider's way): what
    // an earlier sender left in it (a U-label domain, a refusal) never shows in a later one.
    AddressParse reused;
    auto check = [&reused](const std::string& input) {
        AddressParse fast = parse_sender(input);
        AddressParse full = parse_sender_fully(input);
        ASSERT_EQ(fast.refusal, full.refusal) << input;
        ASSERT_EQ(bool(fast), bool(full)) << input;
        parse_sender_into(input, reused);
        ASSERT_EQ(reused.refusal, fast.refusal) << input;
        ASSERT_EQ(bool(reused), bool(fast)) << input;
        if (!fast) return;
        EXPECT_EQ(reused.address->local, fast.address->local) << input;
        EXPECT_EQ(reused.address->domain, fast.address->domain) << input;
        EXPECT_EQ(reused.address->domain_unicode, fast.address->domain_unicode) << input;
        EXPECT_EQ(fast.address->local, full.address->local) << input;
        EXPECT_EQ(fast.address->domain, full.address->domain) << input;
        EXPECT_EQ(fast.address->domain_unicode, full.address->domain_unicode) << input;
        std::string_view domain_part = std::string_view(input).substr(input.rfind('@') + 1);
        DomainParse fast_domain = parse_domain(domain_part);
        DomainParse full_domain = parse_domain_fully(domain_part);
        EXPECT_EQ(fast_domain.refusal, full_domain.refusal) << domain_part;
        EXPECT_EQ(fast_domain.domain, full_domain.domain) << domain_part;
    };
    for (int i = 0; i < 200000; ++i) {
        std::string local, domain;
        for (size_t k = rng() % 4; k > 0; --k) local += pieces[rng() % std::size(pieces)];
        if (rng() % 8 != 0) local += "user";
        for (size_t k = rng() % 6; k > 0; --k) domain += pieces[rng() % std::size(pieces)];
        if (rng() % 3 != 0) domain += rng() % 2 ? ".example" : ".Example.ORG";
        check(local + "@" + domain);
    }
    // The length limits, each side of them.
    for (size_t local_len : {1, 63, 64, 65}) {
        for (size_t domain_len : {4, 188, 189, 190, 253, 254}) {
            std::string domain;
            while (domain.size() + 8 < domain_len)
                domain +=
                    std::string(std::min<size_t>(63, domain_len - domain.size() - 8), 'd') + ".";
            domain += std::string(domain_len - domain.size() - 3, 'e') + ".io";
            if (domain.find("..") != std::string::npos || domain.size() != domain_len) continue;
            check(std::string(local_len, 'l') + "@" + domain);
        }
    }
}

// Whatever is accepted can be written inside RCPT TO:<...> without ending the line.
TEST(Address, AcceptedAddressesAreWireSafe) {
    for (int c = 0; c < 256; ++c) {
        for (const std::string& tmpl : {std::string("a") + char(c) + "b@example.org",
                                        std::string("\"a") + char(c) + "b\"@example.org",
                                        std::string("a@ex") + char(c) + "ample.org"}) {
            AddressParse p = parse_sender(tmpl);
            if (!p) continue;
            for (char ch : p.address->address()) {
                auto u = static_cast<unsigned char>(ch);
                EXPECT_TRUE(u >= 0x20 && u != 0x7f) << "byte " << c << " in " << tmpl;
            }
        }
    }
}

// RCPT TO carries A-labels for ASCII local parts (no SMTPUTF8 needed) and the written form for
// UTF-8 ones; the cache key is always the A-label form.
TEST(Address, WireFormAndSmtputf8) {
    struct WireCase {
        std::string input;
        std::string address;  // cache key
        std::string wire;     // between the brackets of RCPT TO
        bool smtputf8;
    };
    const WireCase cases[] = {
        {"alice@example.org", "alice@example.org", "alice@example.org", false},
        {"alice@Bücher.example", "alice@xn--bcher-kva.example", "alice@xn--bcher-kva.example",
         false},
        {"jörg@example.org", "jörg@example.org", "jörg@example.org", true},
        {"jörg@Bücher.example", "jörg@xn--bcher-kva.example", "jörg@bücher.example", true},
        {"jörg@xn--bcher-kva.example", "jörg@xn--bcher-kva.example", "jörg@xn--bcher-kva.example",
         true},
        {"\"jörg m\"@example.org", "\"jörg m\"@example.org", "\"jörg m\"@example.org", true},
        {"用户@例子.广告", "用户@xn--fsqu00a.xn--4rr70v", "用户@例子.广告", true},
    };
    for (const auto& c : cases) {
        AddressParse p = parse_sender(c.input);
        ASSERT_TRUE(p) << c.input << ": " << p.refusal;
        EXPECT_EQ(p.address->address(), c.address) << c.input;
        EXPECT_EQ(p.address->wire_address(), c.wire) << c.input;
        EXPECT_EQ(p.address->needs_smtputf8(), c.smtputf8) << c.input;
        const std::string rcpt = "RCPT TO:<" + p.address->wire_address() + ">";
        EXPECT_TRUE(is_safe_command_line(rcpt, c.smtputf8)) << c.input;
        EXPECT_EQ(is_safe_command_line(rcpt, false), !c.smtputf8)
            << c.input << ": UTF-8 goes out only under SMTPUTF8";
    }
}

TEST(Address, SafeCommandLines) {
    EXPECT_TRUE(is_safe_command_line("RCPT TO:<a@example.org>"));
    EXPECT_FALSE(is_safe_command_line("RCPT TO:<a@example.org>\r\nDATA"));
    EXPECT_FALSE(is_safe_command_line(std::string("RCPT TO:<a\0@example.org>", 22)));
    EXPECT_FALSE(is_safe_command_line("RCPT TO:<a\x7f@example.org>", true));
    EXPECT_FALSE(is_safe_command_line("RCPT TO:<j\xc3\xb6rg@example.org>"));
    EXPECT_TRUE(is_safe_command_line("RCPT TO:<j\xc3\xb6rg@example.org>", true));
    // Under SMTPUTF8 still only well-formed UTF-8, and no C1 control (U+0085 NEL).
    for (const char* bad :
         {"a\xff", "a\xc3", "a\xc0\xaf", "a\xed\xa0\x80", "a\xc2\x85", "a\xf4\x90\x80\x80"}) {
        EXPECT_FALSE(is_safe_command_line(bad, true)) << bad;
    }
    EXPECT_TRUE(is_safe_command_line("\xf0\x9f\x93\xa7@example.org", true));  // U+1F4E7
}

TEST(Address, RandomLocalPart) {
    std::mt19937_64 a(42);
    std::mt19937_64 b(42);
    std::string first = random_local_part(a);
    EXPECT_EQ(first, random_local_part(b));  // deterministic with an injected engine
    EXPECT_EQ(first.size(), kRandomLocalPrefix.size() + kRandomLocalLength);
    EXPECT_EQ(first.rfind("calloutd-check-", 0), 0u);
    std::set<std::string> seen{first};
    for (int i = 0; i < 100; ++i) {
        std::string s = random_local_part(a);
        EXPECT_EQ(s.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-"), std::string::npos);
        EXPECT_TRUE(parse_sender(s + "@example.org"));
        seen.insert(s);
    }
    EXPECT_EQ(seen.size(), 101u);
}

}  // namespace
}  // namespace calloutd
