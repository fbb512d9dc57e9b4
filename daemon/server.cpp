// Listeners (TCP v4/v6 and unix sockets) and connection bookkeeping for the policy server.
#include "daemon/server.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "daemon/connection.hpp"
#include "daemon/io_batch.hpp"
#include "daemon/listen_socket.hpp"
#include "daemon/log.hpp"

namespace calloutd {

namespace {

constexpr int kBacklog = 511;
// Connections whose replies wait for the end of the loop iteration, at most (Server::flush_later).
constexpr size_t kMaxDeferredFlushes = 64;
// Batched receives (server.io_uring): how many connections one system call reads, and how much
// each may bring (a request is ~500 bytes; a connection with more is read again next time).
constexpr size_t kReceiveSlots = 64;
constexpr size_t kReceiveSlotBytes = 16 * 1024;
// Operations per io_uring_enter(2); more are made in several.
constexpr unsigned kBatchEntries = 256;

void log_bind_error(const ListenAddress& a, const std::string& why) {
    LogLine(LogLevel::error, "listen-failed").field("listen", a.text).field("reason", why);
}

}  // namespace

Server::Server(uv_loop_t* loop, Decider& decider, const ServerSettings& settings, Metrics* metrics)
    : loop_(loop), decider_(decider), settings_(settings), metrics_(metrics) {
    uv_check_init(loop_, &flush_check_);
    flush_check_.data = this;
    // Never what keeps the loop running.
    uv_unref(reinterpret_cast<uv_handle_t*>(&flush_check_));
}

Server::~Server() = default;

bool Server::open_batch() {
    if (settings_.io_uring == "off") return true;
    std::string why;
    batch_ = IoBatch::open(kBatchEntries, why);
    if (batch_) {
        receive_buffers_ = std::make_unique<char[]>(kReceiveSlots * kReceiveSlotBytes);
        return true;
    }
    if (settings_.io_uring == "on") {
        LogLine(LogLevel::error, "io-uring-failed")
            .field("reason", why)
            .field("hint", "set server.io_uring = \"auto\" or \"off\"");
        return false;
    }
    LogLine(LogLevel::info, "io-uring-unavailable").field("reason", why).field("io", "syscalls");
    return true;
}

ReaderLimits Server::reader_limits() const {
    return ReaderLimits{static_cast<size_t>(settings_.max_line_bytes),
                        static_cast<size_t>(settings_.max_request_bytes)};
}

bool Server::listen() {
    if (!open_batch()) return false;
    for (const auto& addr : settings_.listen) {
        auto l = std::make_unique<Listener>();
        l->server = this;
        l->address = addr;
        l->is_unix = addr.kind == ListenAddress::Kind::unix_socket;
        bool ok = l->is_unix ? bind_unix(*l) : bind_inet(*l);
        listeners_.push_back(std::move(l));
        if (!ok) {
            close_listeners();
            return false;
        }
    }
    return true;
}

bool Server::bind_inet(Listener& l) {
    uv_tcp_init(loop_, &l.handle.tcp);
    l.handle.tcp.data = &l;
    l.open = true;
    sockaddr_storage ss{};
    bool v6 = l.address.host.find(':') != std::string::npos;
    int rc = v6 ? uv_ip6_addr(l.address.host.c_str(), l.address.port,
                              reinterpret_cast<sockaddr_in6*>(&ss))
                : uv_ip4_addr(l.address.host.c_str(), l.address.port,
                              reinterpret_cast<sockaddr_in*>(&ss));
    if (rc == 0) {
        rc = uv_tcp_bind(&l.handle.tcp, reinterpret_cast<sockaddr*>(&ss), v6 ? UV_TCP_IPV6ONLY : 0);
    }
    if (rc == 0)
        rc = uv_listen(reinterpret_cast<uv_stream_t*>(&l.handle.tcp), kBacklog, on_connection);
    if (rc != 0) {
        log_bind_error(l.address, uv_strerror(rc));
        return false;
    }
    // Port 0 asks the kernel for a free port; report the real one.
    sockaddr_storage bound{};
    int len = sizeof bound;
    uv_tcp_getsockname(&l.handle.tcp, reinterpret_cast<sockaddr*>(&bound), &len);
    int port =
        ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    std::string text = v6 ? "inet:[" + l.address.host + "]:" + std::to_string(port)
                          : "inet:" + l.address.host + ":" + std::to_string(port);
    bound_.push_back(text);
    LogLine(LogLevel::notice, "listening").field("listen", text);
    return true;
}

bool Server::bind_unix(Listener& l) {
    const std::string& path = l.address.path;
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            log_bind_error(l.address, "path exists and is not a socket");
            return false;
        }
        if (socket_is_live(path)) {
            log_bind_error(l.address, "another process is listening on this socket");
            return false;
        }
        // A socket file left behind by a previous run that did not exit cleanly.
        ::unlink(path.c_str());
    }
    uv_pipe_init(loop_, &l.handle.pipe, 0);
    l.handle.pipe.data = &l;
    l.open = true;
    int rc = uv_pipe_bind(&l.handle.pipe, path.c_str());
    if (rc == 0 && ::chmod(path.c_str(), static_cast<mode_t>(settings_.socket_mode)) != 0) {
        rc = -errno;
    }
    if (rc == 0)
        rc = uv_listen(reinterpret_cast<uv_stream_t*>(&l.handle.pipe), kBacklog, on_connection);
    if (rc != 0) {
        log_bind_error(l.address, unix_bind_error(path, rc));
        return false;
    }
    bound_.push_back("unix:" + path);
    LogLine(LogLevel::notice, "listening").field("listen", "unix:" + path);
    return true;
}

