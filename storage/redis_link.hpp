// One Redis connection kept up: the connect/reconnect state machine behind each of RedisClient's
// two links, with its stage table, handshake, command deadlines and pub/sub subscriptions.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "storage/redis_link_stage.hpp"
#include "storage/redis_reply.hpp"
#include "storage/redis_sentinel.hpp"
#include "storage/redis_url.hpp"
#include "storage/uv_hiredis.hpp"
#include "util/deferred_queue.hpp"
#include "util/uv_timer.hpp"

namespace calloutd {

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

using RedisReplyCallback = std::function<void(RedisResult)>;
using RedisMessageCallback = std::function<void(const std::string& channel, const std::string&)>;
using RedisStateCallback = std::function<void(const RedisStateChange&)>;

struct RedisScript {
    std::string body;
    std::string sha;  // empty until a SCRIPT LOAD answered
};

// What the links of one RedisClient share. Owned by the client, it outlives both links.
struct RedisShared {
    RedisShared(uv_loop_t* loop, RedisOptions options, RedisEndpoint endpoint,
                std::vector<RedisHostPort> sentinels);

    uv_loop_t* loop;
    RedisOptions options;
    RedisEndpoint endpoint;                // the url's; with sentinels only its login and db
    std::vector<RedisHostPort> sentinels;  // parsed options.sentinels
    std::map<std::string, RedisScript, std::less<>> scripts;  // SCRIPT LOADed at every connect
    std::map<std::string, RedisMessageCallback, std::less<>> channels;  // SUBSCRIBEd likewise
    RedisStateCallback on_state;
    RedisStats stats;
    std::mt19937_64 rng;  // backoff jitter
    // The only way anything reaches user code: replies, messages and state changes are queued
    // here and run on a later loop turn, never from inside hiredis or the call that caused them.
    DeferredQueue queue;
};

// An eval() that can still be sent once more as EVAL, after a NOSCRIPT error.
struct EvalRetry {
    std::string script;             // the registered name
    std::vector<std::string> tail;  // numkeys, keys, args
};

// One link. Not thread-safe; use from the loop's thread.
//
// Late callbacks have one rule. Everything that can call into the link after the fact belongs
// to the current Attempt: the hiredis context (UvHiredis), the connect and command deadlines
// (UvTimer), the sentinel round, and the name lookup in libuv's thread pool, which cannot be
// cancelled and so holds only a weak_ptr to its attempt. Ending the attempt (a failure, or
// destroying the link) destroys it, and with it every source of late callbacks: a timer or a
// context silences itself when destroyed, and the lookup finds its attempt expired. A new
// attempt is a new object, so nothing from an older one can reach it. One level up the rule is
// the same: what reaches user code waits in RedisShared::queue, which dies with the client.
class RedisLinkMachine final : private UvHiredis::Events {
  public:
    RedisLinkMachine(RedisShared& shared, RedisLink role);
    ~RedisLinkMachine();
    RedisLinkMachine(const RedisLinkMachine&) = delete;
    RedisLinkMachine& operator=(const RedisLinkMachine&) = delete;

    // Leaves idle for the first attempt; afterwards the link reconnects by itself.
    void start();

    RedisLinkStage stage() const { return stage_; }
    bool started() const { return stage_ != RedisLinkStage::idle; }
    bool ready() const { return stage_ == RedisLinkStage::ready; }
    // What the link is doing now, in the stage table's words.
    std::string doing() const;
    const std::string& last_error() const { return last_error_; }
    // Commands sent and not yet answered or failed (handshake commands included).
    std::size_t in_flight() const;
    // The server: the url's, or the master most recently named by a sentinel.
    const RedisEndpoint& target() const { return target_; }

    // Commands link, ready() only: sends a user command. Its callback is queued with the result
    // (keyed by `id`, for RedisClient::cancel()): the reply, a timeout at `deadline` (uv_now
    // milliseconds), or the connection's end.
    void send(std::uint64_t id, const std::vector<std::string_view>& args, std::uint64_t deadline,
              RedisReplyCallback callback, std::optional<EvalRetry> retry);
    // The callback of `id` will never be queued. False if it is not in flight here.
    bool cancel(std::uint64_t id);
    // Commands link: SCRIPT LOAD of a registered script now, if connected.
    void load_script(const std::string& name);
    // Pub/sub link: follows RedisShared::channels for a channel added or removed.
    void subscribe(const std::string& channel);
    void unsubscribe(const std::string& channel);

  private:
    struct Attempt;
    struct Lookup;
    struct Command {
        RedisReplyCallback callback;
        std::uint64_t deadline = 0;
        std::optional<EvalRetry> retry;  // eval() before its NOSCRIPT retry
    };
    // A handshake command or SCRIPT LOAD: answered here, never failed to anyone.
    struct Step {
        std::string name;  // "AUTH", "PING", ... as "waiting for the ... reply" names it
        std::function<void(RedisResult)> on_reply;
    };

    void begin_attempt();
    void on_master(RedisSentinel::Answer answer);
    void connect_to_target();
    void resolve();
    static void on_resolved(uv_getaddrinfo_t* req, int status, addrinfo* res);
    void open(const std::string& address);
    void start_handshake();
    bool send_step(const std::vector<std::string_view>& args, std::string name,
                   std::function<void(RedisResult)> on_reply);
    bool handshake_step(const std::vector<std::string_view>& args, const std::string& name,
                        std::function<void(RedisResult)> on_ok);
    bool send_script_load(const std::string& name);
    void subscribe_all();
    void become_ready();
    void enter(RedisLinkStage next);
    void fail(const std::string& reason, std::uint64_t expired = 0);
    void report(bool up, const std::string& reason);
    void deliver(std::uint64_t id, RedisReplyCallback callback, RedisResult result);
    void handle_command_reply(std::uint64_t tag, const redisReply& reply);
    void handle_pubsub(const redisReply& reply);
    void arm_command_deadline();
    void on_command_deadline();
    std::string where() const { return to_display_string(target_); }

    void on_connected() override;
    void on_reply(std::uint64_t tag, const redisReply& reply) override;
    void on_connect_failed(const std::string& error) override;
    void on_lost(const std::string& error) override;

    RedisShared& shared_;
    RedisLink role_;
    RedisEndpoint target_;
    std::unique_ptr<RedisSentinel> sentinel_;  // with redis.sentinels only
    RedisLinkStage stage_ = RedisLinkStage::idle;
    std::shared_ptr<Attempt> attempt_;  // none while idle and in backoff
    int failures_ = 0;                  // consecutive failed attempts, for the backoff
    std::uint64_t next_step_tag_;       // handshake tags: above every user id; 0 is pub/sub
    enum class Reported { none, up, down } reported_ = Reported::none;
    std::string last_error_;
    UvTimer backoff_timer_;
};

}  // namespace calloutd
