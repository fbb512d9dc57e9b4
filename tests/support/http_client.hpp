// A blocking HTTP/1.1 GET for tests: the metrics listener and a private Prometheus server.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace calloutd::test {

struct HttpReply {
    int status = 0;
    std::string head;  // status line and headers
    std::string body;
};

// Sends `request` verbatim (or a GET of `path` with Connection: close) and reads until the
// server closes; nullopt on connect failure, timeout or an unparsable status line.
std::optional<HttpReply> http_get(const std::string& ip, uint16_t port, const std::string& path,
                                  std::chrono::milliseconds timeout = std::chrono::seconds(10));
std::optional<HttpReply> http_exchange(
    const std::string& ip, uint16_t port, const std::string& request,
    std::chrono::milliseconds timeout = std::chrono::seconds(10));
// Percent-encodes a query parameter value.
std::string url_encode(const std::string& value);
// A TCP port on 127.0.0.1 that was free a moment ago.
uint16_t free_loopback_port();

}  // namespace calloutd::test
