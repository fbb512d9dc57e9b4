// RedisClient against a real redis-server: commands, AUTH/SELECT, scripts, deadlines,
// reconnects, pub/sub and destruction with work in flight.
#include "storage/redis_client.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <functional>
#include <map>

#include "support/paths.hpp"
#include "support/redis_server.hpp"

namespace calloutd {

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::RedisServer;
using test::RedisServerOptions;

constexpr const char* kIncrScript = "return redis.call('INCRBY', KEYS[1], ARGV[1])";

long long command_calls(const RedisServer& server, const std::string& command) {
    RedisReply info = server.command({"INFO", "commandstats"});
    std::string key = "cmdstat_" + command + ":calls=";
    auto pos = info.text().find(key);
    if (pos == std::string::npos) return 0;
    return std::stoll(info.text().substr(pos + key.size()));
}

class RedisClientTest : public ::testing::Test {
  protected:
    void SetUp() override {
        test::ignore_sigpipe();  // hiredis 0.14 writes with write(), not MSG_NOSIGNAL
        uv_loop_init(&loop_);
    }
    void TearDown() override {
        client_.reset();
        uv_run(&loop_, UV_RUN_DEFAULT);  // lets closing handles and name lookups finish
        EXPECT_EQ(uv_loop_close(&loop_), 0) << "a handle outlived the client";
    }

    RedisOptions options(const std::string& url) {
        RedisOptions o;
        o.url = url;
        o.command_timeout = 200ms;
        o.connect_timeout = 500ms;
        o.backoff_min = 20ms;
        o.backoff_max = 200ms;
        o.jitter_seed = 42;
        return o;
    }

    void make(RedisOptions o, bool start = true) {
        std::string error;
        client_ = RedisClient::create(&loop_, std::move(o), error);
        ASSERT_TRUE(client_) << error;
        client_->set_state_callback([this](const RedisStateChange& c) { changes_.push_back(c); });
        if (start) client_->start();
    }

    // Runs the loop until `done` or `limit`; returns done().
    bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 5s) {
        UvTimer guard(&loop_);
        bool expired = false;
        guard.start(limit, [&] { expired = true; });
        while (!done() && !expired) uv_run(&loop_, UV_RUN_ONCE);
        return done();
    }
    void run_for(std::chrono::milliseconds how_long) {
        run_until([] { return false; }, how_long);
    }

    bool wait_connected(std::chrono::milliseconds limit = 5s) {
        return run_until([this] { return client_->is_connected(); }, limit);
    }

    RedisResult run_command(const std::vector<std::string_view>& args) {
        std::optional<RedisResult> result;
        client_->command(args, [&](RedisResult r) { result = std::move(r); });
        EXPECT_TRUE(run_until([&] { return result.has_value(); }));
        return result.value_or(RedisResult{RedisStatus::not_connected, {}, "test: no answer"});
    }

    RedisResult run_eval(std::string_view script, const std::vector<std::string_view>& keys,
                         const std::vector<std::string_view>& args) {
        std::optional<RedisResult> result;
        client_->eval(script, keys, args, [&](RedisResult r) { result = std::move(r); });
        EXPECT_TRUE(run_until([&] { return result.has_value(); }));
        return result.value_or(RedisResult{RedisStatus::not_connected, {}, "test: no answer"});
    }

    uv_loop_t loop_{};
    std::unique_ptr<RedisClient> client_;
    std::vector<RedisStateChange> changes_;
};

}  // namespace

TEST_F(RedisClientTest, BasicCommandsAndReplyTypes) {
    RedisServer server;
    make(options(server.url()));
    ASSERT_TRUE(wait_connected());
    ASSERT_EQ(changes_.size(), 1u);
    EXPECT_TRUE(changes_[0].connected);
    EXPECT_EQ(changes_[0].link, RedisLink::commands);

    EXPECT_EQ(run_command({"SET", "k", std::string_view("a\0b", 3)}).reply,
              RedisReply::status("OK"));
    EXPECT_EQ(run_command({"GET", "k"}).reply, RedisReply::string(std::string("a\0b", 3)));
    EXPECT_EQ(run_command({"GET", "missing"}).reply, RedisReply());
    EXPECT_EQ(run_command({"INCR", "n"}).reply, RedisReply::integer(1));
    run_command({"RPUSH", "l", "x", "y"});
    EXPECT_EQ(run_command({"LRANGE", "l", "0", "-1"}).reply,
              RedisReply::array({RedisReply::string("x"), RedisReply::string("y")}));

    RedisResult wrong = run_command({"INCR", "l"});
    EXPECT_EQ(wrong.status, RedisStatus::server_error);
    EXPECT_TRUE(wrong.error.starts_with("WRONGTYPE")) << wrong.error;
    EXPECT_EQ(client_->in_flight(), 0u);
}

