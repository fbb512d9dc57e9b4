// The world a daemon-level callout test runs in: DNS zones under "test." whose MX hosts are
// loopback addresses, one per scenario, and the calloutd configuration that points at them.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "support/dnsmasq.hpp"

namespace calloutd::test {

// One loopback address per scenario, so no two scenarios share a target by accident.
namespace world {
inline constexpr const char* kPostfixIp = "127.0.0.21";      // pf.test: real Postfix
inline constexpr const char* kCatchAllIp = "127.0.0.32";     // catchall.test
inline constexpr const char* kGreylistIp = "127.0.0.33";     // greylist.test
inline constexpr const char* kNullSenderIp = "127.0.0.34";   // nobounce.test
inline constexpr const char* kTarpitIp = "127.0.0.35";       // tarpit.test
inline constexpr const char* kRefusedIp = "127.0.0.36";      // refused.test: nothing listens
inline constexpr const char* kDeadPrimaryIp = "127.0.0.37";  // backup.test, preference 10
inline constexpr const char* kBackupIp = "127.0.0.38";       // backup.test, preference 20
inline constexpr const char* kSharedIp = "127.0.0.39";       // shared.test: cache, single flight
inline constexpr const char* kLoopbackIp = "127.0.0.40";     // guarded.test: allow_networks
inline constexpr const char* kInjectIp = "127.0.0.41";       // inject.test: bad senders
}  // namespace world

// The zones above; nullmx.test has "MX 0 .", nx.test does not exist, and servfail.test is
// forwarded to `servfail_upstream` (FakeDnsServer::dnsmasq_upstream()).
DnsmasqZones callout_test_zones(const std::string& servfail_upstream);

struct CalloutConfig {
    std::string dns_server;  // "127.0.0.1:PORT" of the test dnsmasq; never the system resolver
    std::string dns_canary = kDnsCanaryName;  // served by every test dnsmasq
    std::uint16_t smtp_port = 0;
    std::string reply_timeout = "5s";
    bool allow_loopback = true;  // callout.allow_networks = ["127.0.0.0/8"]
    std::string connect_timeout = "1s";
    std::string command_timeout = "1s";
    std::string probe_timeout = "5s";
    std::string server_extra;  // more "key = value" lines for [server]
    // DaemonProcess replaces @DIR@; a file written by hand must do so itself, or set "".
    std::string control_socket = "@DIR@/control.sock";
    std::string log_level = "debug";
    std::string sections;  // appended verbatim: further "[limits]", "[policy]" ... tables
};

// A calloutd.toml listening on inet:127.0.0.1:0 with short timeouts and debug logging (unless
// log_level says otherwise), its control socket at @DIR@/control.sock.
std::string callout_config(const CalloutConfig& c);

}  // namespace calloutd::test