void Server::on_connection(uv_stream_t* stream, int status) {
    auto* l = static_cast<Listener*>(stream->data);
    Server* self = l->server;
    if (status != 0) {
        LogLine(LogLevel::warning, "accept-failed").field("reason", uv_strerror(status));
        return;
    }
    auto conn = std::make_shared<Connection>(*self, self->next_connection_id_++, l->is_unix);
    self->connections_.emplace(conn.get(), conn);
    ++self->open_connections_;
    if (uv_accept(stream, conn->stream()) != 0) {
        conn->close("accept failed");
        return;
    }
    conn->start();
    if (self->draining_) {
        conn->drain();
    } else if (self->open_connections_ > static_cast<size_t>(self->settings_.max_connections)) {
        LogLine(LogLevel::warning, "connection-refused")
            .field("peer", conn->peer())
            .field("reason", "server.max_connections reached");
        conn->close("too many connections");
    }
}

void Server::forget(Connection* c) {
    // Not flushed after this: the connection is about to be destroyed. (Its handles close in
    // the loop's closing phase, never while flush_pending() walks flushing_.)
    for (auto* list : {&to_flush_, &flushing_, &to_receive_, &receiving_, &to_send_, &sending_})
        std::erase(*list, c);
    connections_.erase(c);
    check_drained();
}

void Server::update_settings(const ServerSettings& settings) {
    // The listeners stay as bound (server.listen and server.socket_mode need a restart).
    auto listen = settings_.listen;
    auto socket_mode = settings_.socket_mode;
    settings_ = settings;
    settings_.listen = std::move(listen);
    settings_.socket_mode = socket_mode;
}

void Server::close_listeners() {
    for (auto& l : listeners_) {
        if (!l->open) continue;
        l->open = false;
        uv_close(l->as_handle(), nullptr);
        if (l->is_unix) ::unlink(l->address.path.c_str());
    }
}

void Server::drain(std::function<void()> drained) {
    draining_ = true;
    drained_ = std::move(drained);
    close_listeners();
    // Copy: drain() may close a connection, which erases it from the map.
    std::vector<std::shared_ptr<Connection>> conns;
    conns.reserve(connections_.size());
    for (auto& [ptr, conn] : connections_) conns.push_back(conn);
    for (auto& c : conns) c->drain();
    check_drained();
}

void Server::flush_later(Connection* c) {
    to_flush_.push_back(c);
    // A bound on what a reply waits for: when this many connections are waiting, they are
    // flushed now (a loop woken for thousands of ready connections would otherwise hold the
    // first one's reply until the last one is decided).
    // (Not from inside a flush: flushing_ is the list being walked.)
    if (to_flush_.size() >= kMaxDeferredFlushes && flushing_.empty()) flush_pending();
    if (!to_flush_.empty()) start_flush_check();
}

