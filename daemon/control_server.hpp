// The control socket (server.control_socket): `calloutd status` and `calloutd cache` ask the
// running daemon here. Unix socket only, mode 0660: it is the one place that changes state.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "daemon/control_protocol.hpp"
#include "daemon/listen_socket.hpp"

namespace calloutd {

class ControlServer {
  public:
    using Handler = std::function<ControlReply(const ControlRequest&)>;
    static constexpr int kSocketMode = 0660;
    static constexpr size_t kMaxConnections = 16;
    static constexpr std::chrono::milliseconds kIdleTimeout{60'000};

    ControlServer(uv_loop_t* loop, std::string path, Handler handler);
    ~ControlServer();
    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;

    // Binds the socket; false with the reason in `error`.
    bool listen(std::string& error);
    // Stops listening, closes connections and removes the socket file; the loop must run after.
    void close();
    const std::string& path() const { return path_; }

  private:
    class Connection;
    static void on_connection(uv_stream_t* listener, int status);
    void forget(Connection* c);

    uv_loop_t* loop_;
    std::string path_;
    Handler handler_;
    ListenSocket socket_;
    std::unordered_map<Connection*, std::unique_ptr<Connection>> connections_;
};

}  // namespace calloutd