TEST_F(RedisClientTest, CallbacksNeverRunInsideTheIssuingCall) {
    RedisServer server;
    make(options(server.url()), false);
    bool called = false;
    client_->command({"PING"}, [&](RedisResult r) {
        called = true;
        EXPECT_EQ(r.status, RedisStatus::not_connected);
    });
    EXPECT_FALSE(called);  // before start(): fails fast, but on a later loop turn
    ASSERT_TRUE(run_until([&] { return called; }));

    client_->start();
    ASSERT_TRUE(wait_connected());
    called = false;
    client_->command({"PING"}, [&](RedisResult r) {
        called = true;
        EXPECT_EQ(r.reply, RedisReply::status("PONG"));
    });
    EXPECT_FALSE(called);
    ASSERT_TRUE(run_until([&] { return called; }));
}

TEST_F(RedisClientTest, CancelledCommandNeverCallsBack) {
    RedisServer server;
    make(options(server.url()));
    ASSERT_TRUE(wait_connected());
    bool called = false;
    auto id = client_->command({"SET", "c", "1"}, [&](RedisResult) { called = true; });
    EXPECT_TRUE(client_->cancel(id));
    EXPECT_FALSE(client_->cancel(id));
    auto failed = client_->command({"NOSUCHCOMMAND"}, [&](RedisResult) { called = true; });
    EXPECT_TRUE(client_->cancel(failed));
    run_command({"PING"});  // after both replies have been read
    EXPECT_FALSE(called);
    EXPECT_EQ(server.command({"GET", "c"}), RedisReply::string("1"));  // it was still sent
    std::optional<RedisResult> empty;
    client_->command({}, [&](RedisResult r) { empty = std::move(r); });
    ASSERT_TRUE(run_until([&] { return empty.has_value(); }));
    EXPECT_EQ(empty->status, RedisStatus::server_error);
    EXPECT_TRUE(client_->is_connected());
}

TEST_F(RedisClientTest, AuthAndSelect) {
    RedisServer server(RedisServerOptions{.password = "t0p-secret", .unix_socket = false});
    make(options(server.url(3)));
    ASSERT_TRUE(wait_connected());
    EXPECT_TRUE(run_command({"SET", "in3", "yes"}).ok());
    EXPECT_EQ(server.command({"GET", "in3"}, 3), RedisReply::string("yes"));
    EXPECT_EQ(server.command({"GET", "in3"}, 0), RedisReply());
}

TEST_F(RedisClientTest, WrongPasswordIsReportedOnceAndNeverConnects) {
    RedisServer server(RedisServerOptions{.password = "right", .unix_socket = false});
    make(options("redis://:wrong@127.0.0.1:" + std::to_string(server.port()) + "/0"));
    ASSERT_TRUE(run_until([&] { return client_->stats().connect_failures >= 3; }));
    EXPECT_FALSE(client_->is_connected());
    ASSERT_EQ(changes_.size(), 1u);  // down once, not once per attempt
    EXPECT_FALSE(changes_[0].connected);
    EXPECT_TRUE(changes_[0].reason.starts_with("AUTH failed: WRONGPASS")) << changes_[0].reason;
    RedisResult r = run_command({"PING"});
    EXPECT_EQ(r.status, RedisStatus::not_connected);
    EXPECT_NE(r.error.find("AUTH failed"), std::string::npos) << r.error;
}

TEST_F(RedisClientTest, UnixSocketWithDbAndPassword) {
    RedisServer server(RedisServerOptions{.password = "pw", .unix_socket = true});
    make(options(server.unix_url(5)));
    ASSERT_TRUE(wait_connected());
    EXPECT_TRUE(run_command({"SET", "via", "unix"}).ok());
    EXPECT_EQ(server.command({"GET", "via"}, 5), RedisReply::string("unix"));
}

TEST_F(RedisClientTest, HostNameIsResolvedAsynchronously) {
    RedisServer server;
    make(options("redis://localhost:" + std::to_string(server.port()) + "/0"), false);
    auto before = Clock::now();
    client_->start();
    // start() only hands the name to the thread pool: it neither blocks nor connects.
    EXPECT_LT(Clock::now() - before, 20ms);
    EXPECT_FALSE(client_->is_connected());
    ASSERT_TRUE(wait_connected()) << client_->last_error();
    EXPECT_EQ(run_command({"PING"}).reply, RedisReply::status("PONG"));
}

