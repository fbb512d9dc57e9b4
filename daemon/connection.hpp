// One policy client connection: reads requests, answers them strictly in order.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "policy/decider.hpp"
#include "policy/request.hpp"
#include "util/ring_queue.hpp"

namespace calloutd {

class IoBatch;
class Server;

class Connection : public std::enable_shared_from_this<Connection> {
  public:
    using Clock = std::chrono::steady_clock;

    Connection(Server& server, uint64_t id, bool is_unix);
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&handle_); }
    // Starts reading after uv_accept succeeded.
    void start();
    // Stops reading new requests; closes once everything received has been answered.
    void drain();
    // Closes at once; unanswered requests are dropped.
    void close(const char* why);
    const std::string& peer() const { return peer_; }
    // Server::flush_later's callback: writes the replies that became ready in this iteration
    // (with batching, queues them for Server's batched send).
    void flush_requested();
    // Batched I/O (Server::receive_later, Server::send_later): adds this connection's receive
    // into `buf`, or the send of its waiting replies, to the batch; false when there is
    // nothing to do any more (closed, not reading, nothing to send). The results come back
    // through received() and sent(): bytes, 0 for end of stream, or -errno.
    bool add_receive(IoBatch& batch, char* buf, size_t len);
    void received(const char* data, ssize_t result);
    bool add_send(IoBatch& batch);
    void sent(ssize_t result);

  private:
    // A request waiting for its turn to be answered; replies leave in arrival order.
    struct Slot {
        uint64_t seq = 0;
        bool ready = false;
        std::string reply;
        Clock::time_point start;
        std::string queue_id;
        std::string sender;
        std::string client;
    };

    static void on_poll(uv_poll_t* p, int status, int events);
    static void on_idle(uv_timer_t* t);
    uint64_t idle_ms() const;
    static void on_request_timeout(uv_timer_t* t);
    static void on_closed(uv_handle_t* h);

    // The socket is readable: one recv(2) into the loop's buffer.
    void read_some();
    // The socket is writable again: sends what flush() could not.
    void write_backlog();
    // After a send: drops what has been sent from the backlog, then watches the socket for
    // what is left and closes a finished connection.
    void backlog_progress();
    // Logs a failed recv/send (errno `err`) and closes.
    void io_error(int err);
    size_t backlog_bytes() const { return backlog_.size() - backlog_sent_; }
    void handle_bytes(const char* data, size_t len);
    void handle_eof();
    void violation(ProtocolError kind, const std::string& reason);
    void track_partial_request(bool completed_any);
    void submit(const PolicyRequest& req);
    void complete(uint64_t seq, const Decision& decision);
    void log_decision(const std::string& queue_id, const std::string& sender,
                      const std::string& client, const Decision& d, Clock::time_point start);
    // Writes the ready replies at the head of the queue now; `batched`: queues them for the
    // Server's batched send instead, when it batches.
    void flush(bool batched = false);
    // The same at the end of this loop iteration, together with every other connection's.
    void request_flush();
    // Watches the socket for what is wanted now: readable while requests are accepted,
    // writable while replies wait in the backlog.
    void update_io();
    void maybe_finish();
    void describe_peer();

    Server& server_;
    uint64_t id_;
    bool is_unix_;
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } handle_;
    uv_os_fd_t fd_ = -1;  // the socket, for recv(2) and send(2)
    // libuv's stream only owns the socket (accept, close); its I/O is recv(2)/send(2) driven by
    // this poll handle: recv instead of libuv's read(2) skips the file layer on every request.
    uv_poll_t poll_;
    bool poll_open_ = false;
    int poll_events_ = 0;      // what poll_ watches now (UV_READABLE | UV_WRITABLE)
    std::string backlog_;      // replies the socket did not take at once, in order
    size_t backlog_sent_ = 0;  // bytes of backlog_ already sent
    uv_timer_t idle_;
    uint64_t last_activity_ = 0;  // uv_now() of the last read or reply sent
    uv_timer_t request_timer_;    // runs while a request has begun but is not complete
    int open_handles_ = 0;
    bool reading_ = false;
    bool read_done_ = false;  // EOF, violation or draining: no more requests will be read
    bool closing_ = false;
    bool flush_requested_ = false;  // queued with Server::flush_later
    bool receive_queued_ = false;   // queued with Server::receive_later
    bool send_queued_ = false;      // queued with Server::send_later: the backlog goes then
    RequestReader reader_;
    PolicyRequest scratch_;
    Decision decided_;       // submit()'s decision when made at once, reused
    RingQueue<Slot> slots_;  // reused: no allocation per request
    uint64_t next_seq_ = 0;
    std::string peer_;
    // Keeps this object alive until both handles have closed.
    std::shared_ptr<Connection> self_;
};

}  // namespace calloutd
