// RedisClient through Redis Sentinel: a real master, replica and sentinel; the client follows a
// failover by asking the sentinel again on reconnect. And RedisSentinel's discovery rounds alone.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <thread>

#include "storage/redis_client.hpp"
#include "storage/redis_sentinel.hpp"
#include "support/paths.hpp"
#include "support/redis_server.hpp"

namespace calloutd {

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::RedisServer;
using test::RedisServerOptions;

// Polls a blocking check (test set-up, no loop running) until it holds or `limit` passes.
bool eventually(const std::function<bool()>& check, std::chrono::milliseconds limit) {
    auto deadline = Clock::now() + limit;
    while (!check()) {
        if (Clock::now() > deadline) return false;
        std::this_thread::sleep_for(50ms);
    }
    return true;
}

class RedisSentinelTest : public ::testing::Test {
  protected:
    void SetUp() override {
        test::ignore_sigpipe();  // hiredis 0.14 writes with write(), not MSG_NOSIGNAL
        uv_loop_init(&loop_);
    }
    void TearDown() override {
        client_.reset();
        uv_run(&loop_, UV_RUN_DEFAULT);
        EXPECT_EQ(uv_loop_close(&loop_), 0) << "a handle outlived the client";
    }

    RedisOptions options(const std::vector<std::string>& sentinels) {
        RedisOptions o;
        o.url = "redis://sentinel/0";  // host ignored: the sentinels name the master
        o.sentinels = sentinels;
        o.master_name = "mymaster";
        o.command_timeout = 200ms;
        o.connect_timeout = 500ms;
        o.backoff_min = 20ms;
        o.backoff_max = 200ms;
        o.jitter_seed = 42;
        return o;
    }

    void make(RedisOptions o) {
        std::string error;
        client_ = RedisClient::create(&loop_, std::move(o), error);
        ASSERT_TRUE(client_) << error;
        client_->set_state_callback([this](const RedisStateChange& c) { changes_.push_back(c); });
        client_->start();
    }

    bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit) {
        UvTimer guard(&loop_);
        bool expired = false;
        guard.start(limit, [&] { expired = true; });
        while (!done() && !expired) uv_run(&loop_, UV_RUN_ONCE);
        return done();
    }

    RedisResult run_command(const std::vector<std::string_view>& args) {
        std::optional<RedisResult> result;
        client_->command(args, [&](RedisResult r) { result = std::move(r); });
        EXPECT_TRUE(run_until([&] { return result.has_value(); }, 5s));
        return result.value_or(RedisResult{RedisStatus::not_connected, {}, "test: no answer"});
    }

    uv_loop_t loop_{};
    std::unique_ptr<RedisClient> client_;
    std::vector<RedisStateChange> changes_;
};

RedisServerOptions replica_of(const RedisServer& master) {
    RedisServerOptions o;
    o.replica_of = master.port();
    return o;
}

RedisServerOptions sentinel_of(const RedisServer& master) {
    RedisServerOptions o;
    o.sentinel_master_name = "mymaster";
    o.sentinel_master_port = master.port();
    return o;
}

std::string port_text(const RedisServer& s) {
    return ":" + std::to_string(s.port()) + "/";
}

}  // namespace

TEST_F(RedisSentinelTest, FollowsAFailoverToThePromotedReplica) {
    auto began = Clock::now();
    auto master = std::make_unique<RedisServer>();
    RedisServer replica(replica_of(*master));
    ASSERT_TRUE(eventually(
        [&] {
            RedisReply info = replica.command({"INFO", "replication"});
            return info.text().find("master_link_status:up") != std::string::npos;
        },
        10s))
        << replica.log();
    RedisServer sentinel(sentinel_of(*master));
    // The sentinel learns about the replica from the master's INFO; without it, no failover.
    ASSERT_TRUE(eventually(
        [&] {
            RedisReply r = sentinel.command({"SENTINEL", "replicas", "mymaster"});
            return r.is_array() && !r.elements().empty();
        },
        10s))
        << sentinel.log();

    make(options({"127.0.0.1:1", "127.0.0.1:" + std::to_string(sentinel.port())}));
    ASSERT_TRUE(run_until([&] { return client_->is_connected(); }, 5s))
        << client_->last_error() << " " << client_->stats().connect_failures;
    ASSERT_FALSE(changes_.empty());
    EXPECT_TRUE(changes_.back().connected);
    EXPECT_NE(changes_.back().reason.find(port_text(*master)), std::string::npos)
        << changes_.back().reason;
    EXPECT_NE(changes_.back().reason.find("master mymaster named by sentinel"), std::string::npos)
        << changes_.back().reason;
    EXPECT_TRUE(run_command({"SET", "k", "before"}).ok());
    EXPECT_EQ(run_command({"GET", "k"}).reply, RedisReply::string("before"));
    EXPECT_EQ(master->command({"GET", "k"}), RedisReply::string("before"));

    auto killed = Clock::now();
    master->kill();
    ASSERT_TRUE(run_until(
        [&] { return client_->is_connected() && client_->endpoint().port == replica.port(); }, 15s))
        << client_->last_error() << "\n"
        << sentinel.log();
    auto followed = Clock::now() - killed;
    EXPECT_TRUE(run_command({"SET", "k", "after"}).ok());
    EXPECT_EQ(run_command({"GET", "k"}).reply, RedisReply::string("after"));
    EXPECT_EQ(replica.command({"GET", "k"}), RedisReply::string("after"));

    // Down once when the master died, up once on the promoted replica.
    ASSERT_GE(changes_.size(), 3u);
    EXPECT_FALSE(changes_[changes_.size() - 2].connected);
    EXPECT_TRUE(changes_.back().connected);
    EXPECT_NE(changes_.back().reason.find(port_text(replica)), std::string::npos)
        << changes_.back().reason;
    std::printf(
        "failover followed in %lld ms (test %lld ms)\n",
        static_cast<long long>(
            std::chrono::duration_cast<std::chrono::milliseconds>(followed).count()),
        static_cast<long long>(
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - began).count()));
}

