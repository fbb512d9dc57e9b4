// SSRF guard: decides whether the prober may connect to an address that DNS (which an attacker
// may control) handed it: no loopback, private, link-local, reserved addresses, nor ourselves.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "util/ip_net.hpp"

namespace calloutd {

class TargetGuard {
  public:
    // `allow_networks` (callout.allow_networks) override every refusal, own addresses included:
    // an operator who lists a network means it (test rigs probe MTAs on loopback). An own address
    // of 0.0.0.0 or :: (wildcard listener) stands for every local interface address.
    TargetGuard(CidrSet allow_networks, std::vector<IpAddress> own_addresses);

    // nullopt: may connect. Otherwise why not, e.g. "loopback 127.0.0.0/8".
    std::optional<std::string> refusal(const IpAddress& ip) const;

    // Addresses of all local interfaces (getifaddrs); empty if that fails.
    static std::vector<IpAddress> local_interface_addresses();

  private:
    std::optional<std::string> special_range(const IpAddress& ip) const;

    CidrSet allow_;
    std::vector<IpAddress> own_;
};

}  // namespace calloutd