TEST_F(RedisClientTest, EvalShaOfARegisteredScript) {
    RedisServer server;
    make(options(server.url()), false);
    client_->register_script("incr", kIncrScript);
    client_->start();
    ASSERT_TRUE(wait_connected());
    RedisReply sha = server.command({"SCRIPT", "LOAD", kIncrScript});
    EXPECT_EQ(server.command({"SCRIPT", "EXISTS", sha.text()}),
              RedisReply::array({RedisReply::integer(1)}));

    EXPECT_EQ(run_eval("incr", {"counter"}, {"5"}).reply, RedisReply::integer(5));
    EXPECT_EQ(run_eval("incr", {"counter"}, {"2"}).reply, RedisReply::integer(7));
    EXPECT_EQ(command_calls(server, "evalsha"), 2);
    EXPECT_EQ(command_calls(server, "eval"), 0);

    // Registered after connecting: loaded at once, EVAL until its SHA1 is known.
    client_->register_script("get", "return redis.call('GET', KEYS[1])");
    EXPECT_EQ(run_eval("get", {"counter"}, {}).reply, RedisReply::string("7"));
    EXPECT_EQ(run_eval("get", {"counter"}, {}).reply, RedisReply::string("7"));
    EXPECT_EQ(command_calls(server, "evalsha"), 3);

    // A script error is the script's reply, not a broken connection.
    client_->register_script("broken", "this is not lua");
    RedisResult r = run_eval("broken", {}, {});
    EXPECT_EQ(r.status, RedisStatus::server_error);
    EXPECT_TRUE(client_->is_connected());
}

TEST_F(RedisClientTest, NoscriptAfterScriptFlushIsReloadedTransparently) {
    RedisServer server;
    make(options(server.url()), false);
    client_->register_script("incr", kIncrScript);
    client_->start();
    ASSERT_TRUE(wait_connected());
    EXPECT_EQ(run_eval("incr", {"c"}, {"1"}).reply, RedisReply::integer(1));
    EXPECT_EQ(server.command({"SCRIPT", "FLUSH"}), RedisReply::status("OK"));

    RedisResult r = run_eval("incr", {"c"}, {"1"});
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.reply, RedisReply::integer(2));
    EXPECT_EQ(client_->stats().script_reloads, 1u);
    EXPECT_EQ(run_eval("incr", {"c"}, {"1"}).reply, RedisReply::integer(3));
    EXPECT_EQ(command_calls(server, "evalsha"), 3);  // the 2nd failed with NOSCRIPT
    EXPECT_EQ(command_calls(server, "eval"), 1);
    EXPECT_EQ(client_->stats().script_reloads, 1u);
}

TEST_F(RedisClientTest, TimeoutWhileServerIsStoppedThenReconnects) {
    RedisServer server;
    make(options(server.url()));
    ASSERT_TRUE(wait_connected());
    server.pause();

    std::optional<RedisResult> first, second;
    Clock::time_point first_at;
    auto sent = Clock::now();
    client_->command({"GET", "a"}, [&](RedisResult r) {
        first = std::move(r);
        first_at = Clock::now();
    });
    client_->command({"GET", "b"}, [&](RedisResult r) { second = std::move(r); });
    ASSERT_TRUE(run_until([&] { return first && second; }, 2s));
    EXPECT_EQ(first->status, RedisStatus::timeout) << first->error;
    EXPECT_EQ(second->status, RedisStatus::disconnected) << second->error;
    auto took = first_at - sent;
    EXPECT_GE(took, 195ms);
    EXPECT_LE(took, 200ms + 150ms);  // the deadline plus scheduling slack on a busy machine
    EXPECT_FALSE(client_->is_connected());
    EXPECT_EQ(client_->stats().timeouts, 1u);

    // While it stays stopped: fail fast, keep trying (each attempt times out in its handshake).
    auto t0 = Clock::now();
    EXPECT_EQ(run_command({"GET", "a"}).status, RedisStatus::not_connected);
    EXPECT_LT(Clock::now() - t0, 50ms);
    run_for(700ms);
    EXPECT_GE(client_->stats().connect_failures, 1u);
    EXPECT_NE(client_->last_error().find("timeout while waiting for the PING reply"),
              std::string::npos)
        << client_->last_error();

    server.resume();
    ASSERT_TRUE(wait_connected(3s)) << client_->last_error();
    EXPECT_EQ(run_command({"PING"}).reply, RedisReply::status("PONG"));
    ASSERT_EQ(changes_.size(), 3u);  // up, down (timeout), up
    EXPECT_FALSE(changes_[1].connected);
    EXPECT_NE(changes_[1].reason.find("timeout"), std::string::npos) << changes_[1].reason;
    EXPECT_TRUE(changes_[2].connected);
}

