// The Postfix policy delegation protocol: request value, incremental reader, reply encoding.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace calloutd {

// How many attributes the reader knows (policy/request.cpp lists them): each may appear once in
// a request (a repeat is refused); those PolicyRequest has a field for are kept. Every other
// attribute is skipped.
inline constexpr size_t kPolicyAttributes = 19;

// The attributes of a Postfix 3.x policy request that calloutd uses. The reader also knows
// protocol_name, recipient, recipient_count, client_name, reverse_client_name, helo_name,
// sasl_sender, encryption_protocol, server_address, server_port and policy_context: it refuses
// a request that repeats one, but nothing decides on them, so they are not copied out of every
// request (add a field here and in policy/request.cpp's table when a feature needs one).
struct PolicyRequest {
    std::string request;  // must be "smtpd_access_policy"
    std::string protocol_state;
    std::string sender;
    std::string client_address;
    std::string queue_id;
    std::string instance;
    std::string sasl_method;
    std::string sasl_username;
};

// Why a request stream was refused; the metrics count violations by this kind.
enum class ProtocolError {
    binary,              // a NUL or other control byte
    line_too_long,       // server.max_line_bytes
    request_too_large,   // server.max_request_bytes
    truncated,           // connection closed in the middle of a line
    bad_attribute,       // a line without '=', an empty name, or a repeated attribute
    not_policy_request,  // request= missing or not smtpd_access_policy
    invalid_utf8,        // an attribute value is not UTF-8 (answered, then closed)
    request_timeout,     // a request not complete within server.request_timeout (slowloris)
};
inline constexpr size_t kProtocolErrorKinds = 8;
std::string_view to_string(ProtocolError e);

struct ReaderLimits {
    size_t max_line_bytes = 4096;
    size_t max_request_bytes = 16384;
};

// Splits a byte stream into requests. Bytes may arrive in any chunking; the outcome for a
// stream never depends on where it was split. Once an error is reported the reader is dead.
class RequestReader {
  public:
    enum class Status { need_more, request, error };

    explicit RequestReader(ReaderLimits limits = {}) : limits_(limits) {}

    void append(std::string_view bytes) { buf_.append(bytes.data(), bytes.size()); }
    // Extracts the next complete request into `out`, or says more bytes are needed, or
    // reports a protocol violation (reason in error()).
    Status next(PolicyRequest& out);
    // At end of input: a final request whose lines are complete but which lacks the empty
    // terminator line (a hand-written Exim readsocket string) is accepted; a partial line is
    // an error. Returns need_more when nothing was pending.
    Status finish(PolicyRequest& out);

    const std::string& error() const { return error_; }
    ProtocolError error_kind() const { return error_kind_; }
    // About the request next() or finish() just returned: empty, or why it is suspicious but
    // still answerable ("invalid UTF-8 in attribute 'helo_name'"); the caller answers it and
    // then closes the connection.
    const std::string& warning() const { return warning_; }
    // Bytes received but not yet consumed as a complete request.
    size_t pending_bytes() const { return buf_.size() - consumed_; }

  private:
    static constexpr size_t kNone = static_cast<size_t>(-1);
    struct Span {
        uint32_t begin = 0, end = 0;  // a value's bytes, relative to consumed_
    };

    Status fail(ProtocolError kind, std::string reason);
    // Judges the complete, non-empty line [start, end) (CRLF already cut), whose first '=' is
    // at `eq` (kNone: none), and notes its value; `maybe_high`: the request may hold a byte
    // >= 0x80.
    Status take_line(size_t start, size_t end, size_t eq, bool maybe_high);
    // The empty line: fills `out` from the noted spans.
    Status complete_request(PolicyRequest& out);
    void compact();

    ReaderLimits limits_;
    std::string buf_;
    size_t consumed_ = 0;    // start of the request being assembled
    size_t scanned_ = 0;     // bytes of the current request already checked
    size_t line_start_ = 0;  // where the line containing scanned_ starts
    size_t eq_ = kNone;      // the current line's first '=', once seen
    uint64_t high_ = 0;      // nonzero: the request may hold a byte >= 0x80
    uint32_t present_ = 0;   // bit per attribute of the request being assembled
    std::array<Span, kPolicyAttributes> values_{};
    std::string error_;
    std::string warning_;
    std::string pending_warning_;  // the request being assembled's warning, so far
    ProtocolError error_kind_ = ProtocolError::binary;
    bool dead_ = false;
};

// "action=TEXT\n\n"
std::string encode_reply(std::string_view action);
// The same into `out` (replaced; its capacity is reused).
void encode_reply(std::string_view action, std::string& out);

}  // namespace calloutd
