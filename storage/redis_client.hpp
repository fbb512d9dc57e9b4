// An asynchronous Redis client on the daemon's libuv loop: commands, Lua scripts, pub/sub.
//
// The parts: redis_reply.hpp (the reply value), uv_hiredis.hpp (hiredis on libuv),
// redis_sentinel.hpp (where the master is), redis_link.hpp (one connection kept up, with its
// stage table), and this thin client over two links.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "storage/redis_link.hpp"
#include "storage/redis_reply.hpp"
#include "storage/redis_url.hpp"

namespace calloutd {

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
    using ReplyCallback = RedisReplyCallback;
    using MessageCallback = RedisMessageCallback;
    using StateCallback = RedisStateCallback;

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
    const RedisStats& stats() const { return shared_.stats; }
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
    Id fail_fast(ReplyCallback callback);
    RedisLinkMachine& pubsub_link();

    // Declared first, destroyed last: the links refer to it, and destroying its queue drops
    // every callback not yet run.
    RedisShared shared_;
    RedisLinkMachine commands_;
    std::unique_ptr<RedisLinkMachine> pubsub_;  // created by the first subscribe
    bool started_ = false;
    Id next_id_ = 1;
};

}  // namespace calloutd
