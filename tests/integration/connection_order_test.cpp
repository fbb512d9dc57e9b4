// In-process policy server whose verdicts complete out of order: replies still leave in order.
#include <gtest/gtest.h>
#include <uv.h>

#include <atomic>
#include <thread>
#include <vector>

#include "daemon/config.hpp"
#include "daemon/server.hpp"
#include "policy/decider.hpp"
#include "support/policy_client.hpp"
#include "support/timer_verifier.hpp"

namespace calloutd {
namespace {

constexpr int kCount = 100;

uint16_t bound_port(const Server& server) {
    const std::string& bound = server.bound()[0];
    return static_cast<uint16_t>(std::stoi(bound.substr(bound.rfind(':') + 1)));
}

// `n` connections, each accepted, then each sent one request while the loop is not running.
// Empty if a request could not be sent.
std::vector<test::PolicyClient> connect_and_ask(uv_loop_t* loop, Server& server, int n) {
    std::vector<test::PolicyClient> clients;
    const uint16_t port = bound_port(server);
    for (int i = 0; i < n; ++i) clients.push_back(test::PolicyClient::inet("127.0.0.1", port));
    while (server.connection_count() < static_cast<size_t>(n)) uv_run(loop, UV_RUN_NOWAIT);
    for (int i = 0; i < n; ++i) {
        if (!clients[static_cast<size_t>(i)].send(
                test::policy_request("u" + std::to_string(i) + "@example.org")))
            return {};
    }
    return clients;
}

// Answers request N after (kCount - N) milliseconds, so the last request finishes first.
test::TimerVerifier::Later reversed(const PolicyRequest& req) {
    int n = std::stoi(req.sender.substr(1, req.sender.find('@') - 1));
    static constexpr VerdictClass kClasses[] = {VerdictClass::valid, VerdictClass::invalid,
                                                VerdictClass::tempfail};
    return {std::chrono::milliseconds(kCount - n), {kClasses[n % 3], "test"}};
}

TEST(ConnectionOrder, OutOfOrderVerdictsAreRepliedInRequestOrder) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    Config cfg = std::get<Config>(load_config_text(
        "[server]\nlisten = [\"inet:127.0.0.1:0\"]\n[actions]\nvalid = \"WARN valid\"\n"
        "invalid = \"REJECT invalid\"\ntempfail = \"WARN tempfail\"\n",
        "t.toml"));
    test::TimerVerifier verifier(&loop, reversed);
    Decider decider(cfg.policy, &verifier);
    Server server(&loop, decider, cfg.server);
    ASSERT_TRUE(server.listen());
    const uint16_t port = bound_port(server);

    std::vector<std::string> got;
    std::atomic<bool> client_done{false};
    std::thread client([&] {
        auto c = test::PolicyClient::inet("127.0.0.1", port);
        std::string batch;
        for (int i = 0; i < kCount; ++i) {
            batch += test::policy_request("u" + std::to_string(i) + "@example.org");
        }
        c.send(batch);
        for (int i = 0; i < kCount; ++i) {
            auto a = c.read_action();
            got.push_back(a.value_or("<none>"));
        }
        client_done = true;
    });
    uv_timer_t stop;
    uv_timer_init(&loop, &stop);
    stop.data = &client;
    // Run the loop until the client thread has everything, then drain and close.
    uv_timer_start(
        &stop, [](uv_timer_t*) {}, 0, 10);
    while (!client_done) uv_run(&loop, UV_RUN_ONCE);
    client.join();
    uv_close(reinterpret_cast<uv_handle_t*>(&stop), nullptr);
    verifier.close_all();
    bool drained = false;
    server.drain([&] { drained = true; });
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_TRUE(drained);
    EXPECT_EQ(uv_loop_close(&loop), 0);

