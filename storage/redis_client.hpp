// An asynchronous Redis client on the daemon's libuv loop: commands, Lua scripts, pub/sub.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <uv.h>

#include "callout/uv_timer.hpp"
#include "storage/redis_url.hpp"

struct redisAsyncContext;
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
    // Deep copy of a hiredis reply (nullptr gives nil).
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
};

struct RedisOptions {
    std::string url;  // see parse_redis_url()
    // Deadline of one command from the moment it is issued (an EVALSHA retried after NOSCRIPT
    // keeps its first deadline). On expiry the connection is considered broken and rebuilt.
    std::chrono::milliseconds command_timeout{250};
    // Name resolution + TCP connect + AUTH, SELECT, SCRIPT LOAD and PING must finish in this.
    std::chrono::milliseconds connect_timeout{1000};
    // Reconnect delay: min·2^n capped at max, then a uniform pick in [delay/2, delay].
    std::chrono::milliseconds backoff_min{100};
    std::chrono::milliseconds backoff_max{5000};
    std::optional<std::uint64_t> jitter_seed;  // unset = std::random_device
    // Redis Sentinels ("IP:PORT" or "[V6]:PORT") asked in turn for the address of master
    // `master_name` before every connect attempt, so a failover is followed on reconnect.
    // With sentinels, the url's host and port are ignored; its user, password and db apply to
    // the master (sentinels themselves are asked without AUTH).
    std::vector<std::string> sentinels;
    std::string master_name;
};

// Which of the two connections a state change is about. A subscribed hiredis context can run
// nothing but (UN)SUBSCRIBE, so pub/sub has its own.
enum class RedisLink { commands, pubsub };
std::string_view to_string(RedisLink l);

struct RedisStateChange {
    RedisLink link = RedisLink::commands;
    bool connected = false;
    std::string reason;  // down: what failed, naming the stage; up: the endpoint (and sentinel)
};

struct RedisStats {
    std::uint64_t connects = 0;          // handshakes completed on the commands link
    std::uint64_t connect_failures = 0;  // attempts that never became ready (both links)
    std::uint64_t disconnects = 0;       // ready connections lost (both links)
    std::uint64_t timeouts = 0;          // commands that hit their deadline
    std::uint64_t not_connected = 0;     // commands failed fast while disconnected
    std::uint64_t script_reloads = 0;    // NOSCRIPT answered by an EVAL retry
    std::uint64_t messages = 0;          // pub/sub messages delivered
};

// One Redis server (with sentinels: whichever master they name at each connect), two
// connections (commands, pub/sub), on a caller-supplied loop.
// Not thread-safe; use from the loop's thread.
//
// Callbacks (replies, messages, state changes) always run from the loop, never from inside
// the call that issued the work, and never from inside hiredis: they are queued and delivered
// on a later loop turn, so any callback may issue commands or destroy the client.
//
// Destroying the client with commands in flight is allowed: their callbacks are NOT invoked
// (nor pending messages or state changes). After destroying it the caller must let the loop
// run once more so libuv can finish closing handles (and a name lookup still running in the
// libuv thread pool can release its request).
//
// hiredis 0.14 writes with write(2), not MSG_NOSIGNAL: the process must ignore SIGPIPE (the
// daemon does) or a write to a reset connection kills it.
class RedisClient {
  public:
    using Id = std::uint64_t;  // never reused; 0 is never a valid id
    using ReplyCallback = std::function<void(RedisResult)>;
    using MessageCallback = std::function<void(const std::string& channel, const std::string&)>;
    using StateCallback = std::function<void(const RedisStateChange&)>;

    // Returns nullptr and sets error (one line) on a bad URL or bad timeouts.
    static std::unique_ptr<RedisClient> create(uv_loop_t* loop, RedisOptions options,
                                               std::string& error);
    ~RedisClient();
    RedisClient(const RedisClient&) = delete;
    RedisClient& operator=(const RedisClient&) = delete;

    // Called once per change of a link's state (up, or down with a reason), not once per
    // failed reconnect attempt; the first failed attempt after start() reports "down".
    void set_state_callback(StateCallback callback);
    // Scripts are loaded (SCRIPT LOAD) during every connect; one registered while connected is
    // loaded at once. Registering a name again replaces the body.
    void register_script(std::string name, std::string body);
    // Connects both links (pub/sub only once something is subscribed) and keeps reconnecting.
    void start();

    // The commands link has completed its handshake and is usable.
    bool is_connected() const;
    // The pub/sub link is up and every subscribed channel is confirmed.
    bool is_subscribed() const;

    // Sends one command (binary-safe arguments, copied before this returns, so temporaries
    // are fine). Without a usable connection the callback gets not_connected on a later loop
    // turn: nothing is queued. The deadline counts from the loop's cached time (uv_now).
    Id command(const std::vector<std::string_view>& args, ReplyCallback callback);
    // EVALSHA of a registered script (EVAL when its SHA1 is not known yet); a NOSCRIPT error
    // is answered by one EVAL retry, which also puts the script back into the server's cache.
    // An unregistered name is a programming error and aborts.
    Id eval(std::string_view script, const std::vector<std::string_view>& keys,
            const std::vector<std::string_view>& args, ReplyCallback callback);
    // The callback of `id` will never run; the command itself may still reach Redis.
    // Returns false if it already ran or the id is unknown.
    bool cancel(Id id);

    // One handler per channel (subscribing again replaces it). Subscriptions survive
    // reconnects; messages published while the pub/sub link is down are lost (at most once),
    // so a waiter must also poll or rely on its own deadline.
    void subscribe(const std::string& channel, MessageCallback on_message);
    void unsubscribe(const std::string& channel);

    // Commands sent and not yet answered or failed (handshake commands included).
    std::size_t in_flight() const;
    // What last went wrong on the commands link (empty if nothing yet).
    const std::string& last_error() const;
    const RedisStats& stats() const { return stats_; }
    // The server of the commands link: with sentinels, the master most recently named.
    const RedisEndpoint& endpoint() const;

    // Constructible only through create(); the key keeps the constructor out of reach.
    class Key {
        friend class RedisClient;
        Key() = default;
    };
    RedisClient(Key, uv_loop_t* loop, RedisOptions options, RedisEndpoint endpoint,
                std::vector<RedisHostPort> sentinels);

  private:
    class Link;
    struct Connection;
    struct Script {
        std::string body;
        std::string sha;  // empty until a SCRIPT LOAD answered
    };
    struct Ready {
        Id id = 0;  // 0 for messages and state changes (not cancellable)
        std::function<void()> run;
    };

    void post(Id id, std::function<void()> run);
    void drain();
    Id fail_fast(ReplyCallback callback);
    std::chrono::milliseconds next_backoff(int attempt);
    Link& pubsub_link();

    uv_loop_t* loop_;
    RedisOptions options_;
    RedisEndpoint endpoint_;
    std::vector<RedisHostPort> sentinels_;
    StateCallback on_state_;
    std::map<std::string, Script, std::less<>> scripts_;
    std::map<std::string, MessageCallback, std::less<>> channels_;
    bool started_ = false;
    Id next_id_ = 1;
    std::mt19937_64 rng_;
    RedisStats stats_;
    std::deque<Ready> ready_;
    bool drain_armed_ = false;
    // Contexts abandoned by a link; freed from drain(), never from inside a hiredis callback.
    std::vector<std::unique_ptr<Connection>> graveyard_;
    UvTimer drain_timer_;
    std::unique_ptr<Link> commands_;
    std::unique_ptr<Link> pubsub_;
    // Expires when the client is destroyed: drain() and name lookups notice it.
    std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

}  // namespace calloutd
