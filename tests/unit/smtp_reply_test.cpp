// Table-driven tests of the SMTP reply parser, every case fed at every split point.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "callout/smtp_reply.hpp"

namespace calloutd {
namespace {

struct Expected {
    int code;
    std::string enhanced;
    std::vector<std::string> lines;
};

struct Case {
    const char* name;
    std::string input;
    std::vector<Expected> replies;  // complete replies, in order
    std::string error;              // substring of the error, empty = no error
    bool pending = false;           // bytes left over after the replies (no error cases only)
    ReplyLimits limits = {};
};

std::string s(const char* p, std::size_t n) {
    return std::string(p, n);
}

const std::vector<Case>& cases() {
    static const std::vector<Case> table = {
        {"simple", "250 ok\r\n", {{250, "", {"ok"}}}, ""},
        {"bare LF", "250 ok\n", {{250, "", {"ok"}}}, ""},
        {"code only", "250\r\n", {{250, "", {""}}}, ""},
        {"enhanced",
         "550 5.1.1 <x@y> no such user\r\n",
         {{550, "5.1.1", {"5.1.1 <x@y> no such user"}}},
         ""},
        {"enhanced alone", "250 2.0.0\r\n", {{250, "2.0.0", {"2.0.0"}}}, ""},
        {"enhanced 3-digit parts",
         "452 4.123.456 busy\r\n",
         {{452, "4.123.456", {"4.123.456 busy"}}},
         ""},
        {"enhanced class mismatch", "550 4.1.1 confused\r\n", {{550, "", {"4.1.1 confused"}}}, ""},
        {"enhanced bad class", "550 3.1.1 odd\r\n", {{550, "", {"3.1.1 odd"}}}, ""},
        {"enhanced 4-digit part", "550 5.1234.1 odd\r\n", {{550, "", {"5.1234.1 odd"}}}, ""},
        {"enhanced glued", "550 5.1.1user\r\n", {{550, "", {"5.1.1user"}}}, ""},
        {"enhanced missing detail", "550 5.1. x\r\n", {{550, "", {"5.1. x"}}}, ""},
        {"multi-line",
         "250-mx.example.org hello\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
         {{250, "", {"mx.example.org hello", "PIPELINING", "8BITMIME"}}},
         ""},
        {"multi-line enhanced from first line",
         "550-5.7.1 blocked\r\n550 5.7.1 see url\r\n",
         {{550, "5.7.1", {"5.7.1 blocked", "5.7.1 see url"}}},
         ""},
        {"two replies", "220 hi\r\n250 ok\r\n", {{220, "", {"hi"}}, {250, "", {"ok"}}}, ""},
        {"tab and utf8 allowed", "250 caf\xc3\xa9\tok\r\n", {{250, "", {"caf\xc3\xa9\tok"}}}, ""},
        {"partial line pending", "250 ok\r\n250 mo", {{250, "", {"ok"}}}, "", true},
        {"partial multi-line pending", "250-a\r\n", {}, "", true},
        {"trailing CR pending", "250 ok\r", {}, "", true},
        {"empty", "", {}, ""},
        {"no code", "hello\r\n", {}, "without 3-digit"},
        {"short code", "25 ok\r\n", {}, "without 3-digit"},
        {"empty line", "\r\n", {}, "without 3-digit"},
        {"code out of range", "650 ok\r\n", {}, "without 3-digit"},
        {"1xx code", "150 ok\r\n", {}, "without 3-digit"},
        {"bad separator", "250_ok\r\n", {}, "malformed"},
        {"code mismatch", "250-a\r\n251 b\r\n", {}, "mismatch"},
        {"NUL", s("250 o\0k\r\n", 9), {}, "NUL"},
        {"control char", "250 o\x01k\r\n", {}, "control character 0x01"},
        {"DEL", "250 o\x7fk\r\n", {}, "control character 0x7f"},
        {"bare CR", "250 o\rk\r\n", {}, "bare CR"},
        {"reply then garbage", s("220 hi\r\n\0\0", 10), {{220, "", {"hi"}}}, "NUL"},
        {"line too long",
         "250 " + std::string(60, 'x') + "\r\n",
         {},
         "line too long",
         false,
         ReplyLimits{50, 65536}},
        {"line at limit",
         "250 " + std::string(46, 'x') + "\r\n",
         {{250, "", {std::string(46, 'x')}}},
         "",
         false,
         ReplyLimits{50, 65536}},
        {"reply too large",
         "250-aaaaaaaaaa\r\n250-aaaaaaaaaa\r\n250 aaaaaaaaaa\r\n",
         {},
         "reply too large",
         false,
         ReplyLimits{2048, 40}},
        // Each reply is within the cap; together they are not: no error however they are read.
        {"replies within the cap, their sum over it",
         "250 aaaaaaaaaa\r\n251 bbbbbbbbbb\r\n252 cccccccccc\r\n",
         {{250, "", {"aaaaaaaaaa"}}, {251, "", {"bbbbbbbbbb"}}, {252, "", {"cccccccccc"}}},
         "",
         false,
         ReplyLimits{2048, 20}},
        {"reply at limit",
         "250-aaaaaaaaaa\r\n250 aaaaaaaaaa\r\n",
         {{250, "", {"aaaaaaaaaa", "aaaaaaaaaa"}}},
         "",
         false,
         ReplyLimits{2048, 32}},
    };
    return table;
}

struct Outcome {
    std::vector<SmtpReply> replies;
    std::string error;
    bool pending = false;
};

// Feeds `input` in the given chunks, draining replies after every chunk when `drain_each`.
Outcome run(const Case& c, const std::vector<std::string_view>& chunks, bool drain_each) {
    SmtpReplyParser p(c.limits);
    Outcome out;
    for (auto chunk : chunks) {
        p.feed(chunk);
        if (drain_each)
            while (auto r = p.next()) out.replies.push_back(std::move(*r));
    }
    while (auto r = p.next()) out.replies.push_back(std::move(*r));
    out.error = p.error();
    out.pending = p.has_pending();
    return out;
}

void check(const Case& c, const Outcome& o, const std::string& how) {
    SCOPED_TRACE(std::string(c.name) + " " + how);
    ASSERT_EQ(o.replies.size(), c.replies.size());
    for (std::size_t i = 0; i < c.replies.size(); ++i) {
        EXPECT_EQ(o.replies[i].code, c.replies[i].code);
        EXPECT_EQ(o.replies[i].enhanced, c.replies[i].enhanced);
        EXPECT_EQ(o.replies[i].lines, c.replies[i].lines);
    }
    if (c.error.empty()) {
        EXPECT_EQ(o.error, "");
        EXPECT_EQ(o.pending, c.pending);
    } else {
        EXPECT_NE(o.error.find(c.error), std::string::npos) << o.error;
    }
}

TEST(SmtpReplyParser, TableWhole) {
    for (const auto& c : cases()) check(c, run(c, {c.input}, false), "whole");
}

TEST(SmtpReplyParser, TableEverySplitPoint) {
    for (const auto& c : cases()) {
        std::string_view in = c.input;
        for (std::size_t cut = 0; cut <= in.size(); ++cut) {
            for (bool drain : {false, true}) {
                check(c, run(c, {in.substr(0, cut), in.substr(cut)}, drain),
                      "cut at " + std::to_string(cut) + (drain ? " draining" : ""));
            }
        }
    }
}

TEST(SmtpReplyParser, TableOneByteAtATime) {
    for (const auto& c : cases()) {
        std::vector<std::string_view> bytes;
        std::string_view in = c.input;
        for (std::size_t i = 0; i < in.size(); ++i) bytes.push_back(in.substr(i, 1));
        check(c, run(c, bytes, true), "bytewise");
    }
}

TEST(SmtpReplyParser, MegabyteBannerIsAnErrorNotUnboundedMemory) {
    SmtpReplyParser p;  // default limits: 2048 per line, 64 KiB per reply
    std::string line = "220-" + std::string(70, 'x') + "\r\n";
    std::size_t fed = 0;
    while (fed < 1024 * 1024 && !p.failed()) {
        p.feed(line);
        fed += line.size();
    }
    EXPECT_TRUE(p.failed());
    EXPECT_NE(p.error().find("reply too large"), std::string::npos);
    EXPECT_LE(fed, 65536u + line.size());
    EXPECT_FALSE(p.next());
}

// Found by fuzzing: replies parsed but not yet taken counted against max_reply, so ten short
// replies succeeded when read one by one and failed ("too much unread reply data") when read
// at the end. The limits now depend on the bytes only.
TEST(SmtpReplyParser, LimitsDoNotDependOnWhenRepliesAreTaken) {
    const ReplyLimits tight{2048, 40};
    std::string ten;
    for (int i = 0; i < 10; ++i) ten += "250 aaaaaaaaaa\r\n";  // 16 octets each, 160 in all

    SmtpReplyParser one_by_one(tight);
    int taken = 0;
    for (std::size_t i = 0; i < ten.size(); ++i) {
        one_by_one.feed(std::string_view(ten).substr(i, 1));
        while (one_by_one.next()) ++taken;
    }
    EXPECT_FALSE(one_by_one.failed()) << one_by_one.error();
    EXPECT_EQ(taken, 10);

    SmtpReplyParser at_the_end(tight);
    at_the_end.feed(ten);
    EXPECT_FALSE(at_the_end.failed()) << at_the_end.error();
    int later = 0;
    while (at_the_end.next()) ++later;
    EXPECT_EQ(later, 10);

    // One reply over the cap fails the same way however it is read.
    const std::string big = "250-aaaaaaaaaa\r\n250-aaaaaaaaaa\r\n250 aaaaaaaaaa\r\n";
    for (bool take_early : {false, true}) {
        SmtpReplyParser p(tight);
        p.feed(ten);
        if (take_early) {
            while (p.next()) {
            }
        }
        p.feed(big);
        EXPECT_NE(p.error().find("reply too large"), std::string::npos) << p.error();
    }
}

TEST(SmtpReplyParser, ErrorIsStickyAndResetClearsIt) {
    SmtpReplyParser p;
    p.feed("garbage\r\n");
    ASSERT_TRUE(p.failed());
    p.feed("250 ok\r\n");
    EXPECT_FALSE(p.next());
    p.reset();
    EXPECT_FALSE(p.failed());
    p.feed("250 ok\r\n");
    auto r = p.next();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->code, 250);
    EXPECT_FALSE(p.has_pending());
}

TEST(SmtpReplyParser, PendingDetectsPipeliningViolation) {
    SmtpReplyParser p;
    p.feed("250 ok\r\n250 surprise\r\n");
    ASSERT_TRUE(p.next());
    EXPECT_TRUE(p.has_pending());  // a reply nobody asked for is buffered
    ASSERT_TRUE(p.next());
    EXPECT_FALSE(p.has_pending());
}

TEST(SmtpReplyParser, EnhancedCodeHelper) {
    EXPECT_EQ(parse_enhanced_code(550, "5.1.1 x"), "5.1.1");
    EXPECT_EQ(parse_enhanced_code(250, "2.1.5"), "2.1.5");
    EXPECT_EQ(parse_enhanced_code(451, "4.7.1 greylisted"), "4.7.1");
    EXPECT_EQ(parse_enhanced_code(451, "5.7.1 confused"), "");
    EXPECT_EQ(parse_enhanced_code(550, "5.a.1"), "");
    EXPECT_EQ(parse_enhanced_code(550, "5..1"), "");
    EXPECT_EQ(parse_enhanced_code(550, ""), "");
}

}  // namespace
}  // namespace calloutd
