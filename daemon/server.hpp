// The policy server: listeners from server.listen and the set of live connections.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "daemon/config.hpp"
#include "policy/decider.hpp"
#include "policy/request.hpp"

namespace calloutd {

class Connection;
class IoBatch;
class Metrics;

class Server {
  public:
    // `metrics` (optional, not owned) counts answered requests and protocol errors.
    Server(uv_loop_t* loop, Decider& decider, const ServerSettings& settings,
           Metrics* metrics = nullptr);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // Binds every listener; on failure logs why and returns false (nothing keeps listening).
    bool listen();
    // New limits for new requests and connections (SIGHUP). Listeners are not rebound.
    void update_settings(const ServerSettings& settings);
    // Stops accepting and lets connections answer what they hold; `drained` runs once the
    // last connection is gone.
    void drain(std::function<void()> drained);
    // Closes every connection and listener now.
    void close_all();

    // What the listeners are bound to (ports resolved), e.g. "inet:127.0.0.1:10023".
    const std::vector<std::string>& bound() const { return bound_; }
    size_t connection_count() const { return connections_.size(); }
    uint64_t connections_accepted() const { return next_connection_id_ - 1; }

    // For Connection.
    uv_loop_t* loop() const { return loop_; }
    Decider& decider() { return decider_; }
    Metrics* metrics() { return metrics_; }
    const ServerSettings& settings() const { return settings_; }
    ReaderLimits reader_limits() const;
    void forget(Connection* c);
    // A connection started closing: it no longer counts against server.max_connections.
    void connection_closing() { --open_connections_; }
    // Calls c->flush_requested() at the end of this loop iteration (libuv's check phase), once
    // every connection made ready by this iteration's events has decoded and decided what it
    // read (or sooner, when 64 connections are waiting). Replies then leave together: when the loop
    // was busy the client wakes once for the batch, not once per reply (a cross-CPU wake-up costs
    // more than the rest of a cached answer on a virtual machine; see bench/README.md).
    // A raw pointer, not a reference count (two atomic operations per request): forget()
    // takes a connection out of the lists before it is destroyed.
    void flush_later(Connection* c);
    // With server.io_uring in use: the connection's socket is readable, and it is received
    // from in this iteration's check phase together with every other ready connection's (one
    // system call for all of them); its sends go out the same way after flush_pending().
    bool batching() const { return batch_ != nullptr; }
    void receive_later(Connection* c);
    void send_later(Connection* c);
    // "io_uring" or "syscalls", for the `started` line.
    std::string_view io_mode() const { return io_uring() ? "io_uring" : "syscalls"; }
    bool io_uring() const;
    // The batch (calloutd_io_uring_* metrics); null when the policy I/O uses system calls.
    const IoBatch* io_batch() const { return batch_.get(); }

  private:
    struct Listener {
        Server* server = nullptr;
        bool is_unix = false;
        bool open = false;
        ListenAddress address;
        union {
            uv_tcp_t tcp;
            uv_pipe_t pipe;
        } handle;
        uv_handle_t* as_handle() { return reinterpret_cast<uv_handle_t*>(&handle); }
    };

    bool bind_inet(Listener& l);
    bool bind_unix(Listener& l);
    static void on_connection(uv_stream_t* listener, int status);
    void close_listeners();
    void check_drained();

    uv_loop_t* loop_;
    Decider& decider_;
    ServerSettings settings_;
    Metrics* metrics_;
    std::vector<std::unique_ptr<Listener>> listeners_;
    std::vector<std::string> bound_;
    std::unordered_map<Connection*, std::shared_ptr<Connection>> connections_;
    uint64_t next_connection_id_ = 1;
    size_t open_connections_ = 0;  // accepted and not yet closing
    bool draining_ = false;
    std::function<void()> drained_;
    // flush_later(): the connections to flush (forget() removes a closed one), the
    // list being flushed (not empty only during a flush), and the check handle, active only
    // while to_flush_ is not empty.
    std::vector<Connection*> to_flush_;
    std::vector<Connection*> flushing_;
    uv_check_t flush_check_;
    static void on_flush_check(uv_check_t* h);
    void start_flush_check();
    void flush_pending();
    // The batched receives, and the batched sends (server.io_uring).
    void receive_pending();
    void send_pending();
    // Sets up batch_ as server.io_uring says; false: "on" and not available.
    bool open_batch();
    std::unique_ptr<IoBatch> batch_;
    std::vector<Connection*> to_receive_;
    std::vector<Connection*> receiving_;
    std::vector<ssize_t> received_;  // the receives' results, while they are handled
    std::vector<Connection*> to_send_;
    std::vector<Connection*> sending_;
    std::unique_ptr<char[]> receive_buffers_;  // kReceiveSlots of kReceiveSlotBytes
    void close_flush_check();
};

}  // namespace calloutd
