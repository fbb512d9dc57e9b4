// A private dnsmasq serving test zones on 127.0.0.1:<free port>, for tests against a real DNS
// server.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace calloutd::test {

// The zones, declared in code. Every name under a local domain that is not declared here is
// NXDOMAIN; a declared name asked for a type it lacks is NODATA (NOERROR, empty answer).
// Names outside every local and forwarded domain are REFUSED (dnsmasq has no upstream).
struct DnsmasqZones {
    struct Mx {
        std::string domain;
        std::string host;  // "." for an RFC 7505 null MX
        int preference;
    };
    struct Host {
        std::string name;
        std::vector<std::string> addresses;  // IPv4 and/or IPv6 literals
    };
    struct Forward {
        std::string domain;    // queries at or below this domain ...
        std::string upstream;  // ... go to "IP#PORT", e.g. FakeDnsServer::dnsmasq_upstream()
    };
    std::vector<std::string> local_domains;  // answered only from the records below
    std::vector<Mx> mx;
    std::vector<Host> hosts;
    std::vector<std::string> txt_only;  // names that exist with nothing but a TXT record
    struct Cname {
        std::string alias;   // answered with a CNAME ...
        std::string target;  // ... to this name (declared in `hosts`)
    };
    std::vector<Cname> cnames;
    std::vector<Forward> forwards;
};

// Every test dnsmasq also serves this name (A 192.0.2.53, never connected to): the dns.canary
// of test configurations. Without it the default canary (the root's NS set, which an offline
// dnsmasq refuses) would turn every NXDOMAIN into tempfail dns-unhealthy.
inline constexpr const char* kDnsCanaryName = "dns-canary.test";

// Started in the constructor (throws std::runtime_error with the log if it does not answer),
// stopped by PID in the destructor. Logs every query to log_path().
class Dnsmasq {
  public:
    explicit Dnsmasq(const DnsmasqZones& zones);
    ~Dnsmasq();
    Dnsmasq(const Dnsmasq&) = delete;
    Dnsmasq& operator=(const Dnsmasq&) = delete;

    std::uint16_t port() const { return port_; }
    std::string server() const;  // "127.0.0.1:PORT"
    pid_t pid() const { return pid_; }
    std::string log_path() const { return dir_ + "/dnsmasq.log"; }
    std::string log() const;  // the query log and anything dnsmasq printed to stderr
    void stop();              // idempotent: SIGTERM, then SIGKILL after 5 s, then waitpid
    // SIGKILL at once, like a crash: queries go unanswered (ICMP port unreachable).
    void kill();
    // Starts again with the same zones on the same port (throws std::runtime_error if the
    // port was taken meanwhile or dnsmasq does not answer).
    void restart();

  private:
    bool start_once(const DnsmasqZones& zones, std::string& why, std::uint16_t port = 0);
    bool answers() const;

    DnsmasqZones zones_;
    std::string dir_;
    std::uint16_t port_ = 0;
    pid_t pid_ = -1;
};

}  // namespace calloutd::test
