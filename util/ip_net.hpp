// IP addresses and CIDR networks (IPv4 and IPv6): parsing, formatting, membership.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct sockaddr;

namespace calloutd {

class IpAddress {
  public:
    enum class Family : uint8_t { v4, v6 };

    // Parses a textual IPv4 or IPv6 address (no brackets, no zone id).
    static std::optional<IpAddress> parse(std::string_view text);
    // From a socket address (AF_INET or AF_INET6); nullopt for other families.
    static std::optional<IpAddress> from_sockaddr(const sockaddr* sa);
    static IpAddress v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d);

    Family family() const { return family_; }
    bool is_v4() const { return family_ == Family::v4; }
    // Raw bytes: 4 used for IPv4, 16 for IPv6.
    const std::array<uint8_t, 16>& bytes() const { return bytes_; }
    int bit_length() const { return is_v4() ? 32 : 128; }
    // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as plain IPv4; others unchanged.
    IpAddress unmapped() const;
    // The address with every bit after the first `prefix` cleared (its /prefix network).
    IpAddress masked(int prefix) const;
    std::string to_string() const;

    friend bool operator==(const IpAddress&, const IpAddress&) = default;

  private:
    Family family_ = Family::v4;
    std::array<uint8_t, 16> bytes_{};
};

class Cidr {
  public:
    // "192.0.2.0/24", "2001:db8::/32", or a bare address (host route). Host bits must be zero.
    static std::optional<Cidr> parse(std::string_view text, std::string* error = nullptr);
    Cidr(IpAddress network, int prefix) : network_(network), prefix_(prefix) {}

    // IPv4-mapped IPv6 addresses match IPv4 networks.
    bool contains(const IpAddress& ip) const;
    const IpAddress& network() const { return network_; }
    int prefix() const { return prefix_; }
    std::string to_string() const;

    friend bool operator==(const Cidr&, const Cidr&) = default;

  private:
    IpAddress network_;
    int prefix_ = 0;
};

// A list of networks; membership is a linear scan (lists are short: config-sized).
class CidrSet {
  public:
    CidrSet() = default;
    explicit CidrSet(std::vector<Cidr> nets) : nets_(std::move(nets)) {}
    bool contains(const IpAddress& ip) const;
    bool empty() const { return nets_.empty(); }
    const std::vector<Cidr>& networks() const { return nets_; }
    friend bool operator==(const CidrSet&, const CidrSet&) = default;

  private:
    std::vector<Cidr> nets_;
};

}  // namespace calloutd
