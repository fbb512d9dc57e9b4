// The value a Redis command ends with: the reply (deep-copied out of hiredis) and how it ended.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

struct redisReply;
struct redisReader;

namespace calloutd {

// A reply deep-copied out of hiredis: callers never hold hiredis memory.
class RedisReply {
  public:
    enum class Type : std::uint8_t { nil, integer, string, status, error, array };

    RedisReply() = default;  // nil
    static RedisReply integer(long long value);
    static RedisReply string(std::string text);
    static RedisReply status(std::string text);
    static RedisReply error(std::string text);
    static RedisReply array(std::vector<RedisReply> elements);
    // Deep copy of a hiredis reply (nullptr, and types RESP2 does not have, give nil).
    static RedisReply from_hiredis(const redisReply* reply);

    Type type() const { return type_; }
    bool is_nil() const { return type_ == Type::nil; }
    bool is_integer() const { return type_ == Type::integer; }
    bool is_string() const { return type_ == Type::string; }
    bool is_status() const { return type_ == Type::status; }
    bool is_error() const { return type_ == Type::error; }
    bool is_array() const { return type_ == Type::array; }
    long long as_integer() const { return integer_; }                      // 0 unless an integer
    const std::string& text() const { return text_; }                      // string, status, error
    const std::vector<RedisReply>& elements() const { return elements_; }  // array

    friend bool operator==(const RedisReply&, const RedisReply&) = default;

  private:
    Type type_ = Type::nil;
    long long integer_ = 0;
    std::string text_;
    std::vector<RedisReply> elements_;
};

std::string_view to_string(RedisReply::Type t);

// The most elements one array of a reply may have (calloutd's largest are SCAN pages). hiredis
// 0.14 allocates an array's element pointers as soon as it reads "*N", so a corrupted or
// hostile server announcing "*999999999" would cost 8 GB before sending anything else.
inline constexpr int kMaxReplyElements = 1 << 20;
// Makes `reader` (a hiredis context's, or one of redisReaderCreate()) refuse larger arrays and
// negative counts: hiredis then fails the read ("Out of memory") and the link is rebuilt.
void bound_reply_arrays(redisReader* reader);

// How a command ended. Everything but `ok` means "Redis did not answer this usefully": the
// caller answers from local state (degraded mode) and counts it under this name.
enum class RedisStatus {
    ok,             // `reply` holds the answer (error replies nested in arrays stay in it)
    server_error,   // Redis answered with an error reply; `error` is its text ("WRONGTYPE ...")
    timeout,        // no reply within RedisOptions::command_timeout; the connection is rebuilt
    disconnected,   // the connection broke while the command was in flight
    not_connected,  // not sent: no usable connection right now (failed fast, never queued)
};
std::string_view to_string(RedisStatus s);

struct RedisResult {
    RedisStatus status = RedisStatus::ok;
    RedisReply reply;   // meaningful when ok()
    std::string error;  // otherwise: Redis's error text, or what failed and in which stage
    bool ok() const { return status == RedisStatus::ok; }

    // A top-level error reply becomes server_error with its text; anything else is ok.
    static RedisResult from_hiredis(const redisReply& reply);
    static RedisResult failure(RedisStatus status, std::string why);
};

}  // namespace calloutd
