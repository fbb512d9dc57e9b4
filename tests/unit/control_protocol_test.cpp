// The control socket's line protocol: request parsing, reply encoding, both readers.
#include <gtest/gtest.h>

#include "daemon/control_protocol.hpp"

namespace calloutd {
namespace {

TEST(ControlProtocol, RequestTable) {
    struct Case {
        std::string line;
        std::optional<ControlRequest> parsed;
    };
    const Case cases[] = {
        {"status", ControlRequest{ControlVerb::status, ""}},
        {"status\r", ControlRequest{ControlVerb::status, ""}},
        {"cache-get alice@example.org",
         ControlRequest{ControlVerb::cache_get, "alice@example.org"}},
        {"cache-del example.org", ControlRequest{ControlVerb::cache_del, "example.org"}},
        {"cache-flush example.org", ControlRequest{ControlVerb::cache_flush, "example.org"}},
        {"status now", std::nullopt},
        {"cache-get", std::nullopt},
        {"cache-get ", std::nullopt},
        {"cache-get a b", std::nullopt},
        {"STATUS", std::nullopt},
        {"cache-get a\x01@b", std::nullopt},
        {"flushall", std::nullopt},
        {"", std::nullopt},
    };
    for (const auto& c : cases) {
        std::string error;
        auto r = parse_control_request(c.line, error);
        EXPECT_EQ(r, c.parsed) << c.line;
        if (!c.parsed) {
            EXPECT_FALSE(error.empty()) << c.line;
        }
    }
}

TEST(ControlProtocol, RequestsRoundTrip) {
    for (auto r : {ControlRequest{ControlVerb::status, ""},
                   ControlRequest{ControlVerb::cache_get, "a@b.example"},
                   ControlRequest{ControlVerb::cache_flush, "b.example"}}) {
        std::string wire = encode_control_request(r);
        ASSERT_TRUE(wire.ends_with("\n"));
        std::string error;
        EXPECT_EQ(parse_control_request(wire.substr(0, wire.size() - 1), error), r) << wire;
    }
}

TEST(ControlProtocol, RepliesCannotForgeLines) {
    ControlReply r{{"one", "two\nok", "tab\there"}, ControlStatus::error, "bad\r\nok"};
    EXPECT_EQ(encode_control_reply(r), "data one\ndata two?ok\ndata tab?here\nerror bad??ok\n");
    EXPECT_EQ(encode_control_reply({{}, ControlStatus::none, ""}), "none\n");
    EXPECT_EQ(encode_control_reply({{"x"}, ControlStatus::ok, ""}), "data x\nok\n");
    std::string long_line(5000, 'x');
    std::string wire = encode_control_reply({{long_line}, ControlStatus::ok, ""});
    EXPECT_LT(wire.find('\n'), kMaxControlLine);
}

TEST(ControlProtocol, ReadersSplitLinesAndReassembleReplies) {
    ControlLineReader lines;
    ControlReplyReader replies;
    std::vector<ControlReply> got;
    std::string wire = encode_control_reply({{"a", "b"}, ControlStatus::ok, ""}) +
                       encode_control_reply({{}, ControlStatus::none, ""}) +
                       encode_control_reply({{"c"}, ControlStatus::error, "why"});
    for (char c : wire) {  // byte by byte
        lines.append(std::string_view(&c, 1));
        std::string line;
        while (lines.next(line) == ControlLineReader::Status::line) {
            if (auto r = replies.line(line)) got.push_back(*r);
        }
    }
    ASSERT_EQ(got.size(), 3u);
    EXPECT_EQ(got[0], (ControlReply{{"a", "b"}, ControlStatus::ok, ""}));
    EXPECT_EQ(got[1], (ControlReply{{}, ControlStatus::none, ""}));
    EXPECT_EQ(got[2], (ControlReply{{"c"}, ControlStatus::error, "why"}));
    auto garbage = replies.line("HTTP/1.1 200 OK");
    ASSERT_TRUE(garbage);
    EXPECT_EQ(garbage->status, ControlStatus::error);
}

TEST(ControlProtocol, LineReaderRefusesOverlongLines) {
    ControlLineReader lines;
    std::string line;
    lines.append(std::string(kMaxControlLine + 1, 'x'));
    EXPECT_EQ(lines.next(line), ControlLineReader::Status::too_long);
    lines.append("\nstatus\n");
    EXPECT_EQ(lines.next(line), ControlLineReader::Status::too_long);  // stays failed
    ControlLineReader ok;
    ok.append(std::string(kMaxControlLine, 'y') + "\n");
    EXPECT_EQ(ok.next(line), ControlLineReader::Status::line);
    EXPECT_EQ(line.size(), kMaxControlLine);
}

}  // namespace
}  // namespace calloutd
