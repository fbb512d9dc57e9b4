// A listening TCP or unix socket on the loop, for the metrics listener and the control socket.
#pragma once

#include <uv.h>

#include <string>

#include "daemon/config.hpp"

namespace calloutd {

// True when something accepts connections on the unix socket at `path`.
bool socket_is_live(const std::string& path);
// Why binding the unix socket `path` failed with libuv error `rc`, as an admin needs it ("PATH:
// directory DIR does not exist" rather than libuv's "permission denied" for a missing directory).
std::string unix_bind_error(const std::string& path, int rc);

// Binds inet:HOST:PORT (port 0 = any free port) or unix:PATH. A unix socket file left behind by
// a process that is gone is replaced; one that still accepts connections is not. The handle's
// memory must stay valid until the loop has run after close(): keep the object until then.
class ListenSocket {
  public:
    ListenSocket() = default;
    ListenSocket(const ListenSocket&) = delete;
    ListenSocket& operator=(const ListenSocket&) = delete;

    // `data` is stored in the handle for the connection callback; `unix_mode` is applied to a
    // unix socket file. On failure returns false with the reason and leaves nothing listening.
    bool listen(uv_loop_t* loop, const ListenAddress& address, int unix_mode, void* data,
                uv_connection_cb on_connection, std::string& error);
    // Stops listening and removes a unix socket file.
    void close();

    bool is_unix() const { return address_.kind == ListenAddress::Kind::unix_socket; }
    // "inet:127.0.0.1:9427" with the port as bound, or "unix:PATH".
    const std::string& bound() const { return bound_; }
    uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&handle_); }

  private:
    ListenAddress address_;
    std::string bound_;
    bool open_ = false;
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } handle_{};
};

// A client connection's handle: TCP or unix, as its listener.
union StreamHandle {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
};
// Initialises `h` for uv_accept() from a listener of that kind.
void init_stream_handle(uv_loop_t* loop, bool is_unix, StreamHandle& h);

}  // namespace calloutd