TEST_F(RedisClientTest, KilledServerFailsFastThenReconnectsWithBackoffAndScripts) {
    RedisServer server;
    make(options(server.url()), false);
    client_->register_script("incr", kIncrScript);
    client_->start();
    ASSERT_TRUE(wait_connected());

    // A command in flight when the server dies gets `disconnected`.
    server.pause();
    std::optional<RedisResult> in_flight;
    client_->command({"GET", "x"}, [&](RedisResult r) { in_flight = std::move(r); });
    run_for(20ms);
    server.kill();
    ASSERT_TRUE(run_until([&] { return in_flight.has_value(); }, 1s));
    EXPECT_EQ(in_flight->status, RedisStatus::disconnected) << in_flight->error;
    EXPECT_FALSE(client_->is_connected());

    auto t0 = Clock::now();
    RedisResult r = run_eval("incr", {"k"}, {"1"});
    EXPECT_EQ(r.status, RedisStatus::not_connected);
    EXPECT_LT(Clock::now() - t0, 50ms);

    // Refused connects back off: 20 ms doubling to 200 ms, not a tight loop.
    auto failures_before = client_->stats().connect_failures;
    run_for(1000ms);
    auto failures = client_->stats().connect_failures - failures_before;
    EXPECT_GE(failures, 3u);
    EXPECT_LE(failures, 15u);
    EXPECT_NE(client_->last_error().find("connect"), std::string::npos) << client_->last_error();

    server.restart();
    ASSERT_TRUE(wait_connected(2s)) << client_->last_error();
    RedisReply sha = RedisReply::string(
        server.command({"SCRIPT", "LOAD", kIncrScript}).text());  // the same SHA1
    EXPECT_EQ(command_calls(server, "script|load"), 2);  // ours after reconnect, then the above
    EXPECT_EQ(run_eval("incr", {"k"}, {"4"}).reply, RedisReply::integer(4));
    EXPECT_EQ(command_calls(server, "evalsha"), 1);
    EXPECT_EQ(client_->stats().script_reloads, 0u);
    EXPECT_EQ(client_->stats().connects, 2u);
    EXPECT_EQ(client_->stats().disconnects, 1u);
}

TEST_F(RedisClientTest, PubSubDeliversAndResubscribesAfterRestart) {
    RedisServer server;
    make(options(server.url()), false);
    std::vector<std::pair<std::string, std::string>> got;
    client_->subscribe("calloutd:done", [&](const std::string& ch, const std::string& msg) {
        got.emplace_back(ch, msg);
    });
    client_->start();
    ASSERT_TRUE(run_until([&] { return client_->is_subscribed() && client_->is_connected(); }));

    // Published over the client's own commands link.
    EXPECT_EQ(run_command({"PUBLISH", "calloutd:done", "a@example.org"}).reply,
              RedisReply::integer(1));
    ASSERT_TRUE(run_until([&] { return got.size() == 1; }));
    EXPECT_EQ(got[0], std::make_pair(std::string("calloutd:done"), std::string("a@example.org")));

    // A channel added while subscribed.
    client_->subscribe(
        "other", [&](const std::string& ch, const std::string& msg) { got.emplace_back(ch, msg); });
    ASSERT_TRUE(run_until([&] {
        return server.command({"PUBSUB", "NUMSUB", "other"}).elements().at(1).as_integer() == 1;
    }));

    server.restart();
    ASSERT_TRUE(run_until([&] { return !client_->is_subscribed(); }, 2s));
    ASSERT_TRUE(run_until([&] { return client_->is_subscribed(); }, 3s));
    EXPECT_EQ(server.command({"PUBLISH", "calloutd:done", "b@example.org"}),
              RedisReply::integer(1));
    EXPECT_EQ(server.command({"PUBLISH", "other", "c"}), RedisReply::integer(1));
    ASSERT_TRUE(run_until([&] { return got.size() == 3; }));
    EXPECT_EQ(got[1].second, "b@example.org");
    EXPECT_EQ(got[2], std::make_pair(std::string("other"), std::string("c")));

    client_->unsubscribe("other");
    ASSERT_TRUE(run_until([&] {
        return server.command({"PUBSUB", "NUMSUB", "other"}).elements().at(1).as_integer() == 0;
    }));
    EXPECT_EQ(client_->stats().messages, 3u);
    bool saw_pubsub_down = false;
    for (const auto& c : changes_) {
        if (c.link == RedisLink::pubsub && !c.connected) saw_pubsub_down = true;
    }
    EXPECT_TRUE(saw_pubsub_down);
}

