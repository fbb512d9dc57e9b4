// Redis Sentinel discovery: which address master NAME has now, asked of each sentinel in turn.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "storage/redis_url.hpp"
#include "storage/uv_hiredis.hpp"
#include "util/uv_timer.hpp"

namespace calloutd {

// The sentinels of one master, and which of them answered last (asked first next time).
// Not thread-safe; use from the loop's thread.
class RedisSentinel {
  public:
    struct Answer {
        bool found = false;
        RedisHostPort master;  // found: the address named (normally an IP literal)
        std::string error;     // otherwise: "no sentinel named master M: S1: why; S2: why"
    };
    using Done = std::function<void(Answer)>;

    // `sentinels`: at least one. `timeout`: how long one sentinel gets to accept the connection
    // and answer.
    RedisSentinel(uv_loop_t* loop, std::vector<RedisHostPort> sentinels, std::string master_name,
                  std::chrono::milliseconds timeout);

    class Round;
    // One round: each sentinel asked at most once, on a short-lived connection (without AUTH),
    // starting with the one that answered last; the first address named ends it. `done` runs
    // once, from the loop, never from inside discover(), and not at all once the Round is
    // destroyed: destroying it is how a round is cancelled.
    std::unique_ptr<Round> discover(Done done);

    const std::string& master_name() const { return master_name_; }
    // "IP:PORT" ("[V6]:PORT") of the sentinel asked now, or of the one that answered last.
    std::string current() const;

  private:
    uv_loop_t* loop_;
    std::vector<RedisHostPort> sentinels_;
    std::string master_name_;
    std::chrono::milliseconds timeout_;
    std::size_t current_ = 0;
};

class RedisSentinel::Round final : private UvHiredis::Events {
  public:
    Round(RedisSentinel& sentinels, Done done);
    Round(const Round&) = delete;
    Round& operator=(const Round&) = delete;
    ~Round() = default;

  private:
    void ask(std::size_t asked);
    void give_up_on_current(const std::string& why);
    void finish(Answer answer);

    void on_connected() override {}
    void on_reply(std::uint64_t tag, const redisReply& reply) override;
    void on_connect_failed(const std::string& error) override;
    void on_lost(const std::string& error) override;

    RedisSentinel& sentinels_;
    Done done_;
    std::size_t asked_ = 0;  // sentinels asked in this round
    std::string errors_;     // why each of them gave no address
    UvTimer timer_;          // the current sentinel's timeout, then the hop to the next one
    std::unique_ptr<UvHiredis> conn_;  // to the current sentinel
};

}  // namespace calloutd
