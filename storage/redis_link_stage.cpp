// The Redis link stage table (Postfix smtp_proto.c keeps the same kind of table for SMTP), and
// the wording and backoff that go with it.
#include "storage/redis_link_stage.hpp"

#include <algorithm>

namespace calloutd {

namespace {

using Stage = RedisLinkStage;
using Clock = RedisStageClock;
using Failure = RedisStageFailure;

// One row per stage, in RedisLinkStage order. Resolving to subscribing run against one deadline,
// connect_timeout from the lookup to the last handshake reply, because that is what an admin
// sets it for ("how long may reconnecting take"); the sentinels get it each instead, since one
// dead sentinel must not use up the time of the next. Only a failure of a ready link is a
// disconnect; idle and backoff have nothing in flight that could fail.
constexpr RedisLinkStageRow kStages[] = {
    {Stage::idle, "idle", Clock::none, Failure::impossible, "not started"},
    {Stage::discovering, "discovering", Clock::per_sentinel, Failure::connect_failure,
     "asking the sentinels for master {master}"},
    {Stage::resolving, "resolving", Clock::attempt, Failure::connect_failure, "resolving {host}"},
    {Stage::connecting, "connecting", Clock::attempt, Failure::connect_failure,
     "connecting to {endpoint}"},
    {Stage::handshaking, "handshaking", Clock::attempt, Failure::connect_failure,
     "waiting for the {step} reply"},
    {Stage::subscribing, "subscribing", Clock::attempt, Failure::connect_failure,
     "waiting for SUBSCRIBE confirmations"},
    {Stage::ready, "ready", Clock::per_command, Failure::disconnect, "waiting for replies"},
    {Stage::backoff, "backoff", Clock::backoff, Failure::impossible, "waiting to reconnect"},
};

constexpr bool table_in_stage_order() {
    for (std::size_t i = 0; i < std::size(kStages); ++i)
        if (static_cast<std::size_t>(kStages[i].stage) != i) return false;
    return std::size(kStages) == static_cast<std::size_t>(Stage::backoff) + 1;
}
static_assert(table_in_stage_order(), "kStages must list every RedisLinkStage in order");

constexpr bool known_placeholders() {
    for (const auto& row : kStages) {
        std::string_view t = row.doing;
        for (auto open = t.find('{'); open != std::string_view::npos; open = t.find('{')) {
            auto close = t.find('}', open);
            if (close == std::string_view::npos) return false;
            auto name = t.substr(open + 1, close - open - 1);
            if (name != "master" && name != "host" && name != "endpoint" && name != "step")
                return false;
            t = t.substr(close + 1);
        }
    }
    return true;
}
static_assert(known_placeholders(), "kStages: `doing` may use {master} {host} {endpoint} {step}");

}  // namespace

const RedisLinkStageRow& stage_row(RedisLinkStage stage) {
    return kStages[static_cast<std::size_t>(stage)];
}

std::string_view to_string(RedisLinkStage stage) {
    return stage_row(stage).name;
}

std::string describe(RedisLinkStage stage, const RedisStageFacts& facts) {
    std::string_view t = stage_row(stage).doing;
    std::string out;
    for (auto open = t.find('{'); open != std::string_view::npos; open = t.find('{')) {
        auto close = t.find('}', open);
        auto name = t.substr(open + 1, close - open - 1);
        out += t.substr(0, open);
        out += name == "master"     ? facts.master
               : name == "host"     ? facts.host
               : name == "endpoint" ? facts.endpoint
                                    : facts.step;
        t = t.substr(close + 1);
    }
    out += t;
    return out;
}

std::chrono::milliseconds backoff_delay(int failures, std::chrono::milliseconds min,
                                        std::chrono::milliseconds max, std::mt19937_64& rng) {
    auto lo = static_cast<std::uint64_t>(min.count());
    auto hi = static_cast<std::uint64_t>(max.count());
    std::uint64_t delay = std::min(lo << std::clamp(failures, 0, 20), hi);
    std::uniform_int_distribution<std::uint64_t> pick(delay / 2, delay);
    return std::chrono::milliseconds(pick(rng));
}

}  // namespace calloutd
