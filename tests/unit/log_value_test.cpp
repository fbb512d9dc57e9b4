// Log values: quoted and escaped so that no sender or SMTP reply can forge a field or a line.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <string_view>

#include "daemon/log.hpp"

namespace calloutd {
namespace {

struct ValueCase {
    std::string value;
    std::string logged;
};

TEST(LogValue, QuotesAndEscapesTable) {
    const ValueCase cases[] = {
        {"alice@example.org", "alice@example.org"},
        {"", "\"\""},
        {"two words", "\"two words\""},
        {"a=b", "\"a=b\""},
        {"say \"hi\"", "\"say \\\"hi\\\"\""},
        {"back\\slash", "\"back\\\\slash\""},
        {"line\r\nforged=1", "\"line\\x0d\\x0aforged=1\""},
        {std::string("nul\0byte", 8), "\"nul\\x00byte\""},
        {"del\x7f", "\"del\\x7f\""},
        {"tab\there", "\"tab\\x09here\""},
        {"j\xc3\xb6rg@b\xc3\xbc"
         "cher.example",
         "j\xc3\xb6rg@b\xc3\xbc"
         "cher.example"},
        {"rcpt-accepted 250 2.1.5 ok; random local part refused 550 5.1.1",
         "\"rcpt-accepted 250 2.1.5 ok; random local part refused 550 5.1.1\""},
    };
    for (const auto& c : cases) {
        std::string out = "x=";
        append_log_value(out, c.value);
        EXPECT_EQ(out, "x=" + c.logged) << c.value;
    }
}

// The rule, byte by byte, as the format describes it.
std::string reference(std::string_view value) {
    bool plain = !value.empty();
    for (unsigned char c : value) {
        if (c <= 0x20 || c == 0x7f || c == '"' || c == '=' || c == '\\') plain = false;
    }
    if (plain) return std::string(value);
    std::string out = "\"";
    for (unsigned char c : value) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20 || c == 0x7f) {
            char hex[5];
            std::snprintf(hex, sizeof hex, "\\x%02x", c);
            out += hex;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out + "\"";
}

// Plain values are copied in pieces of 1-3, 4-7, 8-16 bytes or more: every length, each byte in
// place (a pattern that shows a byte copied to the wrong offset), before and after an escape.
TEST(LogValue, EveryLengthIsCopiedWhole) {
    for (size_t len = 1; len <= 40; ++len) {
        std::string value;
        for (size_t i = 0; i < len; ++i) value += static_cast<char>('A' + (i * 7) % 26);
        std::string out = "x=";
        append_log_value(out, value);
        EXPECT_EQ(out, "x=" + value) << len;
        out = "x=";
        append_log_value(out, value + "\"" + value);
        EXPECT_EQ(out, "x=\"" + value + "\\\"" + value + "\"") << len;
    }
}

TEST(LogValue, EveryByteAtEveryOffsetMatchesTheRule) {
    // Values are classified a block at a time (16 bytes with SSE2, a word of eight elsewhere):
    // every byte value at every position of blocks and tails must come out as the byte-by-byte
    // rule says.
    for (size_t len : {1, 7, 8, 9, 15, 16, 17, 23, 24, 31, 32, 33, 47}) {
        for (size_t pos = 0; pos < len; ++pos) {
            for (int b = 0; b < 256; ++b) {
                std::string value(len, 'k');
                value[pos] = static_cast<char>(b);
                if (pos + 1 < len && b % 7 == 0) value[len - 1] = '"';
                std::string out;
                append_log_value(out, value);
                ASSERT_EQ(out, reference(value))
                    << "len " << len << " pos " << pos << " byte " << b;
            }
        }
    }
}

TEST(LogValue, EveryByteValueStaysOnOneField) {
    // Whatever a value holds, the logged form has no space, newline or unescaped quote
    // outside its quotes, so splitting a line on spaces outside quotes finds one field.
    for (int b = 0; b < 256; ++b) {
        std::string value = "a";
        value += static_cast<char>(b);
        value += "b";
        std::string out;
        append_log_value(out, value);
        for (unsigned char c : out) {
            EXPECT_TRUE(c >= 0x20 && c != 0x7f) << "byte " << b << " -> " << out;
        }
        if (out.front() == '"') {
            // Inside the quotes every '"' is escaped.
            for (size_t i = 1; i + 1 < out.size(); ++i) {
                if (out[i] == '"') {
                    EXPECT_EQ(out[i - 1], '\\') << out;
                }
            }
        } else {
            EXPECT_EQ(out.find_first_of(" \"=\\"), std::string::npos) << out;
        }
    }
}

}  // namespace
}  // namespace calloutd
