// Special-purpose address ranges (IANA IPv4/IPv6 special-purpose registries) the prober refuses.
#include "callout/target_guard.hpp"

#include "util/panic.hpp"

#include <ifaddrs.h>

#include <algorithm>
#include <string_view>

namespace calloutd {
namespace {

struct Range {
    std::string_view name;
    std::string_view cidr;
};

// Most specific first, so the reason names the narrowest range (broadcast before 240/4).
constexpr Range kV4Ranges[] = {
    {"limited-broadcast", "255.255.255.255/32"},
    {"this-network", "0.0.0.0/8"},
    {"private", "10.0.0.0/8"},
    {"shared-address-space", "100.64.0.0/10"},
    {"loopback", "127.0.0.0/8"},
    {"link-local", "169.254.0.0/16"},
    {"private", "172.16.0.0/12"},
    {"ietf-protocol-assignments", "192.0.0.0/24"},
    {"documentation", "192.0.2.0/24"},
    {"6to4-relay-anycast", "192.88.99.0/24"},
    {"private", "192.168.0.0/16"},
    {"benchmarking", "198.18.0.0/15"},
    {"documentation", "198.51.100.0/24"},
    {"documentation", "203.0.113.0/24"},
    {"multicast", "224.0.0.0/4"},
    {"reserved", "240.0.0.0/4"},
};

// ::ffff:0:0/96 never reaches this table (IPv4-mapped addresses are judged as IPv4), and
// 64:ff9b::/96 is handled before it (the embedded IPv4 address is judged).
constexpr Range kV6Ranges[] = {
    {"unspecified", "::/128"},
    {"loopback", "::1/128"},
    {"ipv4-compatible", "::/96"},  // deprecated (RFC 4291); some stacks route it as IPv4
    {"nat64-local-use", "64:ff9b:1::/48"},
    {"discard-only", "100::/64"},
    {"teredo", "2001::/32"},
    {"benchmarking", "2001:2::/48"},
    {"orchid", "2001:10::/28"},
    {"orchid-v2", "2001:20::/28"},
    {"documentation", "2001:db8::/32"},
    {"ietf-protocol-assignments", "2001::/23"},
    // 6to4 (RFC 7526, deprecated): refused outright rather than judged by its embedded IPv4
    // address, because a host with a 6to4 interface would encapsulate straight to that address
    // and real MX hosts are not reached this way any more.
    {"6to4", "2002::/16"},
    {"documentation", "3fff::/20"},
    {"unique-local", "fc00::/7"},
    {"link-local", "fe80::/10"},
    {"site-local", "fec0::/10"},
    {"multicast", "ff00::/8"},
};

struct ParsedRange {
    std::string_view name;
    Cidr cidr;
};

// Parsed once; the texts above are constants, so a parse failure is a programming error.
template <size_t N>
std::vector<ParsedRange> parse_ranges(const Range (&ranges)[N]) {
    std::vector<ParsedRange> out;
    for (const auto& r : ranges) {
        auto c = Cidr::parse(r.cidr);
        if (!c) panic(__func__, "bad built-in range " + std::string(r.cidr));
        out.push_back({r.name, *c});
    }
    return out;
}

const std::vector<ParsedRange>& v4_ranges() {
    static const std::vector<ParsedRange> ranges = parse_ranges(kV4Ranges);
    return ranges;
}

const std::vector<ParsedRange>& v6_ranges() {
    static const std::vector<ParsedRange> ranges = parse_ranges(kV6Ranges);
    return ranges;
}

const Cidr& nat64_prefix() {
    static const Cidr prefix = *Cidr::parse("64:ff9b::/96");
    return prefix;
}

const Cidr& global_unicast() {
    static const Cidr prefix = *Cidr::parse("2000::/3");
    return prefix;
}

std::optional<std::string> match(const std::vector<ParsedRange>& ranges, const IpAddress& ip) {
    for (const auto& r : ranges) {
        if (r.cidr.contains(ip)) return std::string(r.name) + " " + r.cidr.to_string();
    }
    return std::nullopt;
}

bool is_wildcard(const IpAddress& ip) {
    const auto& b = ip.bytes();
    return std::all_of(b.begin(), b.begin() + (ip.is_v4() ? 4 : 16),
                       [](uint8_t x) { return x == 0; });
}

}  // namespace

TargetGuard::TargetGuard(CidrSet allow_networks, std::vector<IpAddress> own_addresses)
    : allow_(std::move(allow_networks)) {
    bool wildcard = false;
    for (const auto& ip : own_addresses) {
        if (is_wildcard(ip)) wildcard = true;
        own_.push_back(ip.unmapped());
    }
    if (wildcard) {
        for (const auto& ip : local_interface_addresses()) own_.push_back(ip.unmapped());
    }
}

// IPv4 special ranges; IPv6 ranges, NAT64 by its embedded IPv4, and anything outside 2000::/3.
std::optional<std::string> TargetGuard::special_range(const IpAddress& ip) const {
    if (ip.is_v4()) return match(v4_ranges(), ip);
    // 64:ff9b::/96 (RFC 6052) is how DNS64 hands every IPv4-only MX to an IPv6-only host; the
    // NAT64 gateway connects to the embedded IPv4 address, so that address is what is judged.
    if (nat64_prefix().contains(ip)) {
        const auto& b = ip.bytes();
        IpAddress embedded = IpAddress::v4(b[12], b[13], b[14], b[15]);
        if (allow_.contains(embedded)) return std::nullopt;
        if (auto why = match(v4_ranges(), embedded))
            return "nat64 " + nat64_prefix().to_string() + " embeds " + *why;
        return std::nullopt;
    }
    if (auto why = match(v6_ranges(), ip)) return why;
    // Only 2000::/3 is allocated for global unicast; everything else is reserved.
    if (!global_unicast().contains(ip)) return std::string("not-global-unicast outside 2000::/3");
    return std::nullopt;
}

std::optional<std::string> TargetGuard::refusal(const IpAddress& ip) const {
    if (allow_.contains(ip)) return std::nullopt;
    // ::ffff:a.b.c.d is judged as a.b.c.d (Cidr::contains already matches it against IPv4).
    const IpAddress target = ip.unmapped();
    if (std::find(own_.begin(), own_.end(), target) != own_.end())
        return "own-address " + target.to_string();
    if (auto why = special_range(target)) {
        if (target != ip) return *why + " (ipv4-mapped)";
        return why;
    }
    return std::nullopt;
}

std::vector<IpAddress> TargetGuard::local_interface_addresses() {
    std::vector<IpAddress> out;
    ifaddrs* list = nullptr;
    if (getifaddrs(&list) != 0) return out;
    for (const ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
        if (auto ip = IpAddress::from_sockaddr(i->ifa_addr)) out.push_back(*ip);
    }
    freeifaddrs(list);
    return out;
}

}  // namespace calloutd
