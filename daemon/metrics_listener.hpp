// The metrics.listen HTTP listener: serves GET /metrics on the daemon's loop, read-only.
#pragma once

#include <uv.h>

#include <chrono>
#include <memory>
#include <string>
#include <unordered_map>

#include "daemon/config.hpp"
#include "daemon/http_session.hpp"
#include "daemon/listen_socket.hpp"

namespace calloutd {

// Bounds that keep a slow or hostile scraper from costing the policy service anything but a
// few bytes of memory: a request must arrive whole within kRequestTimeout of its first byte
// (slowloris), a response must be taken within kWriteTimeout, an idle keep-alive connection
// closes after kIdleTimeout, and at most kMaxConnections are open at once.
struct MetricsListenerLimits {
    std::chrono::milliseconds request_timeout{10'000};
    std::chrono::milliseconds write_timeout{10'000};
    std::chrono::milliseconds idle_timeout{60'000};
    size_t max_connections = 64;
    HttpLimits http;
};

class MetricsListener {
  public:
    MetricsListener(uv_loop_t* loop, ListenAddress address, HttpSession::Handler render,
                    MetricsListenerLimits limits = {});
    ~MetricsListener();
    MetricsListener(const MetricsListener&) = delete;
    MetricsListener& operator=(const MetricsListener&) = delete;

    // Binds; on failure logs why and returns false.
    bool listen();
    // Stops listening and closes every connection; the loop must run afterwards.
    void close();
    const std::string& bound() const { return socket_.bound(); }
    size_t connection_count() const { return connections_.size(); }

  private:
    class Connection;
    static void on_connection(uv_stream_t* listener, int status);
    void forget(Connection* c);

    uv_loop_t* loop_;
    ListenAddress address_;
    HttpSession::Handler render_;
    MetricsListenerLimits limits_;
    ListenSocket socket_;
    std::unordered_map<Connection*, std::unique_ptr<Connection>> connections_;
};

}  // namespace calloutd