    ASSERT_EQ(got.size(), static_cast<size_t>(kCount));
    for (int i = 0; i < kCount; ++i) {
        const char* want = i % 3 == 0   ? "WARN valid"
                           : i % 3 == 1 ? "REJECT invalid"
                                        : "WARN tempfail";
        EXPECT_EQ(got[static_cast<size_t>(i)], want) << i;
    }
}

TEST(ConnectionOrder, EveryConnectionReadyAtOnceIsAnswered) {
    // Replies leave at the end of the loop iteration, or sooner once 64 connections wait for
    // theirs: 200 connections whose requests are all read by one loop iteration each get
    // exactly their own reply.
    constexpr int kConnections = 200;
    uv_loop_t loop;
    uv_loop_init(&loop);
    Config cfg = std::get<Config>(load_config_text(
        "[server]\nlisten = [\"inet:127.0.0.1:0\"]\nmax_connections = 1000\n[actions]\n"
        "skipped = \"WARN skipped\"\n",
        "t.toml"));
    Decider decider(cfg.policy, nullptr);  // no verifier: every answer is immediate
    Server server(&loop, decider, cfg.server);
    ASSERT_TRUE(server.listen());

    // The loop is not running: every request is waiting when it next polls.
    auto clients = connect_and_ask(&loop, server, kConnections);
    ASSERT_EQ(clients.size(), static_cast<size_t>(kConnections));
    std::atomic<int> answered{0};
    std::vector<std::string> got(kConnections);
    std::thread reader([&] {
        for (int i = 0; i < kConnections; ++i) {
            got[static_cast<size_t>(i)] =
                clients[static_cast<size_t>(i)].read_action().value_or("<none>");
            ++answered;
        }
    });
    while (answered < kConnections) uv_run(&loop, UV_RUN_NOWAIT);
    reader.join();
    for (int i = 0; i < kConnections; ++i)
        EXPECT_EQ(got[static_cast<size_t>(i)], "WARN skipped") << i;

    clients.clear();
    bool drained = false;
    server.drain([&] { drained = true; });
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_TRUE(drained);
    EXPECT_EQ(uv_loop_close(&loop), 0);
}

TEST(ConnectionOrder, ReadingResumesWhenAsynchronousAnswersDrainThePendingLimit) {
    // More pipelined requests than a connection holds unanswered (256): reading stops, and must
    // resume as the delayed answers go out, or the rest would never be read.
    constexpr int kCount = 1000;
    uv_loop_t loop;
    uv_loop_init(&loop);
    Config cfg = std::get<Config>(load_config_text(
        "[server]\nlisten = [\"inet:127.0.0.1:0\"]\n[actions]\nvalid = \"WARN valid\"\n",
        "t.toml"));
    // Every request answered 1 ms later, from a timer: no answer is ever immediate.
    test::TimerVerifier verifier(&loop, [](const PolicyRequest&) {
        return test::TimerVerifier::Later{std::chrono::milliseconds(1),
                                          {VerdictClass::valid, "test"}};
    });
    Decider decider(cfg.policy, &verifier);
    Server server(&loop, decider, cfg.server);
    ASSERT_TRUE(server.listen());
    const uint16_t port = bound_port(server);

    int answered = 0;
    std::atomic<bool> client_done{false};
    std::thread client([&] {
        auto c = test::PolicyClient::inet("127.0.0.1", port);
        std::string batch;
        for (int i = 0; i < kCount; ++i) {
            batch += test::policy_request("u" + std::to_string(i) + "@example.org");
        }
        c.send(batch);
        for (int i = 0; i < kCount; ++i) {
            auto a = c.read_action(std::chrono::seconds(10));
            if (!a || *a != "WARN valid") break;
            ++answered;
        }
        client_done = true;
    });
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    uv_timer_start(
        &tick, [](uv_timer_t*) {}, 0, 10);
    while (!client_done) uv_run(&loop, UV_RUN_ONCE);
    client.join();
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    verifier.close_all();
    server.close_all();
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop), 0);
    EXPECT_EQ(answered, kCount);
}

class DrainOrder : public ::testing::TestWithParam<const char*> {};

TEST_P(DrainOrder, ARequestSentBeforeTheDrainBeganIsAnswered) {
    // Requests that have arrived when SIGTERM starts the drain, but whose readability the loop
    // has not seen yet, are read and answered before their connections close.
    constexpr int kConnections = 20;
    uv_loop_t loop;
    uv_loop_init(&loop);
    Config cfg = std::get<Config>(
        load_config_text(std::string("[server]\nlisten = [\"inet:127.0.0.1:0\"]\nio_uring = \"") +
                             GetParam() + "\"\n[actions]\nskipped = \"WARN skipped\"\n",
                         "t.toml"));
    Decider decider(cfg.policy, nullptr);
    Server server(&loop, decider, cfg.server);
    ASSERT_TRUE(server.listen());

    auto clients = connect_and_ask(&loop, server, kConnections);
    ASSERT_EQ(clients.size(), static_cast<size_t>(kConnections));
    std::vector<std::string> got(kConnections);
    std::thread reader([&] {
        for (int i = 0; i < kConnections; ++i) {
            got[static_cast<size_t>(i)] = clients[static_cast<size_t>(i)]
                                              .read_action(std::chrono::seconds(5))
                                              .value_or("<none>");
        }
    });
    bool drained = false;
    server.drain([&] { drained = true; });  // before the loop polls again
    uv_run(&loop, UV_RUN_DEFAULT);
    reader.join();
    EXPECT_TRUE(drained);
    EXPECT_EQ(uv_loop_close(&loop), 0);
    for (int i = 0; i < kConnections; ++i)
        EXPECT_EQ(got[static_cast<size_t>(i)], "WARN skipped") << i;
}

INSTANTIATE_TEST_SUITE_P(IoUring, DrainOrder, ::testing::Values("auto", "off"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace calloutd
