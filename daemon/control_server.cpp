// Control socket connections: one line in, the handler's reply out, in order; idle ones close.
#include "daemon/control_server.hpp"

#include <array>
#include <vector>

#include "daemon/log.hpp"

namespace calloutd {

namespace {
std::array<char, 4096> g_control_read_buffer;
}  // namespace

class ControlServer::Connection {
  public:
    explicit Connection(ControlServer& owner) : owner_(owner) {
        init_stream_handle(owner.loop_, true, handle_);
        uv_timer_init(owner.loop_, &timer_);
        handle_.pipe.data = this;
        timer_.data = this;
    }

    uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&handle_); }

    void start() {
        uv_timer_start(&timer_, on_timer, static_cast<uint64_t>(kIdleTimeout.count()), 0);
        reading(true);
    }

    void close() {
        if (closing_) return;
        closing_ = true;
        uv_close(reinterpret_cast<uv_handle_t*>(&handle_), on_closed);
        uv_close(reinterpret_cast<uv_handle_t*>(&timer_), on_closed);
    }

  private:
    void reading(bool on) {
        if (closing_ || on == reading_) return;
        reading_ = on;
        if (on) {
            if (uv_read_start(stream(), on_alloc, on_read) != 0) close();
        } else {
            uv_read_stop(stream());
        }
    }

    void handle(std::string_view bytes) {
        uv_timer_again(&timer_);
        reader_.append(bytes);
        std::string out;
        std::string line;
        for (;;) {
            auto st = reader_.next(line);
            if (st == ControlLineReader::Status::need_more) break;
            if (st == ControlLineReader::Status::too_long) {
                out += encode_control_reply({{}, ControlStatus::error, "line too long"});
                close_after_write_ = true;
                break;
            }
            std::string error;
            auto request = parse_control_request(line, error);
            ControlReply reply =
                request ? owner_.handler_(*request) : ControlReply{{}, ControlStatus::error, error};
            out += encode_control_reply(reply);
        }
        if (out.empty()) return;
        write(std::move(out));
    }

    void write(std::string data) {
        reading(false);
        writing_ = std::move(data);
        uv_buf_t buf = uv_buf_init(writing_.data(), static_cast<unsigned>(writing_.size()));
        write_req_.data = this;
        if (uv_write(&write_req_, stream(), &buf, 1, on_write) != 0) close();
    }

    static void on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
        *buf = uv_buf_init(g_control_read_buffer.data(), g_control_read_buffer.size());
    }

    static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
        auto* self = static_cast<Connection*>(s->data);
        if (nread > 0) {
            self->handle(std::string_view(buf->base, static_cast<size_t>(nread)));
        } else if (nread < 0) {
            // EOF: replies already written or in flight are complete; nothing more to do.
            if (self->writing_.empty())
                self->close();
            else
                self->close_after_write_ = true;
        }
    }

    static void on_write(uv_write_t* req, int status) {
        auto* self = static_cast<Connection*>(req->data);
        self->writing_.clear();
        if (self->closing_) return;
        if (status != 0 || self->close_after_write_) {
            self->close();
            return;
        }
        self->reading(true);
    }

    static void on_timer(uv_timer_t* t) { static_cast<Connection*>(t->data)->close(); }

    static void on_closed(uv_handle_t* h) {
        auto* self = static_cast<Connection*>(h->data);
        if (--self->open_handles_ > 0) return;
        self->owner_.forget(self);  // destroys *self
    }

    ControlServer& owner_;
    StreamHandle handle_{};
    uv_timer_t timer_{};
    uv_write_t write_req_{};
    int open_handles_ = 2;
    ControlLineReader reader_;
    std::string writing_;
    bool reading_ = false;
    bool closing_ = false;
    bool close_after_write_ = false;
};

ControlServer::ControlServer(uv_loop_t* loop, std::string path, Handler handler)
    : loop_(loop), path_(std::move(path)), handler_(std::move(handler)) {}

ControlServer::~ControlServer() = default;

bool ControlServer::listen(std::string& error) {
    ListenAddress address;
    address.kind = ListenAddress::Kind::unix_socket;
    address.path = path_;
    address.text = "unix:" + path_;
    if (!socket_.listen(loop_, address, kSocketMode, this, on_connection, error)) return false;
    LogLine(LogLevel::notice, "control-socket").field("path", path_);
    return true;
}

void ControlServer::on_connection(uv_stream_t* listener, int status) {
    auto* self = static_cast<ControlServer*>(listener->data);
    if (status != 0) return;
    auto conn = std::make_unique<Connection>(*self);
    Connection* c = conn.get();
    self->connections_.emplace(c, std::move(conn));
    if (uv_accept(listener, c->stream()) != 0 || self->connections_.size() > kMaxConnections) {
        c->close();
        return;
    }
    c->start();
}

void ControlServer::forget(Connection* c) {
    connections_.erase(c);
}

void ControlServer::close() {
    socket_.close();
    std::vector<Connection*> open;
    for (auto& [ptr, conn] : connections_) open.push_back(ptr);
    for (auto* c : open) c->close();
}

}  // namespace calloutd
