// EHLO keywords: real replies from Postfix, Exim, Microsoft 365 and Gmail, and odd ones.
#include "callout/smtp_extensions.hpp"

#include <gtest/gtest.h>

#include "callout/smtp_reply.hpp"

namespace calloutd {
namespace {

// Parses wire text ("250-a\r\n250 b\r\n") the way the probe does.
SmtpReply reply(const std::string& wire) {
    SmtpReplyParser p;
    p.feed(wire);
    auto r = p.next();
    EXPECT_TRUE(r) << wire << ": " << p.error();
    return r ? *r : SmtpReply{};
}

TEST(SmtpExtensions, Postfix) {
    auto e = parse_ehlo_reply(
        reply("250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n"
              "250-ETRN\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
              "250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"));
    EXPECT_TRUE(e.esmtp);
    EXPECT_TRUE(e.starttls);
    EXPECT_TRUE(e.smtputf8);
    EXPECT_TRUE(e.pipelining);
    EXPECT_TRUE(e.eightbitmime);
    EXPECT_TRUE(e.enhanced_status_codes);
    ASSERT_TRUE(e.size);
    EXPECT_EQ(*e.size, 10240000u);
}

TEST(SmtpExtensions, EximWithoutTlsAndLowerCase) {
    auto e = parse_ehlo_reply(reply(
        "250-mail.example.net Hello probe [192.0.2.7]\r\n250-size 52428800\r\n250-8bitmime\r\n"
        "250-pipelining\r\n250 help\r\n"));
    EXPECT_TRUE(e.esmtp);
    EXPECT_FALSE(e.starttls);
    EXPECT_FALSE(e.smtputf8);
    EXPECT_TRUE(e.pipelining);
    EXPECT_TRUE(e.eightbitmime);
    EXPECT_EQ(e.size, 52428800u);
}

TEST(SmtpExtensions, GreetingLineIsNotAKeyword) {
    // The first line is the server's name and greeting, even when it looks like a keyword.
    auto e = parse_ehlo_reply(reply("250-STARTTLS\r\n250 SMTPUTF8\r\n"));
    EXPECT_FALSE(e.starttls);
    EXPECT_TRUE(e.smtputf8);
    auto single = parse_ehlo_reply(reply("250 mx.example.org STARTTLS SMTPUTF8\r\n"));
    EXPECT_TRUE(single.esmtp);
    EXPECT_FALSE(single.starttls);
    EXPECT_FALSE(single.smtputf8);
}

TEST(SmtpExtensions, KeywordsMustMatchWholly) {
    auto e = parse_ehlo_reply(
        reply("250-mx\r\n250-STARTTLSX\r\n250-X-SMTPUTF8\r\n250-SIZE\r\n250  starttls  \r\n"));
    EXPECT_TRUE(e.starttls) << "surrounding spaces are tolerated";
    EXPECT_FALSE(e.smtputf8);
    EXPECT_EQ(e.size, 0u) << "SIZE without a number: no limit named";
    auto garbled = parse_ehlo_reply(reply("250-mx\r\n250 SIZE 12x\r\n"));
    EXPECT_EQ(garbled.size, 0u);
}

TEST(SmtpExtensions, OnlyA2xxOffersAnything) {
    for (const char* wire : {"502 5.5.2 Error: command not recognized\r\n",
                             "421-mx\r\n421 STARTTLS\r\n", "550-mx\r\n550 SMTPUTF8\r\n"}) {
        auto e = parse_ehlo_reply(reply(wire));
        EXPECT_FALSE(e.esmtp) << wire;
        EXPECT_FALSE(e.starttls) << wire;
        EXPECT_FALSE(e.smtputf8) << wire;
    }
    EXPECT_FALSE(SmtpExtensions{}.esmtp) << "after HELO: nothing";
}

}  // namespace
}  // namespace calloutd
