// One HTTP/1.1 connection of the metrics listener as a pure core: bytes in, response bytes out.
#pragma once

#include <http_parser.h>

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace calloutd {

struct HttpLimits {
    // Request line and headers (and a body, which GET does not need) of one request.
    size_t max_request_bytes = 8192;
    // Pipelined requests answered per feed()/resume(); the rest waits until the responses have
    // been written, so one packet full of requests cannot keep the loop busy.
    size_t max_responses_per_turn = 4;
};

// Parses requests with Node's http-parser and answers them in order: GET or HEAD of /metrics
// (query ignored) gets 200 with the handler's body in the Prometheus text format; another path
// 404; another method on /metrics 405 with Allow. A malformed or oversized request gets 400,
// 414 (request line), 431 (headers) or 413 (body) and the connection closes. Keep-alive as
// HTTP/1.1 says (HTTP/1.0 and "Connection: close" close after the response).
class HttpSession {
  public:
    using Handler = std::function<std::string()>;
    enum class Next {
        read,   // write `out` (if anything) and read more
        write,  // requests are waiting: write `out`, then call resume() before reading again
        close,  // write `out`, then close the connection
    };

    HttpSession(HttpLimits limits, Handler metrics_body);
    HttpSession(const HttpSession&) = delete;
    HttpSession& operator=(const HttpSession&) = delete;

    // Takes bytes from the client; responses are appended to `out`.
    Next feed(std::string_view bytes, std::string& out);
    // Goes on with requests left waiting by Next::write.
    Next resume(std::string& out);
    // True while a request has begun but is not complete (the listener bounds how long).
    bool in_request() const { return in_request_; }
    size_t requests_answered() const { return answered_; }

  private:
    static int on_message_begin(http_parser* p);
    static int on_url(http_parser* p, const char* at, size_t len);
    static int on_header_field(http_parser* p, const char* at, size_t len);
    static int on_header_value(http_parser* p, const char* at, size_t len);
    static int on_body(http_parser* p, const char* at, size_t len);
    static int on_message_complete(http_parser* p);

    Next run(std::string& out);
    bool count(size_t len, int status);
    void respond(int status, std::string_view reason, std::string_view content_type,
                 const std::string& body, bool head, std::string_view extra_headers);
    void fail(int status, std::string_view reason);

    HttpLimits limits_;
    Handler metrics_body_;
    http_parser parser_{};
    http_parser_settings settings_{};
    std::string backlog_;  // bytes received and not yet parsed
    std::string url_;
    std::string* out_ = nullptr;
    size_t request_bytes_ = 0;
    size_t turn_responses_ = 0;
    size_t answered_ = 0;
    int too_large_ = 0;  // status chosen by count() when a limit was crossed
    bool in_request_ = false;
    bool closing_ = false;
};

}  // namespace calloutd
