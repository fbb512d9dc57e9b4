// server.idle_timeout counts from a connection's last activity: requests and replies postpone
// the close, a connection busy when the timer fires is closed once it has been idle that long.
#include <gtest/gtest.h>
#include <uv.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "daemon/config.hpp"
#include "daemon/server.hpp"
#include "policy/decider.hpp"
#include "support/policy_client.hpp"
#include "support/timer_verifier.hpp"

namespace calloutd {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kSlow = 2500ms;

// Answers "slow@..." after kSlow, everything else at once.
std::variant<SenderVerifier::Immediate, test::TimerVerifier::Later> slow_or_cached(
    const PolicyRequest& req) {
    if (!req.sender.starts_with("slow@"))
        return SenderVerifier::Immediate{{VerdictClass::valid, "test"}, DecisionSource::cache};
    return test::TimerVerifier::Later{kSlow, {VerdictClass::valid, "slow"}};
}

// Runs an in-process server with idle_timeout = 1s while `client` runs on its own thread.
template <class Fn>
void with_server(Fn client) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    Config cfg = std::get<Config>(
        load_config_text("[server]\nlisten = [\"inet:127.0.0.1:0\"]\nidle_timeout = \"1s\"\n"
                         "reply_timeout = \"10s\"\n",
                         "t.toml"));
    test::TimerVerifier verifier(&loop, slow_or_cached);
    Decider decider(cfg.policy, &verifier);
    Server server(&loop, decider, cfg.server);
    ASSERT_TRUE(server.listen());
    uint16_t port = static_cast<uint16_t>(
        std::stoi(server.bound()[0].substr(server.bound()[0].rfind(':') + 1)));
    std::atomic<bool> done{false};
    std::thread t([&] {
        client(port);
        done = true;
    });
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    uv_timer_start(
        &tick, [](uv_timer_t*) {}, 0, 10);
    while (!done) uv_run(&loop, UV_RUN_ONCE);
    t.join();
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    verifier.close_all();
    server.close_all();
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop), 0);
}

double seconds_since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
}

TEST(IdleTimeout, ActivityPostponesTheCloseAndIdlenessCausesIt) {
    with_server([](uint16_t port) {
        auto c = test::PolicyClient::inet("127.0.0.1", port);
        ASSERT_TRUE(c.connected());
        // Three idle_timeouts of steady traffic: the connection must stay open throughout
        // (it used to be closed one idle_timeout after it was accepted).
        auto start = Clock::now();
        int answered = 0;
        auto last = start;
        for (;;) {
            ASSERT_TRUE(c.send(test::policy_request("busy@example.org")));
            ASSERT_EQ(c.read_action(5s), "DUNNO") << "after " << seconds_since(start) << " s";
            last = Clock::now();
            ++answered;
            if (last - start >= 3s) break;
            std::this_thread::sleep_for(200ms);
        }
        EXPECT_GE(answered, 5);
        // Now idle: closed about one idle_timeout after the last reply, not before.
        EXPECT_TRUE(c.wait_closed(10s));
        double idle = seconds_since(last);
        EXPECT_GE(idle, 0.7);
        EXPECT_LE(idle, 10.0);
    });
}

TEST(IdleTimeout, BusyWhenTheTimerFiresThenClosedOnceIdle) {
    with_server([](uint16_t port) {
        auto c = test::PolicyClient::inet("127.0.0.1", port);
        ASSERT_TRUE(c.connected());
        // The answer takes 2.5 idle_timeouts: the connection is busy, so it stays open ...
        auto start = Clock::now();
        ASSERT_TRUE(c.send(test::policy_request("slow@example.org")));
        ASSERT_EQ(c.read_action(15s), "DUNNO");
        EXPECT_GE(seconds_since(start), 2.0);
        // ... and is closed one idle_timeout after that reply (it used to stay open forever).
        auto last = Clock::now();
        EXPECT_TRUE(c.wait_closed(10s));
        double idle = seconds_since(last);
        EXPECT_GE(idle, 0.7);
        EXPECT_LE(idle, 10.0);
    });
}

}  // namespace
}  // namespace calloutd
