// The Redis link stage table: every stage's clock, failure rule and wording, and the backoff.
#include "storage/redis_link_stage.hpp"

#include <gtest/gtest.h>

#include <string>

namespace calloutd {

namespace {

struct StageCase {
    RedisLinkStage stage;
    const char* name;
    RedisStageClock clock;
    RedisStageFailure on_failure;
    const char* doing;  // with the facts below filled in
};

}  // namespace

// What the link's messages say ("timeout while waiting for the PING reply"), what runs in
// each stage, and what a failure there is counted as (connect_failures or disconnects).
TEST(RedisLinkStage, TableRows) {
    using S = RedisLinkStage;
    using C = RedisStageClock;
    using F = RedisStageFailure;
    const StageCase cases[] = {
        {S::idle, "idle", C::none, F::impossible, "not started"},
        {S::discovering, "discovering", C::per_sentinel, F::connect_failure,
         "asking the sentinels for master mymaster"},
        {S::resolving, "resolving", C::attempt, F::connect_failure, "resolving redis.example"},
        {S::connecting, "connecting", C::attempt, F::connect_failure,
         "connecting to redis://:***@redis.example:6379/2"},
        {S::handshaking, "handshaking", C::attempt, F::connect_failure,
         "waiting for the PING reply"},
        {S::subscribing, "subscribing", C::attempt, F::connect_failure,
         "waiting for SUBSCRIBE confirmations"},
        {S::ready, "ready", C::per_command, F::disconnect, "waiting for replies"},
        {S::backoff, "backoff", C::backoff, F::impossible, "waiting to reconnect"},
    };
    RedisStageFacts facts{"mymaster", "redis.example", "redis://:***@redis.example:6379/2", "PING"};
    for (const auto& c : cases) {
        const RedisLinkStageRow& row = stage_row(c.stage);
        EXPECT_EQ(row.stage, c.stage) << c.name;
        EXPECT_EQ(to_string(c.stage), c.name);
        EXPECT_EQ(row.clock, c.clock) << c.name;
        EXPECT_EQ(row.on_failure, c.on_failure) << c.name;
        EXPECT_EQ(describe(c.stage, facts), c.doing) << c.name;
    }
}

// The connect deadline covers one attempt from the first stage on its clock to the last, with
// no other stage in between: entering and leaving it once is what RedisLinkMachine relies on.
TEST(RedisLinkStage, TheAttemptClockCoversOneContiguousRun) {
    int runs = 0;
    bool inside = false;
    for (int i = 0; i <= static_cast<int>(RedisLinkStage::backoff); ++i) {
        bool on = stage_row(static_cast<RedisLinkStage>(i)).clock == RedisStageClock::attempt;
        if (on && !inside) ++runs;
        inside = on;
    }
    EXPECT_EQ(runs, 1);
}

TEST(RedisLinkStage, DescribeFillsEveryPlaceholderAndOnlyThose) {
    RedisStageFacts facts{"m", "h", "e", "AUTH"};
    EXPECT_EQ(describe(RedisLinkStage::handshaking, facts), "waiting for the AUTH reply");
    facts.step = "SCRIPT LOAD";
    EXPECT_EQ(describe(RedisLinkStage::handshaking, facts), "waiting for the SCRIPT LOAD reply");
    facts = RedisStageFacts{"{host}", "", "", ""};  // a value is never expanded again
    EXPECT_EQ(describe(RedisLinkStage::discovering, facts),
              "asking the sentinels for master {host}");
}

// min·2^n capped at max, then a uniform pick in [delay/2, delay].
TEST(RedisLinkStage, BackoffDoublesToTheCapWithJitterInTheUpperHalf) {
    using std::chrono::milliseconds;
    std::mt19937_64 rng(42);
    const milliseconds min{100}, max{5000};
    for (int failures = 0; failures < 40; ++failures) {
        long long delay = std::min<long long>(100LL << std::min(failures, 20), 5000);
        for (int draw = 0; draw < 50; ++draw) {
            auto d = backoff_delay(failures, min, max, rng).count();
            EXPECT_GE(d, delay / 2) << failures;
            EXPECT_LE(d, delay) << failures;
        }
    }
    // Many failures cannot shift past the cap (no overflow).
    EXPECT_LE(backoff_delay(1'000'000, min, max, rng), max);
    // Seeded: the same sequence every time.
    std::mt19937_64 a(7), b(7);
    for (int i = 0; i < 10; ++i)
        EXPECT_EQ(backoff_delay(i, min, max, a), backoff_delay(i, min, max, b));
}

}  // namespace calloutd
