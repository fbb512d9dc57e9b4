// SSRF guard: special-purpose ranges, mapped and NAT64 addresses, allow-list and own addresses.
#include "callout/target_guard.hpp"

#include <gtest/gtest.h>

#include <string>

namespace calloutd {
namespace {

IpAddress ip(const char* text) {
    auto a = IpAddress::parse(text);
    EXPECT_TRUE(a) << text;
    return a.value_or(IpAddress::v4(0, 0, 0, 0));
}

CidrSet nets(std::initializer_list<const char*> texts) {
    std::vector<Cidr> out;
    for (const char* t : texts) out.push_back(*Cidr::parse(t));
    return CidrSet(std::move(out));
}

struct Case {
    const char* address;
    const char* refusal;  // nullptr = allowed; else the expected reason prefix
};

TEST(TargetGuard, SpecialRanges) {
    const TargetGuard guard(CidrSet{}, {});
    const Case cases[] = {
        // public: allowed
        {"8.8.8.8", nullptr},
        {"1.1.1.1", nullptr},
        {"192.0.1.255", nullptr},
        {"172.32.0.1", nullptr},
        {"100.128.0.1", nullptr},
        {"198.20.0.1", nullptr},
        {"223.255.255.255", nullptr},
        {"2a00:1450:4001:82b::1b", nullptr},
        {"2001:4860:4860::8888", nullptr},  // just outside 2001::/23
        {"2606:4700::1111", nullptr},
        {"::ffff:8.8.8.8", nullptr},
        {"64:ff9b::8.8.8.8", nullptr},  // NAT64 to a public address
        // IPv4 special
        {"0.0.0.0", "this-network 0.0.0.0/8"},
        {"0.1.2.3", "this-network 0.0.0.0/8"},
        {"10.1.2.3", "private 10.0.0.0/8"},
        {"100.64.0.1", "shared-address-space 100.64.0.0/10"},
        {"100.127.255.255", "shared-address-space 100.64.0.0/10"},
        {"127.0.0.1", "loopback 127.0.0.0/8"},
        {"127.255.255.254", "loopback 127.0.0.0/8"},
        {"169.254.169.254", "link-local 169.254.0.0/16"},  // cloud metadata
        {"172.16.0.1", "private 172.16.0.0/12"},
        {"172.31.255.255", "private 172.16.0.0/12"},
        {"192.0.0.8", "ietf-protocol-assignments 192.0.0.0/24"},
        {"192.0.2.1", "documentation 192.0.2.0/24"},
        {"192.88.99.1", "6to4-relay-anycast 192.88.99.0/24"},
        {"192.168.1.1", "private 192.168.0.0/16"},
        {"198.18.0.1", "benchmarking 198.18.0.0/15"},
        {"198.19.255.255", "benchmarking 198.18.0.0/15"},
        {"198.51.100.7", "documentation 198.51.100.0/24"},
        {"203.0.113.9", "documentation 203.0.113.0/24"},
        {"224.0.0.1", "multicast 224.0.0.0/4"},
        {"239.255.255.250", "multicast 224.0.0.0/4"},
        {"240.0.0.1", "reserved 240.0.0.0/4"},
        {"255.255.255.255", "limited-broadcast 255.255.255.255/32"},
        // IPv6 special
        {"::", "unspecified ::/128"},
        {"::1", "loopback ::1/128"},
        {"::127.0.0.1", "ipv4-compatible ::/96"},
        {"::ffff:127.0.0.1", "loopback 127.0.0.0/8 (ipv4-mapped)"},
        {"::ffff:10.0.0.1", "private 10.0.0.0/8 (ipv4-mapped)"},
        {"::ffff:169.254.169.254", "link-local 169.254.0.0/16 (ipv4-mapped)"},
        {"64:ff9b::127.0.0.1", "nat64 64:ff9b::/96 embeds loopback 127.0.0.0/8"},
        {"64:ff9b::a00:1", "nat64 64:ff9b::/96 embeds private 10.0.0.0/8"},
        {"64:ff9b:1::1", "nat64-local-use 64:ff9b:1::/48"},
        {"100::1", "discard-only 100::/64"},
        {"2001::1", "teredo 2001::/32"},
        {"2001:0:4136:e378:8000:63bf:3fff:fdd2", "teredo 2001::/32"},
        {"2001:2::1", "benchmarking 2001:2::/48"},
        {"2001:10::1", "orchid 2001:10::/28"},
        {"2001:db8::25", "documentation 2001:db8::/32"},
        {"2001:1ff::1", "ietf-protocol-assignments 2001::/23"},
        {"2002:c000:201::1", "6to4 2002::/16"},
        {"2002:0808:0808::1", "6to4 2002::/16"},  // even when it embeds a public address
        {"3fff::1", "documentation 3fff::/20"},
        {"fc00::1", "unique-local fc00::/7"},
        {"fd12:3456::1", "unique-local fc00::/7"},
        {"fe80::1", "link-local fe80::/10"},
        {"febf::1", "link-local fe80::/10"},
        {"fec0::1", "site-local fec0::/10"},
        {"ff02::1", "multicast ff00::/8"},
        {"4000::1", "not-global-unicast outside 2000::/3"},
        {"1::1", "not-global-unicast outside 2000::/3"},
    };
    for (const auto& c : cases) {
        auto why = guard.refusal(ip(c.address));
        if (c.refusal == nullptr) {
            EXPECT_FALSE(why) << c.address << " refused: " << *why;
        } else {
            ASSERT_TRUE(why) << c.address << " allowed";
            EXPECT_EQ(*why, c.refusal) << c.address;
        }
    }
}

TEST(TargetGuard, AllowNetworksOverride) {
    const TargetGuard guard(nets({"127.0.0.0/8", "10.20.0.0/16", "fd00::/8"}), {ip("127.0.0.1")});
    EXPECT_FALSE(guard.refusal(ip("127.0.0.2")));
    EXPECT_FALSE(guard.refusal(ip("127.0.0.1")));  // allow-list beats own address (test rigs)
    EXPECT_FALSE(guard.refusal(ip("::ffff:127.0.0.2")));
    EXPECT_FALSE(guard.refusal(ip("10.20.3.4")));
    EXPECT_FALSE(guard.refusal(ip("64:ff9b::a14:304")));  // NAT64 of 10.20.3.4
    EXPECT_FALSE(guard.refusal(ip("fd00::25")));
    EXPECT_EQ(guard.refusal(ip("10.21.0.1")).value_or(""), "private 10.0.0.0/8");
    EXPECT_EQ(guard.refusal(ip("fc00::1")).value_or(""), "unique-local fc00::/7");
    EXPECT_EQ(guard.refusal(ip("::1")).value_or(""), "loopback ::1/128");
}

TEST(TargetGuard, OwnAddresses) {
    const TargetGuard guard(CidrSet{}, {ip("8.8.4.4"), ip("2001:4860:4860::8844")});
    EXPECT_EQ(guard.refusal(ip("8.8.4.4")).value_or(""), "own-address 8.8.4.4");
    EXPECT_EQ(guard.refusal(ip("::ffff:8.8.4.4")).value_or(""), "own-address 8.8.4.4");
    EXPECT_EQ(guard.refusal(ip("2001:4860:4860::8844")).value_or(""),
              "own-address 2001:4860:4860::8844");
    EXPECT_FALSE(guard.refusal(ip("8.8.8.8")));  // exact match only
    EXPECT_FALSE(guard.refusal(ip("2001:4860:4860::8888")));

    // A mapped own address matches its IPv4 form.
    const TargetGuard mapped(CidrSet{}, {ip("::ffff:8.8.4.4")});
    EXPECT_EQ(mapped.refusal(ip("8.8.4.4")).value_or(""), "own-address 8.8.4.4");
}

TEST(TargetGuard, WildcardListenerMeansEveryInterface) {
    const auto local = TargetGuard::local_interface_addresses();
    ASSERT_FALSE(local.empty());  // at least loopback
    bool has_loopback = false;
    for (const auto& a : local) has_loopback |= a == IpAddress::v4(127, 0, 0, 1);
    EXPECT_TRUE(has_loopback);

    // Own-address is checked before the special ranges, so each interface address must be
    // refused as own: proof the wildcard pulled them in.
    for (const char* wildcard : {"0.0.0.0", "::"}) {
        const TargetGuard guard(CidrSet{}, {ip(wildcard)});
        for (const auto& a : local) {
            auto why = guard.refusal(a);
            ASSERT_TRUE(why) << a.to_string();
            EXPECT_EQ(why->rfind("own-address ", 0), 0u) << a.to_string() << ": " << *why;
        }
    }
    const TargetGuard specific(CidrSet{}, {ip("192.0.2.10")});
    EXPECT_EQ(specific.refusal(ip("127.0.0.1")).value_or(""), "loopback 127.0.0.0/8");
}

}  // namespace
}  // namespace calloutd