void Server::start_flush_check() {
    auto* h = reinterpret_cast<uv_handle_t*>(&flush_check_);
    if (!uv_is_active(h) && !uv_is_closing(h)) uv_check_start(&flush_check_, on_flush_check);
}

void Server::receive_later(Connection* c) {
    to_receive_.push_back(c);
    start_flush_check();
}

void Server::send_later(Connection* c) {
    to_send_.push_back(c);
}

bool Server::io_uring() const {
    return batch_ && batch_->uses_ring();
}

void Server::flush_pending() {
    // Swapped (capacity kept): a flush may queue another connection, for the next round.
    flushing_.swap(to_flush_);
    for (Connection* c : flushing_) c->flush_requested();
    flushing_.clear();
    // With batching, those flushes only queued their sends.
    send_pending();
}

void Server::receive_pending() {
    // Receiving may make a connection's requests complete, never another connection readable:
    // to_receive_ only grows in the poll phase. Up to kReceiveSlots connections per system call.
    while (!to_receive_.empty()) {
        receiving_.clear();
        size_t take = std::min(to_receive_.size(), kReceiveSlots);
        receiving_.assign(to_receive_.end() - static_cast<std::ptrdiff_t>(take), to_receive_.end());
        to_receive_.resize(to_receive_.size() - take);
        size_t used = 0;
        for (size_t i = 0; i < receiving_.size(); ++i) {
            char* buf = receive_buffers_.get() + used * kReceiveSlotBytes;
            if (receiving_[i]->add_receive(*batch_, buf, kReceiveSlotBytes))
                ++used;
            else
                receiving_[i] = nullptr;  // closed or no longer reading since it was queued
        }
        // A copy: handling what arrived may flush 64 connections at once (flush_later), and
        // that runs the batch again.
        const std::vector<ssize_t>& results = batch_->run();
        received_.assign(results.begin(), results.end());
        size_t k = 0;
        for (size_t i = 0; i < receiving_.size(); ++i) {
            // forget() cannot run here (handles close in a later phase), but a connection
            // handled earlier in this list may have been closed; received() checks.
            if (receiving_[i] == nullptr) continue;
            receiving_[i]->received(receive_buffers_.get() + k * kReceiveSlotBytes, received_[k]);
            ++k;
        }
    }
    receiving_.clear();
}

void Server::send_pending() {
    while (!to_send_.empty()) {
        sending_.clear();
        sending_.swap(to_send_);
        size_t used = 0;
        for (auto& c : sending_) {
            if (c->add_send(*batch_))
                ++used;
            else
                c = nullptr;
        }
        if (used == 0) continue;
        const std::vector<ssize_t>& results = batch_->run();
        size_t k = 0;
        for (Connection* c : sending_) {
            if (c == nullptr) continue;
            c->sent(results[k++]);
        }
    }
    sending_.clear();
}

void Server::on_flush_check(uv_check_t* h) {
    auto* self = static_cast<Server*>(h->data);
    if (self->batch_) self->receive_pending();
    self->flush_pending();
    if (self->to_flush_.empty() && self->to_receive_.empty()) uv_check_stop(&self->flush_check_);
}

void Server::close_flush_check() {
    to_flush_.clear();
    to_receive_.clear();
    to_send_.clear();
    auto* h = reinterpret_cast<uv_handle_t*>(&flush_check_);
    if (!uv_is_closing(h)) uv_close(h, nullptr);
}

void Server::close_all() {
    close_listeners();
    std::vector<std::shared_ptr<Connection>> conns;
    for (auto& [ptr, conn] : connections_) conns.push_back(conn);
    for (auto& c : conns) c->close("shutdown");
    // Closed connections have nothing left to flush.
    close_flush_check();
}

void Server::check_drained() {
    if (draining_ && connections_.empty() && drained_) {
        close_flush_check();
        auto cb = std::move(drained_);
        drained_ = nullptr;
        cb();
    }
}

}  // namespace calloutd
