// IP address and CIDR parsing on top of inet_pton/inet_ntop.
#include "util/ip_net.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace calloutd {

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
    // inet_pton needs a terminated string; addresses are short.
    if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
    // inet_pton stops at a NUL, so "10.0.0.1\0junk" would pass for 10.0.0.1: only the bytes
    // an address literal can contain reach it.
    for (char c : text) {
        bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
                  c == '.' || c == ':';
        if (!ok) return std::nullopt;
    }
    char buf[INET6_ADDRSTRLEN];
    std::memcpy(buf, text.data(), text.size());
    buf[text.size()] = '\0';
    IpAddress ip;
    if (inet_pton(AF_INET, buf, ip.bytes_.data()) == 1) {
        ip.family_ = Family::v4;
        return ip;
    }
    if (inet_pton(AF_INET6, buf, ip.bytes_.data()) == 1) {
        ip.family_ = Family::v6;
        return ip;
    }
    return std::nullopt;
}

std::optional<IpAddress> IpAddress::from_sockaddr(const sockaddr* sa) {
    IpAddress ip;
    if (sa == nullptr) return std::nullopt;
    if (sa->sa_family == AF_INET) {
        const auto* sin = reinterpret_cast<const sockaddr_in*>(sa);
        std::memcpy(ip.bytes_.data(), &sin->sin_addr, 4);
        ip.family_ = Family::v4;
        return ip;
    }
    if (sa->sa_family == AF_INET6) {
        const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(sa);
        std::memcpy(ip.bytes_.data(), &sin6->sin6_addr, 16);
        ip.family_ = Family::v6;
        return ip;
    }
    return std::nullopt;
}

IpAddress IpAddress::v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    IpAddress ip;
    ip.family_ = Family::v4;
    ip.bytes_[0] = a;
    ip.bytes_[1] = b;
    ip.bytes_[2] = c;
    ip.bytes_[3] = d;
    return ip;
}

IpAddress IpAddress::unmapped() const {
    static constexpr uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (family_ != Family::v6 || std::memcmp(bytes_.data(), kMappedPrefix, 12) != 0) return *this;
    return v4(bytes_[12], bytes_[13], bytes_[14], bytes_[15]);
}

IpAddress IpAddress::masked(int prefix) const {
    IpAddress out = *this;
    for (int bit = std::max(prefix, 0); bit < bit_length(); ++bit) {
        out.bytes_[static_cast<size_t>(bit / 8)] &= static_cast<uint8_t>(~(0x80 >> (bit % 8)));
    }
    return out;
}

std::string IpAddress::to_string() const {
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(is_v4() ? AF_INET : AF_INET6, bytes_.data(), buf, sizeof buf);
    return buf;
}

namespace {

bool prefix_matches(const std::array<uint8_t, 16>& a, const std::array<uint8_t, 16>& b,
                    int prefix) {
    int full = prefix / 8;
    if (std::memcmp(a.data(), b.data(), static_cast<size_t>(full)) != 0) return false;
    int rest = prefix % 8;
    if (rest == 0) return true;
    auto mask = static_cast<uint8_t>(0xff << (8 - rest));
    return (a[static_cast<size_t>(full)] & mask) == (b[static_cast<size_t>(full)] & mask);
}

void set_error(std::string* error, std::string msg) {
    if (error != nullptr) *error = std::move(msg);
}

}  // namespace

std::optional<Cidr> Cidr::parse(std::string_view text, std::string* error) {
    auto slash = text.find('/');
    auto addr = IpAddress::parse(text.substr(0, slash));
    if (!addr) {
        set_error(error, "'" + std::string(text) + "' is not an IP address or network");
        return std::nullopt;
    }
    int prefix = addr->bit_length();
    if (slash != std::string_view::npos) {
        auto digits = text.substr(slash + 1);
        auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
        if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() ||
            prefix < 0 || prefix > addr->bit_length()) {
            set_error(error, "'" + std::string(text) + "' has an invalid prefix length");
            return std::nullopt;
        }
    }
    // Host bits set usually means a typo (10.1.2.3/8 for 10.0.0.0/8): refuse rather than guess.
    for (int bit = prefix; bit < addr->bit_length(); ++bit) {
        if (addr->bytes()[static_cast<size_t>(bit / 8)] & (0x80 >> (bit % 8))) {
            set_error(error, "'" + std::string(text) + "' has host bits set");
            return std::nullopt;
        }
    }
    return Cidr(*addr, prefix);
}

bool Cidr::contains(const IpAddress& ip) const {
    IpAddress probe = ip.unmapped();
    if (probe.family() != network_.family()) return false;
    return prefix_matches(probe.bytes(), network_.bytes(), prefix_);
}

std::string Cidr::to_string() const {
    return network_.to_string() + "/" + std::to_string(prefix_);
}

bool CidrSet::contains(const IpAddress& ip) const {
    for (const auto& n : nets_) {
        if (n.contains(ip)) return true;
    }
    return false;
}

}  // namespace calloutd
