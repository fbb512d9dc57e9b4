// A deliberately broken UDP DNS server for faults dnsmasq cannot be made to show on demand.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

namespace calloutd::test {

// Answers every query on 127.0.0.1:<ephemeral> with one fixed failure, from its own thread.
class FakeDnsServer {
  public:
    enum class Mode {
        servfail,  // RCODE 2
        refused,   // RCODE 5
        silent,    // reads queries and never answers: the client times out
        nxdomain,  // RCODE 3 to every name: a captive or broken resolver, a sandbox offline
    };
    explicit FakeDnsServer(Mode mode);  // throws std::runtime_error if it cannot bind
    ~FakeDnsServer();
    FakeDnsServer(const FakeDnsServer&) = delete;
    FakeDnsServer& operator=(const FakeDnsServer&) = delete;

    std::uint16_t port() const { return port_; }
    // "127.0.0.1:PORT", the notation of DnsOptions::servers.
    std::string server() const;
    // dnsmasq's upstream notation, "127.0.0.1#PORT".
    std::string dnsmasq_upstream() const;
    int queries_seen() const { return queries_.load(); }

  private:
    void serve();

    Mode mode_;
    int fd_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<int> queries_{0};
    std::thread thread_;
};

}  // namespace calloutd::test