// What degraded mode relies on: under load, through a crash and a restart, every command is
// answered exactly once and never later than its deadline (plus scheduling slack).
TEST_F(RedisClientTest, EveryCommandAnsweredOnceThroughKillAndRestart) {
    RedisServer server;
    make(options(server.url()));
    ASSERT_TRUE(wait_connected());
    std::map<RedisClient::Id, int> answers;
    std::map<RedisStatus, int> by_status;
    Clock::duration slowest{};
    int issued = 0;
    bool issuing = true;
    UvTimer tick(&loop_);
    std::function<void()> burst = [&] {
        if (!issuing) return;
        for (int i = 0; i < 20; ++i) {
            auto sent = Clock::now();
            auto id = std::make_shared<RedisClient::Id>(0);
            *id = client_->command({"INCR", "load"}, [&, sent, id](RedisResult r) {
                ++answers[*id];
                ++by_status[r.status];
                slowest = std::max(slowest, Clock::now() - sent);
            });
            ++issued;
        }
        tick.start(2ms, burst);
    };
    burst();
    run_for(200ms);
    server.kill();
    run_for(300ms);
    server.restart();
    ASSERT_TRUE(wait_connected(2s));
    run_for(200ms);
    issuing = false;
    ASSERT_TRUE(run_until([&] { return static_cast<int>(answers.size()) == issued; }, 2s));
    for (const auto& [id, n] : answers) EXPECT_EQ(n, 1) << "command " << id;
    EXPECT_GT(by_status[RedisStatus::ok], 0);
    EXPECT_GT(by_status[RedisStatus::not_connected], 0);
    EXPECT_EQ(by_status[RedisStatus::timeout], 0);
    EXPECT_LE(slowest, 200ms + 150ms);
    EXPECT_EQ(client_->in_flight(), 0u);
}

TEST_F(RedisClientTest, DestroyedWithCommandsInFlightCallsNothingBack) {
    RedisServer server;
    make(options(server.url()), false);
    client_->register_script("incr", kIncrScript);
    client_->subscribe("ch", [&](const std::string&, const std::string&) { ADD_FAILURE(); });
    client_->start();
    ASSERT_TRUE(run_until([&] { return client_->is_subscribed() && client_->is_connected(); }));
    int called = 0;
    for (int i = 0; i < 100; ++i) {
        client_->command({"INCR", "n"}, [&](RedisResult) { ++called; });
        client_->eval("incr", {"m"}, {"1"}, [&](RedisResult) { ++called; });
    }
    server.command({"PUBLISH", "ch", "late"});
    EXPECT_EQ(client_->in_flight(), 200u);
    client_.reset();
    run_for(100ms);
    EXPECT_EQ(called, 0);
}

TEST_F(RedisClientTest, DestroyedFromInsideItsOwnCallback) {
    RedisServer server;
    make(options(server.url()));
    ASSERT_TRUE(wait_connected());
    int called = 0;
    for (int i = 0; i < 10; ++i) {
        client_->command({"PING"}, [&](RedisResult r) {
            ++called;
            EXPECT_TRUE(r.ok());
            client_.reset();  // the remaining nine replies are already read: dropped
        });
    }
    ASSERT_TRUE(run_until([&] { return client_ == nullptr; }));
    run_for(50ms);
    EXPECT_EQ(called, 1);
}

TEST_F(RedisClientTest, DestroyedWhileResolvingAndWhileStopped) {
    RedisServer server;
    make(options("redis://localhost:" + std::to_string(server.port()) + "/0"));
    client_.reset();  // the name lookup still runs in the thread pool; TearDown drains it
    make(options(server.url()));
    ASSERT_TRUE(wait_connected());
    server.pause();
    bool called = false;
    client_->command({"GET", "x"}, [&](RedisResult) { called = true; });
    run_for(20ms);
    client_.reset();
    run_for(20ms);
    EXPECT_FALSE(called);
    server.resume();
}

TEST_F(RedisClientTest, RejectsBadOptions) {
    std::string error;
    RedisOptions o = options("redis://h:0");
    EXPECT_FALSE(RedisClient::create(&loop_, o, error));
    EXPECT_NE(error.find("port"), std::string::npos);
    o = options("redis://h:1");
    o.backoff_max = 1ms;
    EXPECT_FALSE(RedisClient::create(&loop_, o, error));
    EXPECT_NE(error.find("backoff"), std::string::npos);
    o = options("redis://h:1");
    o.command_timeout = 0ms;
    EXPECT_FALSE(RedisClient::create(&loop_, o, error));
}

}  // namespace calloutd