TEST_F(RedisSentinelTest, UnknownMasterNameIsReportedNamingTheSentinel) {
    RedisServer master;
    RedisServer sentinel(sentinel_of(master));
    RedisOptions o = options({"127.0.0.1:" + std::to_string(sentinel.port())});
    o.master_name = "othermaster";
    make(o);
    ASSERT_TRUE(run_until([&] { return !changes_.empty(); }, 5s));
    EXPECT_FALSE(changes_[0].connected);
    EXPECT_NE(changes_[0].reason.find("no sentinel named master othermaster"), std::string::npos)
        << changes_[0].reason;
    EXPECT_NE(changes_[0].reason.find("does not know master othermaster"), std::string::npos)
        << changes_[0].reason;
    EXPECT_FALSE(client_->is_connected());
}

TEST_F(RedisSentinelTest, RejectsBadSentinelOptions) {
    std::string error;
    RedisOptions o = options({"sentinel.example:26379"});
    EXPECT_FALSE(RedisClient::create(&loop_, o, error));
    EXPECT_NE(error.find("IP:PORT or [V6]:PORT"), std::string::npos) << error;
    o = options({"127.0.0.1:26379"});
    o.master_name.clear();
    EXPECT_FALSE(RedisClient::create(&loop_, o, error));
    EXPECT_NE(error.find("redis.master_name"), std::string::npos) << error;
    o = options({"127.0.0.1:26379"});
    o.url = "unix:/tmp/redis.sock";
    EXPECT_FALSE(RedisClient::create(&loop_, o, error));
    EXPECT_NE(error.find("redis.url"), std::string::npos) << error;
}

// One round asks each sentinel once and says why each gave no address: refused, silent
// (SIGSTOP: the kernel accepts, nothing answers), not a sentinel, not knowing the master.
TEST_F(RedisSentinelTest, ARoundAsksEachSentinelOnceAndSaysWhyEachFailed) {
    RedisServer master;
    RedisServer stopped;
    stopped.pause();
    RedisServer plain;
    RedisServer sentinel(sentinel_of(master));
    auto at = [](const RedisServer& s) { return RedisHostPort{"127.0.0.1", s.port()}; };
    // 2 s, not less: on a loaded machine a loop that runs late sees its timer fire before the
    // refused connection (timers run first in an iteration), and port 1 would read "no answer".
    RedisSentinel sentinels(&loop_, {{"127.0.0.1", 1}, at(stopped), at(plain), at(sentinel)},
                            "othermaster", 2000ms);
    std::optional<RedisSentinel::Answer> answer;
    int calls = 0;
    auto round = sentinels.discover([&](RedisSentinel::Answer a) {
        ++calls;
        answer = std::move(a);
    });
    EXPECT_EQ(calls, 0);  // never from inside discover()
    ASSERT_TRUE(run_until([&] { return answer.has_value(); }, 10s));
    EXPECT_FALSE(answer->found);
    const std::string& e = answer->error;
    EXPECT_TRUE(e.starts_with("no sentinel named master othermaster: 127.0.0.1:1: connecting: "))
        << e;
    std::string p = std::to_string(stopped.port());
    EXPECT_NE(e.find("127.0.0.1:" + p + ": no answer within 2000 ms"), std::string::npos) << e;
    EXPECT_NE(e.find("127.0.0.1:" + std::to_string(plain.port()) + ": ERR"), std::string::npos)
        << e;
    EXPECT_NE(e.find("127.0.0.1:" + std::to_string(sentinel.port()) +
                     ": does not know master othermaster"),
              std::string::npos)
        << e;
    EXPECT_EQ(sentinels.current(), "127.0.0.1:1");  // round the list once: back to the first
    round.reset();
    stopped.resume();
    run_until([] { return false; }, 50ms);
    EXPECT_EQ(calls, 1);
}

TEST_F(RedisSentinelTest, ARoundFindsTheMasterAndIsCancelledByDestroyingIt) {
    RedisServer master;
    RedisServer sentinel(sentinel_of(master));
    RedisSentinel sentinels(&loop_, {{"127.0.0.1", 1}, {"127.0.0.1", sentinel.port()}}, "mymaster",
                            500ms);
    std::optional<RedisSentinel::Answer> answer;
    auto round = sentinels.discover([&](RedisSentinel::Answer a) { answer = std::move(a); });
    ASSERT_TRUE(run_until([&] { return answer.has_value(); }, 5s));
    ASSERT_TRUE(answer->found) << answer->error;
    EXPECT_EQ(answer->master, (RedisHostPort{"127.0.0.1", master.port()}));
    EXPECT_EQ(sentinels.current(), "127.0.0.1:" + std::to_string(sentinel.port()));

    // The next round starts with the sentinel that answered; destroyed at once, it is silent.
    bool called = false;
    round = sentinels.discover([&](RedisSentinel::Answer) { called = true; });
    round.reset();
    run_until([] { return false; }, 200ms);
    EXPECT_FALSE(called);
}

}  // namespace calloutd
