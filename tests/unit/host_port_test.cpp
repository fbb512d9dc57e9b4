// parse_host_port(), parse_port(), format_host_port(), and panic().
#include "util/host_port.hpp"

#include <gtest/gtest.h>

#include "util/panic.hpp"

namespace calloutd {

struct GoodHostPort {
    const char* text;
    HostPortRules rules;
    const char* host;
    bool bracketed;
    std::optional<std::uint16_t> port;
};

TEST(HostPort, SplitsEveryWrittenForm) {
    const GoodHostPort cases[] = {
        {"127.0.0.1", {}, "127.0.0.1", false, std::nullopt},
        {"127.0.0.1:53", {}, "127.0.0.1", false, 53},
        {"redis.example.net:7000", {}, "redis.example.net", false, 7000},
        {"[::1]", {}, "::1", true, std::nullopt},
        {"[::1]:6379", {}, "::1", true, 6379},
        {"2001:db8::1", {}, "2001:db8::1", false, std::nullopt},  // a bare IPv6 literal
        {"::1:25", {}, "::1:25", false, std::nullopt},            // likewise: no port split off
        {":6379", {}, "", false, 6379},
        {"", {}, "", false, std::nullopt},
        {"h:65535", {}, "h", false, 65535},
        {"h:00025", {}, "h", false, 25},
        {"127.0.0.1:0", {.port_required = true, .min_port = 0}, "127.0.0.1", false, 0},
        {"[::1]:1", {.port_required = true}, "::1", true, 1},
    };
    for (const auto& c : cases) {
        std::string why;
        auto hp = parse_host_port(c.text, c.rules, &why);
        ASSERT_TRUE(hp) << c.text << ": " << why;
        EXPECT_EQ(hp->host, c.host) << c.text;
        EXPECT_EQ(hp->bracketed, c.bracketed) << c.text;
        EXPECT_EQ(hp->port, c.port) << c.text;
    }
}

struct BadHostPort {
    const char* text;
    HostPortRules rules;
    const char* why;
};

TEST(HostPort, RefusesWithAReason) {
    const BadHostPort cases[] = {
        {"[::1", {}, "'[' without ']' around an IPv6 address"},
        {"[::1]6379", {}, "expected ':PORT' after ']'"},
        {"[::1]:", {}, "port must be 1-65535, got ''"},
        {"h:", {}, "port must be 1-65535, got ''"},
        {"h:0", {}, "port must be 1-65535, got '0'"},
        {"h:65536", {}, "port must be 1-65535, got '65536'"},
        {"h:100000", {}, "port must be 1-65535, got '100000'"},
        {"h:-1", {.min_port = 0}, "port must be 0-65535, got '-1'"},
        {"h: 25", {}, "port must be 1-65535, got ' 25'"},
        {"h:port", {}, "port must be 1-65535, got 'port'"},
        {"h", {.port_required = true}, "no port"},
        {"[::1]", {.port_required = true}, "no port"},
        {"::1:25", {.port_required = true}, "no port"},
    };
    for (const auto& c : cases) {
        std::string why;
        EXPECT_FALSE(parse_host_port(c.text, c.rules, &why)) << c.text;
        EXPECT_EQ(why, c.why) << c.text;
        EXPECT_FALSE(parse_host_port(c.text, c.rules)) << c.text << " (no reason asked)";
    }
}

TEST(HostPort, PortsAndFormatting) {
    EXPECT_EQ(parse_port("1"), 1);
    EXPECT_EQ(parse_port("65535"), 65535);
    EXPECT_FALSE(parse_port("0"));
    EXPECT_EQ(parse_port("0", 0), 0);
    EXPECT_FALSE(parse_port(""));
    EXPECT_FALSE(parse_port("+1"));
    EXPECT_FALSE(parse_port("1x"));
    EXPECT_EQ(format_host_port("127.0.0.1", 6379), "127.0.0.1:6379");
    EXPECT_EQ(format_host_port("redis.example.net", 1), "redis.example.net:1");
    EXPECT_EQ(format_host_port("2001:db8::1", 26379), "[2001:db8::1]:26379");
}

TEST(PanicDeathTest, NamesTheFunctionAndAborts) {
    EXPECT_DEATH(panic("Owner::method", "started twice"),
                 "calloutd: impossible state in Owner::method: started twice");
}

}  // namespace calloutd
