// UvHiredis against a real redis-server: every end of a context is heard exactly once, nothing
// after it, and the owner may destroy the context from inside any of its events (ASan checks
// the hiredis 0.14 use-after-free this glue exists to avoid).
#include "storage/uv_hiredis.hpp"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "storage/redis_reply.hpp"
#include "support/paths.hpp"
#include "support/redis_server.hpp"
#include "util/uv_timer.hpp"

namespace calloutd {

namespace {

using namespace std::chrono_literals;
using test::RedisServer;

// Records every event; `react` runs after recording, so a test can destroy the context there.
class Recorder : public UvHiredis::Events {
  public:
    std::vector<std::string> events;
    std::function<void(const std::string&)> react;

    void on_connected() override { note("connected"); }
    void on_reply(std::uint64_t tag, const redisReply& reply) override {
        RedisReply r = RedisReply::from_hiredis(&reply);
        note("reply " + std::to_string(tag) + " " + (r.is_array() ? "array" : r.text()));
    }
    void on_connect_failed(const std::string& error) override { note("connect_failed " + error); }
    void on_lost(const std::string& error) override { note("lost " + error); }

    int count(const std::string& prefix) const {
        int n = 0;
        for (const auto& e : events) n += e.starts_with(prefix) ? 1 : 0;
        return n;
    }

  private:
    void note(std::string e) {
        events.push_back(std::move(e));
        if (react) react(events.back());
    }
};

class UvHiredisTest : public ::testing::Test {
  protected:
    void SetUp() override {
        test::ignore_sigpipe();
        uv_loop_init(&loop_);
    }
    void TearDown() override {
        conn_.reset();
        uv_run(&loop_, UV_RUN_DEFAULT);
        EXPECT_EQ(uv_loop_close(&loop_), 0) << "a handle outlived the context";
    }

    void connect(std::uint16_t port) {
        std::string error;
        conn_ = UvHiredis::connect_tcp(&loop_, "127.0.0.1", port, events_, error);
        ASSERT_TRUE(conn_) << error;
    }
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

    uv_loop_t loop_{};
    Recorder events_;
    std::unique_ptr<UvHiredis> conn_;
};

}  // namespace

TEST_F(UvHiredisTest, RepliesCarryTheirTagsInOrder) {
    RedisServer server;
    connect(server.port());
    ASSERT_TRUE(conn_->send({"PING"}, 7));
    ASSERT_TRUE(conn_->send({"ECHO", "hello"}, 8));
    ASSERT_TRUE(run_until([&] { return events_.events.size() == 3; }));
    EXPECT_EQ(events_.events,
              (std::vector<std::string>{"connected", "reply 7 PONG", "reply 8 hello"}));
}

// hiredis reports a lost connection with a NULL reply for every pending command and then the
// disconnect callback: the owner hears one on_lost, and sends fail from then on.
TEST_F(UvHiredisTest, ALostConnectionIsHeardOnce) {
    RedisServer server;
    connect(server.port());
    ASSERT_TRUE(conn_->send({"PING"}, 1));
    ASSERT_TRUE(run_until([&] { return events_.count("reply") == 1; }));
    server.pause();
    for (std::uint64_t tag = 2; tag < 12; ++tag) ASSERT_TRUE(conn_->send({"PING"}, tag));
    run_for(20ms);
    server.kill();
    ASSERT_TRUE(run_until([&] { return events_.count("lost") == 1; }));
    run_for(50ms);
    EXPECT_EQ(events_.count("lost"), 1);
    EXPECT_EQ(events_.count("reply"), 1);
    EXPECT_FALSE(conn_->send({"PING"}, 99));
}

TEST_F(UvHiredisTest, ARefusedConnectIsHeardOnceAsAConnectFailure) {
    connect(1);                             // nothing listens on port 1
    ASSERT_TRUE(conn_->send({"PING"}, 1));  // pipelined behind the connect, never answered
    ASSERT_TRUE(run_until([&] { return !events_.events.empty(); }));
    run_for(50ms);
    ASSERT_EQ(events_.events.size(), 1u);
    EXPECT_EQ(events_.events[0], "connect_failed Connection refused");
}

// Destroying the context from inside each kind of event. In hiredis 0.14 freeing it from the
// connect or disconnect callback is a use-after-free; here the free waits for hiredis.
TEST_F(UvHiredisTest, DestroyedFromInsideItsConnectEvent) {
    RedisServer server;
    connect(server.port());
    ASSERT_TRUE(conn_->send({"PING"}, 1));
    events_.react = [&](const std::string&) { conn_.reset(); };
    ASSERT_TRUE(run_until([&] { return conn_ == nullptr; }));
    run_for(50ms);
    EXPECT_EQ(events_.events, (std::vector<std::string>{"connected"}));
}

TEST_F(UvHiredisTest, DestroyedFromInsideAReplyWithMoreRepliesInTheSameRead) {
    RedisServer server;
    connect(server.port());
    ASSERT_TRUE(conn_->send({"PING"}, 1));
    ASSERT_TRUE(run_until([&] { return events_.count("reply") == 1; }));
    server.pause();  // the ten replies then arrive together, in one read
    for (std::uint64_t tag = 2; tag < 12; ++tag) ASSERT_TRUE(conn_->send({"PING"}, tag));
    run_for(20ms);
    events_.react = [&](const std::string& e) {
        if (e.starts_with("reply")) conn_.reset();
    };
    server.resume();
    ASSERT_TRUE(run_until([&] { return conn_ == nullptr; }));
    run_for(50ms);
    EXPECT_EQ(events_.count("reply"), 2);  // the first, and the one it was destroyed in
    EXPECT_EQ(events_.count("lost"), 0);   // letting go is not an event
}

TEST_F(UvHiredisTest, DestroyedFromInsideItsLostEvent) {
    RedisServer server;
    connect(server.port());
    ASSERT_TRUE(conn_->send({"PING"}, 1));
    ASSERT_TRUE(run_until([&] { return events_.count("reply") == 1; }));
    server.pause();
    ASSERT_TRUE(conn_->send({"PING"}, 2));
    events_.react = [&](const std::string& e) {
        if (e.starts_with("lost")) conn_.reset();
    };
    server.kill();
    ASSERT_TRUE(run_until([&] { return conn_ == nullptr; }));
    EXPECT_EQ(events_.count("lost"), 1);
}

TEST_F(UvHiredisTest, DestroyedFromInsideItsConnectFailure) {
    connect(1);
    events_.react = [&](const std::string&) { conn_.reset(); };
    ASSERT_TRUE(run_until([&] { return conn_ == nullptr; }));
    EXPECT_EQ(events_.count("connect_failed"), 1);
}

TEST_F(UvHiredisTest, DestroyedWithCommandsPendingHearsNothing) {
    RedisServer server;
    connect(server.port());
    for (std::uint64_t tag = 1; tag <= 100; ++tag) ASSERT_TRUE(conn_->send({"PING"}, tag));
    conn_.reset();  // before the connect completes
    run_for(50ms);
    EXPECT_TRUE(events_.events.empty());

    connect(server.port());
    ASSERT_TRUE(run_until([&] { return events_.count("connected") == 1; }));
    for (std::uint64_t tag = 1; tag <= 100; ++tag) ASSERT_TRUE(conn_->send({"PING"}, tag));
    conn_.reset();  // connected, replies on their way
    run_for(50ms);
    EXPECT_EQ(events_.events, (std::vector<std::string>{"connected"}));
}

}  // namespace calloutd
