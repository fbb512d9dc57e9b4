// RingQueue: FIFO order through growth and wrap-around, elements reused.
#include "util/ring_queue.hpp"

#include <gtest/gtest.h>

#include <deque>
#include <random>
#include <string>

namespace calloutd {
namespace {

TEST(RingQueue, KeepsFifoOrderThroughWrapAroundAndGrowth) {
    std::mt19937 rng(7);
    RingQueue<std::string> q;
    std::deque<std::string> model;
    for (int step = 0; step < 100000; ++step) {
        // Grows to a few hundred elements, drains, and wraps around many times.
        bool push = model.empty() || rng() % 100 < (step % 20000 < 10000 ? 55u : 45u);
        if (push) {
            std::string v = "v" + std::to_string(step);
            q.push_back_reused() = v;
            model.push_back(v);
        } else {
            ASSERT_EQ(q.front(), model.front()) << "step " << step;
            q.pop_front();
            model.pop_front();
        }
        ASSERT_EQ(q.size(), model.size());
        if (!model.empty()) {
            size_t i = rng() % model.size();
            ASSERT_EQ(q[i], model[i]) << "step " << step << " index " << i;
        }
    }
}

TEST(RingQueue, PoppedElementsAreReusedWithTheirCapacity) {
    RingQueue<std::string> q;
    q.push_back_reused().assign(100, 'x');
    const char* storage = q.front().data();
    q.pop_front();
    EXPECT_TRUE(q.empty());
    // Four slots: the fourth push lands on the first slot again.
    for (int i = 0; i < 3; ++i) {
        q.push_back_reused() = "short";
        q.pop_front();
    }
    std::string& again = q.push_back_reused();
    EXPECT_EQ(again.data(), storage);
    EXPECT_GE(again.capacity(), 100u);
}

}  // namespace
}  // namespace calloutd
