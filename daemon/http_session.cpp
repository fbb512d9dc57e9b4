// HTTP request handling for the metrics listener on top of http-parser; no sockets here.
#include "daemon/http_session.hpp"

#include <algorithm>

namespace calloutd {

namespace {

constexpr std::string_view kMetricsType = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view kTextType = "text/plain; charset=utf-8";

HttpSession* session(http_parser* p) {
    return static_cast<HttpSession*>(p->data);
}

}  // namespace

HttpSession::HttpSession(HttpLimits limits, Handler metrics_body)
    : limits_(limits), metrics_body_(std::move(metrics_body)) {
    http_parser_init(&parser_, HTTP_REQUEST);
    parser_.data = this;
    http_parser_settings_init(&settings_);
    settings_.on_message_begin = on_message_begin;
    settings_.on_url = on_url;
    settings_.on_header_field = on_header_field;
    settings_.on_header_value = on_header_value;
    settings_.on_body = on_body;
    settings_.on_message_complete = on_message_complete;
}

HttpSession::Next HttpSession::feed(std::string_view bytes, std::string& out) {
    if (closing_) return Next::close;
    backlog_.append(bytes);
    turn_responses_ = 0;
    return run(out);
}

HttpSession::Next HttpSession::resume(std::string& out) {
    if (closing_) return Next::close;
    turn_responses_ = 0;
    return run(out);
}

// http-parser pauses itself after each complete request (on_message_complete), so the number
// of responses per turn is ours to bound; the bytes after a pause are parsed on the next turn.
HttpSession::Next HttpSession::run(std::string& out) {
    out_ = &out;
    size_t off = 0;
    while (off < backlog_.size() && !closing_) {
        http_parser_pause(&parser_, 0);
        // http-parser reports URL and header bytes when a token ends or the buffer does, so
        // a limit would trip at a place that depends on how the bytes were read (a URL too
        // long in one read, an invalid byte after the limit in another). Never handing it more
        // than the request's remaining budget + 1 makes a buffer end at the byte that crosses
        // the limit: the first violation in the stream decides, however it was split.
        size_t budget =
            limits_.max_request_bytes - std::min(request_bytes_, limits_.max_request_bytes);
        size_t len = std::min(backlog_.size() - off, budget + 1);
        size_t n = http_parser_execute(&parser_, &settings_, backlog_.data() + off, len);
        off += n;
        auto err = HTTP_PARSER_ERRNO(&parser_);
        if (err == HPE_PAUSED) {
            if (parser_.upgrade) closing_ = true;  // we speak nothing but HTTP/1.1
            if (!closing_ && turn_responses_ >= limits_.max_responses_per_turn &&
                off < backlog_.size()) {
                backlog_.erase(0, off);
                out_ = nullptr;
                return Next::write;
            }
            continue;
        }
        if (err != HPE_OK) {
            // http-parser's own bound (80 KiB of request line and headers in one buffer) may
            // trip before our callbacks saw the bytes.
            if (err == HPE_HEADER_OVERFLOW && too_large_ == 0) too_large_ = 431;
            if (too_large_ != 0) {
                fail(too_large_, too_large_ == 414   ? "URI Too Long"
                                 : too_large_ == 431 ? "Request Header Fields Too Large"
                                                     : "Payload Too Large");
            } else {
                fail(400, "Bad Request");
            }
            break;
        }
        if (n == 0) break;  // cannot happen without an error; never spin
    }
    backlog_.clear();
    out_ = nullptr;
    return closing_ ? Next::close : Next::read;
}

bool HttpSession::count(size_t len, int status) {
    request_bytes_ += len;
    if (request_bytes_ <= limits_.max_request_bytes) return true;
    too_large_ = status;
    return false;
}

int HttpSession::on_message_begin(http_parser* p) {
    HttpSession* s = session(p);
    s->in_request_ = true;
    s->request_bytes_ = 0;
    s->url_.clear();
    return 0;
}

int HttpSession::on_url(http_parser* p, const char* at, size_t len) {
    HttpSession* s = session(p);
    if (!s->count(len, 414)) return 1;
    s->url_.append(at, len);
    return 0;
}

int HttpSession::on_header_field(http_parser* p, const char*, size_t len) {
    return session(p)->count(len, 431) ? 0 : 1;
}

int HttpSession::on_header_value(http_parser* p, const char*, size_t len) {
    return session(p)->count(len, 431) ? 0 : 1;
}

int HttpSession::on_body(http_parser* p, const char*, size_t len) {
    return session(p)->count(len, 413) ? 0 : 1;
}

int HttpSession::on_message_complete(http_parser* p) {
    HttpSession* s = session(p);
    s->in_request_ = false;
    ++s->turn_responses_;
    ++s->answered_;
    if (http_should_keep_alive(p) == 0) s->closing_ = true;
    http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(s->url_.data(), s->url_.size(), 0, &u) != 0 ||
        (u.field_set & (1 << UF_PATH)) == 0) {
        s->fail(400, "Bad Request");
    } else {
        std::string_view path(s->url_.data() + u.field_data[UF_PATH].off,
                              u.field_data[UF_PATH].len);
        bool head = p->method == HTTP_HEAD;
        if (path != "/metrics") {
            s->respond(404, "Not Found", kTextType, "Not Found: only /metrics is served\n", head,
                       "");
        } else if (p->method != HTTP_GET && !head) {
            s->respond(405, "Method Not Allowed", kTextType, "Method Not Allowed\n", false,
                       "Allow: GET, HEAD\r\n");
        } else {
            s->respond(200, "OK", kMetricsType, s->metrics_body_(), head, "");
        }
    }
    http_parser_pause(p, 1);
    return 0;
}

void HttpSession::respond(int status, std::string_view reason, std::string_view content_type,
                          const std::string& body, bool head, std::string_view extra_headers) {
    std::string& out = *out_;
    out += "HTTP/1.1 ";
    out += std::to_string(status);
    out += ' ';
    out += reason;
    out += "\r\nContent-Type: ";
    out += content_type;
    out += "\r\nContent-Length: ";
    out += std::to_string(body.size());
    out += "\r\n";
    out += extra_headers;
    if (closing_) out += "Connection: close\r\n";
    out += "\r\n";
    if (!head) out += body;
}

void HttpSession::fail(int status, std::string_view reason) {
    closing_ = true;
    in_request_ = false;
    respond(status, reason, kTextType, std::string(reason) + "\n", false, "");
}

}  // namespace calloutd
