// Metrics HTTP connections: one response batch in flight at a time, every wait bounded.
#include "daemon/metrics_listener.hpp"

#include <array>

#include "daemon/log.hpp"

namespace calloutd {

namespace {
// Reads are consumed synchronously (copied into the session), so one buffer serves all.
std::array<char, 16 * 1024> g_metrics_read_buffer;
}  // namespace

// Reads requests, writes the session's responses and closes when the session says so. While a
// write is in flight nothing is read, so a client that pipelines without reading its responses
// only fills its own socket buffer, and the write timeout closes it.
class MetricsListener::Connection {
  public:
    explicit Connection(MetricsListener& owner)
        : owner_(owner), session_(owner.limits_.http, owner.render_) {
        init_stream_handle(owner.loop_, owner.socket_.is_unix(), handle_);
        uv_timer_init(owner.loop_, &timer_);
        handle_.tcp.data = this;  // `data` is at the same offset in every handle type
        timer_.data = this;
    }

    uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&handle_); }

    void start() {
        arm(owner_.limits_.idle_timeout);
        read(true);
    }

    void close(const char* why) {
        if (closing_) return;
        closing_ = true;
        LogLine(LogLevel::debug, "metrics-connection-closed").field("reason", why);
        uv_close(reinterpret_cast<uv_handle_t*>(&handle_), on_closed);
        uv_close(reinterpret_cast<uv_handle_t*>(&timer_), on_closed);
    }

  private:
    void read(bool on) {
        if (on == reading_ || closing_) return;
        reading_ = on;
        if (on) {
            if (uv_read_start(stream(), on_alloc, on_read) != 0) close("read failed");
        } else {
            uv_read_stop(stream());
        }
    }

    void arm(std::chrono::milliseconds timeout) {
        uv_timer_start(&timer_, on_timer, static_cast<uint64_t>(timeout.count()), 0);
    }

    // Acts on what the session asked for after consuming input or resuming.
    void proceed(HttpSession::Next next) {
        if (closing_) return;
        if (!out_.empty()) {
            after_write_ = next;
            write();
            return;
        }
        if (next == HttpSession::Next::close) {
            close("done");
        } else if (next == HttpSession::Next::write) {
            proceed(session_.resume(out_));
        } else {
            wait_for_request();
        }
    }

    // A request that has begun must be complete within the request timeout of its first byte,
    // however slowly it trickles in; between requests the idle timeout applies.
    void wait_for_request() {
        if (session_.in_request()) {
            if (!request_deadline_) {
                request_deadline_ = true;
                arm(owner_.limits_.request_timeout);
            }
        } else {
            request_deadline_ = false;
            arm(owner_.limits_.idle_timeout);
        }
        read(true);
    }

    void write() {
        read(false);
        writing_ = std::move(out_);
        out_.clear();
        uv_buf_t buf = uv_buf_init(writing_.data(), static_cast<unsigned>(writing_.size()));
        write_req_.data = this;
        int rc = uv_write(&write_req_, stream(), &buf, 1, on_write);
        if (rc != 0) {
            close("write failed");
            return;
        }
        arm(owner_.limits_.write_timeout);
    }

    static void on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
        *buf = uv_buf_init(g_metrics_read_buffer.data(), g_metrics_read_buffer.size());
    }

    static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
        auto* self = static_cast<Connection*>(s->data);
        if (nread > 0) {
            self->proceed(self->session_.feed(
                std::string_view(buf->base, static_cast<size_t>(nread)), self->out_));
        } else if (nread < 0) {
            self->close(nread == UV_EOF ? "client closed" : "read error");
        }
    }

    static void on_write(uv_write_t* req, int status) {
        auto* self = static_cast<Connection*>(req->data);
        self->writing_.clear();
        if (self->closing_) return;
        if (status != 0) {
            self->close("write error");
            return;
        }
        HttpSession::Next next = self->after_write_;
        if (next == HttpSession::Next::close) {
            self->close("done");
        } else if (next == HttpSession::Next::write) {
            self->proceed(self->session_.resume(self->out_));
        } else {
            self->wait_for_request();
        }
    }

    static void on_timer(uv_timer_t* t) {
        auto* self = static_cast<Connection*>(t->data);
        self->close(self->session_.in_request() ? "request timeout"
                    : !self->writing_.empty()   ? "write timeout"
                                                : "idle");
    }

    static void on_closed(uv_handle_t* h) {
        auto* self = static_cast<Connection*>(h->data);
        if (--self->open_handles_ > 0) return;
        self->owner_.forget(self);  // destroys *self
    }

    MetricsListener& owner_;
    HttpSession session_;
    StreamHandle handle_{};
    uv_timer_t timer_{};
    uv_write_t write_req_{};
    int open_handles_ = 2;
    std::string out_;      // responses produced, not yet handed to libuv
    std::string writing_;  // the buffer of the write in flight
    HttpSession::Next after_write_ = HttpSession::Next::read;
    bool reading_ = false;
    bool request_deadline_ = false;
    bool closing_ = false;
};

MetricsListener::MetricsListener(uv_loop_t* loop, ListenAddress address,
                                 HttpSession::Handler render, MetricsListenerLimits limits)
    : loop_(loop), address_(std::move(address)), render_(std::move(render)), limits_(limits) {}

MetricsListener::~MetricsListener() = default;

bool MetricsListener::listen() {
    std::string error;
    // A unix metrics socket is read-only data: owner and group may scrape it.
    if (!socket_.listen(loop_, address_, 0660, this, on_connection, error)) {
        LogLine(LogLevel::error, "listen-failed")
            .field("listen", address_.text)
            .field("what", "metrics")
            .field("reason", error);
        return false;
    }
    LogLine(LogLevel::notice, "metrics-listener").field("listen", socket_.bound());
    return true;
}

void MetricsListener::on_connection(uv_stream_t* listener, int status) {
    auto* self = static_cast<MetricsListener*>(listener->data);
    if (status != 0) return;
    auto conn = std::make_unique<Connection>(*self);
    Connection* c = conn.get();
    self->connections_.emplace(c, std::move(conn));
    if (uv_accept(listener, c->stream()) != 0) {
        c->close("accept failed");
        return;
    }
    if (self->connections_.size() > self->limits_.max_connections) {
        LogLine(LogLevel::debug, "metrics-connection-refused")
            .field("reason", "too many metrics connections");
        c->close("too many connections");
        return;
    }
    c->start();
}

void MetricsListener::forget(Connection* c) {
    connections_.erase(c);
}

void MetricsListener::close() {
    socket_.close();
    std::vector<Connection*> open;
    for (auto& [ptr, conn] : connections_) open.push_back(ptr);
    for (auto* c : open) c->close("shutdown");
}

}  // namespace calloutd
