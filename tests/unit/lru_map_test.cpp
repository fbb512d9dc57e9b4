// LRU map: recency order, expiry, capacity bound.
#include "storage/lru_map.hpp"

#include <gtest/gtest.h>

#include <string>

namespace calloutd {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

TEST(LruMap, EvictsLeastRecentlyUsed) {
    LruMap<std::string, int> m(2);
    auto now = Clock::now();
    m.put("a", 1, now + 1h);
    m.put("b", 2, now + 1h);
    ASSERT_NE(m.get("a", now), nullptr);  // a is now more recent than b
    m.put("c", 3, now + 1h);
    EXPECT_EQ(m.get("b", now), nullptr);
    EXPECT_EQ(*m.get("a", now), 1);
    EXPECT_EQ(*m.get("c", now), 3);
    EXPECT_EQ(m.size(), 2u);
}

TEST(LruMap, ExpiresEntries) {
    LruMap<std::string, int> m(10);
    auto now = Clock::now();
    m.put("a", 1, now + 10s);
    EXPECT_NE(m.get("a", now + 9s), nullptr);
    EXPECT_EQ(m.get("a", now + 10s), nullptr);
    EXPECT_EQ(m.size(), 0u);
}

TEST(LruMap, ReplaceKeepsOneEntry) {
    LruMap<int, int> m(3);
    auto now = Clock::now();
    for (int i = 0; i < 100; ++i) m.put(7, i, now + 1h);
    EXPECT_EQ(m.size(), 1u);
    EXPECT_EQ(*m.get(7, now), 99);
    EXPECT_TRUE(m.erase(7));
    EXPECT_FALSE(m.erase(7));
}

TEST(LruMap, CapacityBoundsMemory) {
    LruMap<int, int> m(1000);
    auto now = Clock::now();
    for (int i = 0; i < 100000; ++i) m.put(i, i, now + 1h);
    EXPECT_EQ(m.size(), 1000u);
    EXPECT_NE(m.get(99999, now), nullptr);
    EXPECT_EQ(m.get(0, now), nullptr);
}

}  // namespace calloutd
