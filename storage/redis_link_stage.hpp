// The stages of a Redis link, in one ordered table: which timer runs, what a failure counts as,
// and what the link is doing, in the words of "timeout while ...". Pure: no I/O, no clock.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>

namespace calloutd {

// A link goes (discovering →) resolving → connecting → handshaking → (subscribing →) ready, and
// from a failure in any of them to backoff and round again.
enum class RedisLinkStage : std::uint8_t {
    idle,         // not started
    discovering,  // asking the sentinels where the master is (RedisSentinel)
    resolving,    // host name → address, in libuv's thread pool
    connecting,   // non-blocking TCP or unix connect
    handshaking,  // AUTH, SELECT, SCRIPT LOAD, ROLE, PING pipelined behind the connect
    subscribing,  // pub/sub: waiting for every SUBSCRIBE confirmation
    ready,        // usable
    backoff,      // waiting before the next attempt
};
std::string_view to_string(RedisLinkStage stage);

// Which timer runs while a link is in a stage.
enum class RedisStageClock : std::uint8_t {
    none,
    per_sentinel,  // RedisSentinel's own: connect_timeout for each sentinel asked
    attempt,       // connect_timeout, one deadline from the first stage on it to the last
    per_command,   // command_timeout of each command in flight
    backoff,       // the reconnect delay
};

// What a failure in a stage counts as. Either way the commands in flight fail, the attempt
// ends and the link backs off.
enum class RedisStageFailure : std::uint8_t { impossible, connect_failure, disconnect };

struct RedisLinkStageRow {
    RedisLinkStage stage;
    std::string_view name;
    RedisStageClock clock;
    RedisStageFailure on_failure;
    // What the link is doing, for "timeout while ..." and status lines; {master}, {host},
    // {endpoint} and {step} are filled in by describe().
    std::string_view doing;
};
const RedisLinkStageRow& stage_row(RedisLinkStage stage);

struct RedisStageFacts {
    std::string_view master;    // the sentinels' master name
    std::string_view host;      // the host name being resolved
    std::string_view endpoint;  // the server, as to_display_string() shows it
    std::string_view step;      // the oldest unanswered handshake command ("PING")
};
// The stage's `doing` with the facts filled in: "waiting for the PING reply".
std::string describe(RedisLinkStage stage, const RedisStageFacts& facts);

// The reconnect delay after `failures` consecutive failed attempts: min·2^failures capped at
// max, then a uniform pick in [delay/2, delay] so a fleet does not reconnect in step.
std::chrono::milliseconds backoff_delay(int failures, std::chrono::milliseconds min,
                                        std::chrono::milliseconds max, std::mt19937_64& rng);

}  // namespace calloutd
