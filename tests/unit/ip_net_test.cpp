// IP address and CIDR parsing and membership.
#include "util/ip_net.hpp"

#include <gtest/gtest.h>

namespace calloutd {

TEST(IpNet, ParsesAndFormatsAddresses) {
    EXPECT_EQ(IpAddress::parse("192.0.2.1")->to_string(), "192.0.2.1");
    EXPECT_EQ(IpAddress::parse("2001:DB8::1")->to_string(), "2001:db8::1");
    EXPECT_FALSE(IpAddress::parse(""));
    EXPECT_FALSE(IpAddress::parse("192.0.2"));
    EXPECT_FALSE(IpAddress::parse("192.0.2.256"));
    EXPECT_FALSE(IpAddress::parse("[::1]"));
    EXPECT_FALSE(IpAddress::parse("example.org"));
    EXPECT_EQ(IpAddress::parse("::ffff:10.1.2.3")->unmapped(), IpAddress::v4(10, 1, 2, 3));
}

// Found by fuzzing: inet_pton stops at a NUL, so "10.0.0.0<NUL>junk" passed for 10.0.0.0.
TEST(IpNet, RefusesNulAndControlBytes) {
    using namespace std::string_literals;
    for (const std::string& bad : {"10.0.0.0\0junk"s, "10.0.0.1\0"s, "::1\0"s, "\0"s, "10.0.0.1\n"s,
                                   " 10.0.0.1"s, "10.0.0.1\t"s, "fe80::1%eth0"s}) {
        EXPECT_FALSE(IpAddress::parse(bad)) << bad;
    }
    EXPECT_FALSE(Cidr::parse("10.0.0.0\0junk/8"s));
    EXPECT_FALSE(Cidr::parse("10.0.0.0/8\0"s));
}

struct CidrCase {
    const char* net;
    const char* ip;
    bool member;
};

TEST(IpNet, CidrMembership) {
    const CidrCase cases[] = {
        {"10.0.0.0/8", "10.255.1.2", true},
        {"10.0.0.0/8", "11.0.0.1", false},
        {"192.168.0.0/16", "192.168.7.7", true},
        {"172.16.0.0/12", "172.31.255.255", true},
        {"172.16.0.0/12", "172.32.0.0", false},
        {"0.0.0.0/0", "8.8.8.8", true},
        {"127.0.0.1", "127.0.0.1", true},
        {"127.0.0.1", "127.0.0.2", false},
        {"fc00::/7", "fd12::1", true},
        {"fc00::/7", "fe80::1", false},
        {"::1/128", "::1", true},
        {"10.0.0.0/8", "::ffff:10.0.0.1", true},
        {"10.0.0.0/8", "2001:db8::1", false},
        {"2001:db8::/32", "10.0.0.1", false},
        {"100.64.0.0/10", "100.127.1.1", true},
        {"100.64.0.0/10", "100.128.0.0", false},
    };
    for (const auto& c : cases) {
        auto net = Cidr::parse(c.net);
        ASSERT_TRUE(net) << c.net;
        EXPECT_EQ(net->contains(*IpAddress::parse(c.ip)), c.member) << c.net << " " << c.ip;
    }
}

TEST(IpNet, CidrRejectsBadInput) {
    for (const char* bad : {"10.0.0.0/33", "10.0.0.0/", "10.0.0.0/x", "10.1.2.3/8", "::1/129",
                            "fe80::1/10", "host/8", "", "/8", "10.0.0.0/-1"}) {
        std::string err;
        EXPECT_FALSE(Cidr::parse(bad, &err)) << bad;
        EXPECT_FALSE(err.empty()) << bad;
    }
    EXPECT_EQ(Cidr::parse("2001:db8::/32")->to_string(), "2001:db8::/32");
}

TEST(IpNet, MaskedKeepsTheNetworkBits) {
    EXPECT_EQ(IpAddress::parse("2001:db8:1:2:aaaa:bbbb:cccc:dddd")->masked(64).to_string(),
              "2001:db8:1:2::");
    EXPECT_EQ(IpAddress::parse("2001:db8:1:2ff::1")->masked(56).to_string(), "2001:db8:1:200::");
    EXPECT_EQ(IpAddress::parse("2001:db8::1")->masked(128).to_string(), "2001:db8::1");
    EXPECT_EQ(IpAddress::parse("192.0.2.77")->masked(24).to_string(), "192.0.2.0");
    EXPECT_EQ(IpAddress::parse("192.0.2.77")->masked(0).to_string(), "0.0.0.0");
}

}  // namespace calloutd
