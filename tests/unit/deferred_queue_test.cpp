// DeferredQueue on a real libuv loop: never synchronous, FIFO, one drain per loop iteration,
// cancel, and destruction from inside its own callback.
#include "util/deferred_queue.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace calloutd {

namespace {

class DeferredQueueTest : public ::testing::Test {
  public:
    void SetUp() override { uv_loop_init(&loop_); }
    void TearDown() override {
        queue_.reset();
        uv_run(&loop_, UV_RUN_DEFAULT);  // lets the idle handle close
        EXPECT_EQ(uv_loop_close(&loop_), 0) << "a handle outlived the queue";
    }
    // One loop iteration: the queue drains at most once.
    void turn() { uv_run(&loop_, UV_RUN_NOWAIT); }

    uv_loop_t loop_{};
    uv_async_t async_{};
    std::unique_ptr<DeferredQueue> queue_;
    std::vector<std::string> ran_;
};

}  // namespace

TEST_F(DeferredQueueTest, RunsLaterInPostingOrder) {
    queue_ = std::make_unique<DeferredQueue>(&loop_);
    queue_->post([&] { ran_.push_back("a"); });
    queue_->post([&] { ran_.push_back("b"); }, 7);
    queue_->post([&] { ran_.push_back("c"); });
    EXPECT_TRUE(ran_.empty());  // never from inside post()
    EXPECT_EQ(queue_->size(), 3u);
    turn();
    EXPECT_EQ(ran_, (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_EQ(queue_->size(), 0u);
}

// Also the reason the queue is not a zero-delay timer: with libuv < 1.48 the three x's would all
// run in the first iteration, before any I/O.
TEST_F(DeferredQueueTest, WhatACallbackPostsWaitsForTheNextTurn) {
    queue_ = std::make_unique<DeferredQueue>(&loop_);
    int left = 3;
    std::function<void()> again = [&] {
        ran_.push_back("x");
        if (--left > 0) queue_->post(again);
    };
    queue_->post(again);
    queue_->post([&] { ran_.push_back("y"); });
    turn();
    EXPECT_EQ(ran_, (std::vector<std::string>{"x", "y"}));
    turn();
    EXPECT_EQ(ran_, (std::vector<std::string>{"x", "y", "x"}));
    turn();
    EXPECT_EQ(ran_, (std::vector<std::string>{"x", "y", "x", "x"}));
    EXPECT_EQ(queue_->size(), 0u);
}

// What a client relies on: a state it changes in an I/O callback and the callback reporting it
// come out of the same uv_run(UV_RUN_ONCE).
TEST_F(DeferredQueueTest, WorkPostedFromAnIoCallbackRunsInTheSameIteration) {
    queue_ = std::make_unique<DeferredQueue>(&loop_);
    async_.data = this;
    uv_async_init(&loop_, &async_, [](uv_async_t* a) {
        auto* self = static_cast<DeferredQueueTest*>(a->data);
        self->ran_.push_back("io");
        self->queue_->post([self] { self->ran_.push_back("deferred"); });
        EXPECT_EQ(self->ran_.size(), 1u);  // not from inside post()
    });
    uv_async_send(&async_);
    uv_run(&loop_, UV_RUN_ONCE);
    EXPECT_EQ(ran_, (std::vector<std::string>{"io", "deferred"}));
    uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
}

TEST_F(DeferredQueueTest, CancelDropsByKey) {
    queue_ = std::make_unique<DeferredQueue>(&loop_);
    queue_->post([&] { ran_.push_back("a"); }, 1);
    queue_->post([&] { ran_.push_back("b"); }, 2);
    queue_->post([&] { ran_.push_back("c"); }, 3);
    queue_->post([&] { ran_.push_back("unkeyed"); });
    EXPECT_TRUE(queue_->cancel(2));
    EXPECT_FALSE(queue_->cancel(2));
    EXPECT_FALSE(queue_->cancel(0));   // 0 is never a key
    EXPECT_FALSE(queue_->cancel(99));  // never posted
    EXPECT_EQ(queue_->size(), 3u);
    // A callback may cancel one queued behind it in the same drain.
    queue_->post([&] { EXPECT_TRUE(queue_->cancel(5)); }, 4);
    queue_->post([&] { ran_.push_back("e"); }, 5);
    turn();
    EXPECT_EQ(ran_, (std::vector<std::string>{"a", "c", "unkeyed"}));
    EXPECT_FALSE(queue_->cancel(1));  // already ran
}

TEST_F(DeferredQueueTest, ACallbackMayDestroyTheQueue) {
    queue_ = std::make_unique<DeferredQueue>(&loop_);
    queue_->post([&] { ran_.push_back("first"); });
    queue_->post([&] {
        ran_.push_back("destroyer");
        queue_.reset();
    });
    queue_->post([&] { ran_.push_back("dropped"); });
    turn();
    EXPECT_EQ(ran_, (std::vector<std::string>{"first", "destroyer"}));
    EXPECT_EQ(queue_, nullptr);
}

TEST_F(DeferredQueueTest, DestroyedWithCallbacksQueuedRunsNone) {
    queue_ = std::make_unique<DeferredQueue>(&loop_);
    for (int i = 0; i < 100; ++i) queue_->post([&] { ran_.push_back("late"); });
    queue_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_TRUE(ran_.empty());
}

TEST_F(DeferredQueueTest, AnIdleQueueDoesNotKeepTheLoopAlive) {
    queue_ = std::make_unique<DeferredQueue>(&loop_);
    queue_->post([&] { ran_.push_back("once"); });
    uv_run(&loop_, UV_RUN_DEFAULT);  // returns: nothing left to do
    EXPECT_EQ(ran_, (std::vector<std::string>{"once"}));
}

}  // namespace calloutd
