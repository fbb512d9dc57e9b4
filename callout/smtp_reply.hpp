// Incremental SMTP reply parser (RFC 5321 section 4.2, RFC 3463 enhanced codes): bytes in, replies
// out.
#pragma once

#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "callout/transcript.hpp"

namespace calloutd {

// Bounds on what one peer may make us buffer.
struct ReplyLimits {
    std::size_t max_line = 2048;    // octets of one line, excluding CRLF
    std::size_t max_reply = 65536;  // octets of one reply (all lines, including line ends)
};

// Parses the enhanced status code at the start of `text` ("5.1.1 no such user" -> "5.1.1") when
// its class digit equals `code`'s first digit; empty otherwise.
std::string parse_enhanced_code(int code, std::string_view text);

// Feed bytes in arbitrary chunks; take complete replies with next(). Errors are sticky: once
// failed(), further input is ignored; replies completed before the error stay available from
// next(). The parser is pure (no I/O, no clock), and the sequence of replies and the error do not
// depend on how the input was split or when next() was called.
// Memory: the reply being assembled is bounded by the limits; complete replies wait for next(),
// so a caller holds at most what it fed since it last took them (SmtpProbe takes them after
// every read and treats any reply beyond the one it asked for as a pipelining violation).
class SmtpReplyParser {
  public:
    explicit SmtpReplyParser(ReplyLimits limits = {}) : limits_(limits) {}

    // Consumes all of `bytes` (or stops at the first error).
    void feed(std::string_view bytes);
    // The oldest complete reply not yet taken.
    std::optional<SmtpReply> next();
    // True when bytes beyond the replies already taken are buffered: a complete reply not yet
    // taken or part of a line. After taking the reply to the last command, this means the peer
    // sent something nobody asked for (pipelining violation).
    bool has_pending() const;

    bool failed() const { return !error_.empty(); }
    // Why parsing failed: "line too long (over 2048 octets)", "reply code mismatch ...".
    const std::string& error() const { return error_; }

    // Forget everything (a new connection).
    void reset();

  private:
    void end_line();
    void fail(std::string reason);

    ReplyLimits limits_;
    std::string line_;              // current partial line, without line end
    bool saw_cr_ = false;           // last byte was CR, LF must follow
    std::optional<SmtpReply> cur_;  // multi-line reply being assembled
    std::size_t cur_bytes_ = 0;     // octets of cur_ so far, including line ends
    std::deque<SmtpReply> ready_;   // complete replies not yet taken
    std::string error_;
};

}  // namespace calloutd
