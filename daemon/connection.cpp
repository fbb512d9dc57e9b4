// Policy connection: pipelined requests answered in order, half-close honoured, limits enforced.
#include "daemon/connection.hpp"

#include <sys/socket.h>

#include <array>
#include <cerrno>

#include "daemon/io_batch.hpp"
#include "daemon/log.hpp"
#include "daemon/metrics.hpp"
#include "daemon/server.hpp"

namespace calloutd {

namespace {

// Requests decoded but not yet answered, per connection; beyond this we stop reading until
// replies drain, so a client that never reads cannot make us buffer without bound.
constexpr size_t kMaxPendingRequests = 256;
constexpr size_t kMaxWriteQueueBytes = 256 * 1024;

// One read buffer for the whole loop: reads are consumed synchronously in read_some.
std::array<char, 64 * 1024> g_read_buffer;

}  // namespace

Connection::Connection(Server& server, uint64_t id, bool is_unix)
    : server_(server), id_(id), is_unix_(is_unix), reader_(server.reader_limits()) {
    if (is_unix_) {
        uv_pipe_init(server_.loop(), &handle_.pipe, 0);
    } else {
        uv_tcp_init(server_.loop(), &handle_.tcp);
    }
    uv_timer_init(server_.loop(), &idle_);
    uv_timer_init(server_.loop(), &request_timer_);
    handle_.tcp.data = this;  // `data` is at the same offset in every handle type
    idle_.data = this;
    request_timer_.data = this;
    open_handles_ = 3;
}

void Connection::start() {
    self_ = shared_from_this();
    uv_fileno(reinterpret_cast<uv_handle_t*>(&handle_), &fd_);
    describe_peer();
    if (!is_unix_) uv_tcp_nodelay(&handle_.tcp, 1);
    // The stream handle never reads or writes, so its fd is free for a poll handle.
    if (int rc = uv_poll_init_socket(server_.loop(), &poll_, fd_); rc != 0) {
        LogLine(LogLevel::warning, "connection-error")
            .field("peer", peer_)
            .field("reason", uv_strerror(rc));
        close("poll failed");
        return;
    }
    poll_.data = this;
    poll_open_ = true;
    ++open_handles_;
    // Activity (bytes read, replies sent) only notes the loop's time; the timer, when it fires,
    // sleeps again until idle_timeout after the last activity, and a connection still busy
    // then is looked at again one idle_timeout later. (Re-arming the timer on every read cost
    // about 520 instructions a cached request: a timer-heap removal and insertion.)
    last_activity_ = uv_now(server_.loop());
    uv_timer_start(&idle_, on_idle, idle_ms(), 0);
    update_io();
}

void Connection::describe_peer() {
    if (is_unix_) {
        peer_ = "unix#" + std::to_string(id_);
        return;
    }
    sockaddr_storage ss{};
    int len = sizeof ss;
    if (uv_tcp_getpeername(&handle_.tcp, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
        peer_ = "unknown#" + std::to_string(id_);
        return;
    }
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss.ss_family == AF_INET6) {
        const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
        uv_ip6_name(a, ip, sizeof ip);
        port = ntohs(a->sin6_port);
        peer_ = "[" + std::string(ip) + "]:" + std::to_string(port);
    } else {
        const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
        uv_ip4_name(a, ip, sizeof ip);
        port = ntohs(a->sin_port);
        peer_ = std::string(ip) + ":" + std::to_string(port);
    }
}

void Connection::on_poll(uv_poll_t* p, int status, int events) {
    auto* self = static_cast<Connection*>(p->data);
    if (self->closing_) return;
    if (status < 0) {
        // libuv says only "bad file descriptor" for an error condition on the socket (a reset,
        // say); the socket's own error is the one worth logging.
        int err = 0;
        socklen_t len = sizeof err;
        if (::getsockopt(self->fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err == 0) err = EIO;
        self->io_error(err);
        return;
    }
    if (events & UV_WRITABLE) {
        self->write_backlog();
        if (self->closing_) return;
    }
    if ((events & UV_READABLE) && self->reading_) {
        if (!self->server_.batching()) {
            self->read_some();
        } else if (!self->receive_queued_) {
            self->receive_queued_ = true;
            self->server_.receive_later(self);
        }
    }
}

bool Connection::add_receive(IoBatch& batch, char* buf, size_t len) {
    // Not `reading_`: what was readable when queued has arrived before a drain (SIGTERM) that
    // came in the same loop iteration, and is answered (maybe_finish() waits for it).
    if (closing_) {
        receive_queued_ = false;
        return false;
    }
    batch.add_recv(fd_, buf, len);
    return true;
}

void Connection::received(const char* data, ssize_t result) {
    receive_queued_ = false;
    if (closing_) return;
    if (result > 0) {
        handle_bytes(data, static_cast<size_t>(result));
    } else if (result == 0) {
        handle_eof();
    } else if (result != -EAGAIN && result != -EWOULDBLOCK) {
        io_error(static_cast<int>(-result));
        return;
    }
    maybe_finish();
}

bool Connection::add_send(IoBatch& batch) {
    if (closing_ || backlog_bytes() == 0) {
        send_queued_ = false;
        return false;
    }
    batch.add_send(fd_, backlog_.data() + backlog_sent_, backlog_bytes());
    return true;
}

void Connection::sent(ssize_t result) {
    send_queued_ = false;
    if (closing_) return;
    if (result < 0 && result != -EAGAIN && result != -EWOULDBLOCK) {
        io_error(static_cast<int>(-result));
        return;
    }
    if (result > 0) {
        backlog_sent_ += static_cast<size_t>(result);
        last_activity_ = uv_now(server_.loop());
    }
    // What the socket did not take waits for it to become writable.
    backlog_progress();
}

void Connection::read_some() {
    ssize_t n;
    do {
        n = ::recv(fd_, g_read_buffer.data(), g_read_buffer.size(), MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
        handle_bytes(g_read_buffer.data(), static_cast<size_t>(n));
    } else if (n == 0) {
        handle_eof();
    } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
        io_error(errno);
    }
}

void Connection::io_error(int err) {
    LogLine(LogLevel::info, "connection-error")
        .field("peer", peer_)
        .field("reason", uv_strerror(uv_translate_sys_error(err)));
    close("I/O error");
}

uint64_t Connection::idle_ms() const {
    return static_cast<uint64_t>(server_.settings().idle_timeout.count());
}

void Connection::handle_bytes(const char* data, size_t len) {
    last_activity_ = uv_now(server_.loop());
    reader_.append(std::string_view(data, len));
    bool completed_any = false;
    for (;;) {
        auto st = reader_.next(scratch_);
        if (st == RequestReader::Status::request) {
            submit(scratch_);
            completed_any = true;
            if (reader_.warning().empty()) continue;
            // Answered, then let go: nothing after a request like this is trusted.
            violation(ProtocolError::invalid_utf8, reader_.warning());
            break;
        }
        if (st == RequestReader::Status::error) violation(reader_.error_kind(), reader_.error());
        break;
    }
    track_partial_request(completed_any);
    if (completed_any) request_flush();
    update_io();
}

void Connection::request_flush() {
    if (flush_requested_ || closing_) return;
    flush_requested_ = true;
    server_.flush_later(this);
}

void Connection::flush_requested() {
    flush_requested_ = false;
    flush(true);
    maybe_finish();
}

// A request that has begun must be complete within server.request_timeout of the read that
// brought its first bytes, however slowly the rest trickles in (slowloris): bytes keep the
// idle timer at bay, this one they do not.
void Connection::track_partial_request(bool completed_any) {
    if (read_done_ || reader_.pending_bytes() == 0) {
        uv_timer_stop(&request_timer_);
        return;
    }
    if (completed_any || uv_is_active(reinterpret_cast<uv_handle_t*>(&request_timer_)) == 0) {
        uv_timer_start(&request_timer_, on_request_timeout,
                       static_cast<uint64_t>(server_.settings().request_timeout.count()), 0);
    }
}

void Connection::on_request_timeout(uv_timer_t* t) {
    auto* self = static_cast<Connection*>(t->data);
    if (!self->reading_ && !self->read_done_) {
        // We stopped reading (replies backed up): the client is not the slow one.
        uv_timer_start(t, on_request_timeout,
                       static_cast<uint64_t>(self->server_.settings().request_timeout.count()), 0);
        return;
    }
    self->violation(ProtocolError::request_timeout,
                    "request not complete within server.request_timeout");
}

void Connection::handle_eof() {
    // A client that half-closes after its request (Exim ${readsocket}) still gets its reply.
    auto st = reader_.finish(scratch_);
    if (st == RequestReader::Status::request) submit(scratch_);
    if (st == RequestReader::Status::error) {
        violation(reader_.error_kind(), reader_.error());
        return;
    }
    uv_timer_stop(&request_timer_);
    read_done_ = true;
    flush();  // and stops reading
    maybe_finish();
}

void Connection::violation(ProtocolError kind, const std::string& reason) {
    // Postfix applies its own default action when the connection closes without a reply;
    // earlier complete requests are still answered.
    if (Metrics* m = server_.metrics()) m->protocol_error(kind);
    LogLine(LogLevel::warning, "protocol-violation").field("peer", peer_).field("reason", reason);
    uv_timer_stop(&request_timer_);
    read_done_ = true;
    flush();  // and stops reading
    maybe_finish();
}

void Connection::submit(const PolicyRequest& req) {
    uint64_t seq = next_seq_++;
    auto start = Clock::now();
    // The callback is made only for a decision that is not available at once.
    // Decided into decided_, kept from one request to the next: a cached answer allocates
    // nothing.
    const bool immediate = server_.decider().decide_into(
        req,
        [this, seq]() -> Decider::Done {
            return [weak = weak_from_this(), seq](Decision d) {
                auto self = weak.lock();
                if (!self) return;  // the client went away; the verdict is still cached upstream
                self->complete(seq, d);
                self->request_flush();
            };
        },
        start, decided_);
    // A reused slot: every field is set here.
    Slot& slot = slots_.push_back_reused();
    slot.seq = seq;
    slot.start = start;
    if (immediate) {
        // Immediate answers leave at the end of the loop iteration (Server::flush_later).
        slot.ready = true;
        encode_reply(decided_.action, slot.reply);
        slot.queue_id.clear();
        slot.sender.clear();
        slot.client.clear();
        log_decision(req.queue_id, req.sender, req.client_address, decided_, start);
        return;
    }
    // Only requests that wait keep copies of what their log line needs.
    slot.ready = false;
    slot.reply.clear();
    slot.queue_id = req.queue_id;
    slot.sender = req.sender;
    slot.client = req.client_address;
}

void Connection::complete(uint64_t seq, const Decision& d) {
    if (closing_ || slots_.empty() || seq < slots_.front().seq) return;
    Slot& slot = slots_[seq - slots_.front().seq];
    if (slot.ready) return;
    slot.ready = true;
    encode_reply(d.action, slot.reply);
    log_decision(slot.queue_id, slot.sender, slot.client, d, slot.start);
}

void Connection::log_decision(const std::string& queue_id, const std::string& sender,
                              const std::string& client, const Decision& d,
                              Clock::time_point start) {
    auto now = Clock::now();
    if (Metrics* m = server_.metrics())
        m->request_answered(d.verdict.cls, d.source, d.action, now - start);
    if (!Log::enabled(LogLevel::info)) return;
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - start);
    LogLine line(LogLevel::info, "decision");
    line.field("queue_id", queue_id)
        .field("sender", sender)
        .field("client", client)
        .field("class", to_string(d.verdict.cls))
        .field("reason", d.verdict.reason)
        .field("action", d.action)
        .field("source", to_string(d.source))
        .field("ms", static_cast<long long>(ms.count()));
    if (d.verdict.cls == VerdictClass::rate_limited) line.field("limit", d.verdict.reason);
    if (d.repeat) line.field("repeat", "yes");
}

// Ends with update_io(): what the socket is watched for follows from what is left.
void Connection::flush(bool batched) {
    if (closing_ || slots_.empty() || !slots_.front().ready) {
        update_io();
        return;
    }
    if (batched && server_.batching()) {
        // The replies join the backlog, and the backlog goes with the Server's batched send;
        // unless a backlog already waits for the socket to become writable.
        last_activity_ = uv_now(server_.loop());
        const bool waiting = backlog_bytes() > 0;
        if (!waiting) {
            backlog_.clear();
            backlog_sent_ = 0;
        }
        while (!slots_.empty() && slots_.front().ready) {
            backlog_ += slots_.front().reply;
            slots_.pop_front();
        }
        if (!waiting && !send_queued_) {
            send_queued_ = true;
            server_.send_later(this);
        }
        update_io();
        return;
    }
    // One ready reply (the usual case) is written from its slot; several are joined first.
    std::string joined;
    std::string* out = &slots_.front().reply;
    if (slots_.size() > 1 && slots_[1].ready) {
        while (!slots_.empty() && slots_.front().ready) {
            joined += slots_.front().reply;
            slots_.pop_front();
        }
        out = &joined;
    }
    last_activity_ = uv_now(server_.loop());
    // Most replies fit the socket buffer: they are sent at once, and only what the socket does
    // not take waits in the backlog for the socket to become writable. Replies never overtake
    // each other: while a backlog waits, new ones join it. send(2) with MSG_NOSIGNAL: a peer
    // gone is an error to log, not a SIGPIPE.
    size_t written = 0;
    if (backlog_bytes() == 0) {
        ssize_t n;
        do {
            n = ::send(fd_, out->data(), out->size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            io_error(errno);
            return;
        }
        written = n > 0 ? static_cast<size_t>(n) : 0;
    }
    if (written < out->size()) {
        if (backlog_bytes() == 0) {
            backlog_.clear();
            backlog_sent_ = 0;
        }
        backlog_.append(*out, written, std::string::npos);
    }
    if (out != &joined) slots_.pop_front();
    // Answered requests left the pending queue: reading may have to resume; a backlog needs
    // the socket watched for writability.
    update_io();
}

void Connection::write_backlog() {
    while (backlog_bytes() > 0) {
        ssize_t n = ::send(fd_, backlog_.data() + backlog_sent_, backlog_bytes(),
                           MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n < 0) {
            io_error(errno);
            return;
        }
        backlog_sent_ += static_cast<size_t>(n);
        last_activity_ = uv_now(server_.loop());
    }
    backlog_progress();
}

void Connection::backlog_progress() {
    if (backlog_bytes() == 0) {
        // Keeps the capacity of an ordinary backlog, not of a burst.
        if (backlog_.capacity() > kMaxWriteQueueBytes) std::string().swap(backlog_);
        backlog_.clear();
        backlog_sent_ = 0;
    } else if (backlog_sent_ >= backlog_.size() / 2) {
        // A client that reads, but slower than it asks, may never let the backlog drain: what
        // has been sent is dropped once it is half of the buffer, so the buffer stays within
        // twice what waits (which update_io() bounds).
        backlog_.erase(0, backlog_sent_);
        backlog_sent_ = 0;
    }
    update_io();
    maybe_finish();
}

void Connection::update_io() {
    if (closing_ || !poll_open_) return;
    reading_ =
        !read_done_ && slots_.size() < kMaxPendingRequests && backlog_bytes() < kMaxWriteQueueBytes;
    // A backlog queued for the batched send is not waiting for the socket (yet).
    const bool wait_writable = backlog_bytes() > 0 && !send_queued_;
    const int events = (reading_ ? UV_READABLE : 0) | (wait_writable ? UV_WRITABLE : 0);
    if (events == poll_events_) return;
    int rc = events == 0 ? uv_poll_stop(&poll_) : uv_poll_start(&poll_, events, on_poll);
    if (rc != 0) {
        LogLine(LogLevel::warning, "connection-error")
            .field("peer", peer_)
            .field("reason", uv_strerror(rc));
        close("poll failed");
        return;
    }
    poll_events_ = events;
}

void Connection::maybe_finish() {
    if (!closing_ && read_done_ && !receive_queued_ && slots_.empty() && backlog_bytes() == 0)
        close("done");
}

void Connection::drain() {
    if (closing_) return;
    // What the client sent before the drain began is answered, even if its readability has
    // not been seen yet (it may sit in the same epoll batch as the signal, or behind it).
    if (reading_ && !receive_queued_) {
        read_some();
        if (closing_) return;
    }
    read_done_ = true;
    update_io();
    maybe_finish();
}

void Connection::on_idle(uv_timer_t* t) {
    auto* self = static_cast<Connection*>(t->data);
    const uint64_t idle = self->idle_ms();
    if (!self->slots_.empty() || self->backlog_bytes() > 0) {  // still working for it
        uv_timer_start(t, on_idle, idle, 0);
        return;
    }
    const uint64_t quiet = uv_now(self->server_.loop()) - self->last_activity_;
    if (quiet < idle) {
        uv_timer_start(t, on_idle, idle - quiet, 0);
        return;
    }
    LogLine(LogLevel::info, "idle-timeout").field("peer", self->peer_);
    self->close("idle");
}

void Connection::close(const char*) {
    if (closing_) return;
    closing_ = true;
    reading_ = false;
    server_.connection_closing();
    // The poll handle first: the socket it watches is closed with the stream handle.
    if (poll_open_) uv_close(reinterpret_cast<uv_handle_t*>(&poll_), on_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&handle_), on_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&idle_), on_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&request_timer_), on_closed);
}

void Connection::on_closed(uv_handle_t* h) {
    auto* self = static_cast<Connection*>(h->data);
    if (--self->open_handles_ > 0) return;
    // Last handle closed: drop the server's reference, then our own.
    auto keep = std::move(self->self_);
    self->server_.forget(self);
}

}  // namespace calloutd
