// The control socket's line protocol (server.control_socket): requests, replies; no I/O.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace calloutd {

// One request per line, "VERB [ARGUMENT]\n" (a CR before the LF is ignored):
//   status                  a human summary of the running daemon
//   cache-get TARGET        the in-memory verdict of an address and the fact about its domain
//   cache-del TARGET        delete the address verdict (user@domain) or the domain fact
//   cache-flush DOMAIN      delete the domain fact and every address verdict of the domain
// Each request gets zero or more "data TEXT" lines and then exactly one final line:
//   ok | none (nothing cached / nothing to delete) | error TEXT
// Requests on one connection are answered in order. calloutd(8) documents the same.
enum class ControlVerb { status, cache_get, cache_del, cache_flush };

struct ControlRequest {
    ControlVerb verb = ControlVerb::status;
    std::string argument;
    friend bool operator==(const ControlRequest&, const ControlRequest&) = default;
};

inline constexpr size_t kMaxControlLine = 1024;

// Parses a line without its LF; nullopt with the reason in `error`.
std::optional<ControlRequest> parse_control_request(std::string_view line, std::string& error);
// The request as sent on the wire, LF included.
std::string encode_control_request(const ControlRequest& request);

enum class ControlStatus { ok, none, error };

struct ControlReply {
    std::vector<std::string> data;
    ControlStatus status = ControlStatus::ok;
    std::string error;  // for ControlStatus::error
    friend bool operator==(const ControlReply&, const ControlReply&) = default;
};

// Data lines and the final line, each ending in LF. Control bytes inside a text become '?', so
// no text can end a line early or forge the final line; a text longer than a line is cut.
std::string encode_control_reply(const ControlReply& reply);

// Splits a byte stream into lines of at most kMaxControlLine bytes (LF and a CR before it
// removed). Once a line is too long the reader reports it and stays failed.
class ControlLineReader {
  public:
    enum class Status { line, need_more, too_long };
    void append(std::string_view bytes) { buf_.append(bytes); }
    Status next(std::string& line);

  private:
    std::string buf_;
    size_t consumed_ = 0;
    bool failed_ = false;
};

// Client side: feeds reply lines; returns the reply once its final line arrived. A line that
// is neither "data ..." nor a final line sets `error` and returns a reply with status error.
class ControlReplyReader {
  public:
    std::optional<ControlReply> line(std::string_view line);

  private:
    ControlReply pending_;
};

}  // namespace calloutd
