// A private Prometheus server (Debian's `prometheus`) on a free loopback port with its own
// configuration and data directory, scraping one target; stopped by PID.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace calloutd::test {

class PrometheusServer {
  public:
    // Scrapes http://TARGET/metrics every `interval` as job "calloutd". started() says whether
    // its HTTP API answered within 30 s.
    PrometheusServer(const std::string& target, std::chrono::milliseconds interval);
    ~PrometheusServer();
    PrometheusServer(const PrometheusServer&) = delete;
    PrometheusServer& operator=(const PrometheusServer&) = delete;

    bool started() const { return started_; }
    uint16_t port() const { return port_; }
    // The JSON body of /api/v1/query?query=EXPR, or nullopt when the API did not answer.
    std::optional<std::string> query(const std::string& expr) const;
    std::string log() const;

  private:
    std::string dir_;
    uint16_t port_ = 0;
    pid_t pid_ = -1;
    bool started_ = false;
};

}  // namespace calloutd::test
