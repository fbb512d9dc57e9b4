// LRU map: recency order, expiry, capacity bound.
#include "storage/lru_map.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <list>
#include <map>
#include <random>
#include <string>
#include <vector>

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

// A plain model of the contract: a recency list (front = most recent) searched from the front.
struct ModelLru {
    struct Entry {
        int key;
        int value;
        Clock::time_point expires;
    };
    size_t capacity;
    std::list<Entry> order;

    std::list<Entry>::iterator find(int key) {
        return std::find_if(order.begin(), order.end(),
                            [&](const Entry& e) { return e.key == key; });
    }
    void put(int key, int value, Clock::time_point expires) {
        if (auto it = find(key); it != order.end()) {
            it->value = value;
            it->expires = expires;
            order.splice(order.begin(), order, it);
            return;
        }
        while (order.size() >= capacity) order.pop_back();
        order.push_front({key, value, expires});
    }
    const int* get(int key, Clock::time_point now) {
        auto it = find(key);
        if (it == order.end()) return nullptr;
        if (it->expires <= now) {
            order.erase(it);
            return nullptr;
        }
        order.splice(order.begin(), order, it);
        return &it->value;
    }
    bool erase(int key) {
        auto it = find(key);
        if (it == order.end()) return false;
        order.erase(it);
        return true;
    }
};

// The flat index (open addressing, backward-shift deletion, growth) against the model: random
// puts, gets, erases, expiries, erase_if and evictions over a key space that collides a lot in a
// small table. Any entry lost or kept wrongly by the index shows up as a difference.
TEST(LruMap, AgreesWithAPlainModelUnderRandomOperations) {
    std::mt19937 rng(20261202);
    for (size_t capacity : {1u, 2u, 7u, 64u, 300u}) {
        LruMap<int, int> m(capacity);
        ModelLru model{capacity, {}};
        auto now = Clock::now();
        const int keys = static_cast<int>(capacity) * 3 + 5;
        for (int step = 0; step < 40000; ++step) {
            int key = static_cast<int>(rng() % static_cast<unsigned>(keys));
            switch (rng() % 8) {
                case 0:
                case 1:
                case 2: {
                    auto expires = now + std::chrono::seconds(1 + rng() % 50);
                    m.put(key, step, expires);
                    model.put(key, step, expires);
                    break;
                }
                case 3:
                case 4:
                case 5: {
                    const int* want = model.get(key, now);
                    const int* got = m.get(key, now);
                    ASSERT_EQ(got == nullptr, want == nullptr)
                        << "capacity " << capacity << " step " << step;
                    if (want != nullptr) {
                        ASSERT_EQ(*got, *want);
                    }
                    break;
                }
                case 6:
                    ASSERT_EQ(m.erase(key), model.erase(key)) << "step " << step;
                    break;
                case 7:
                    now += std::chrono::seconds(rng() % 3);
                    if (step % 500 == 7) {
                        int mod = 2 + static_cast<int>(rng() % 5);
                        size_t n = m.erase_if([&](const int& k, const int&, Clock::time_point) {
                            return k % mod == 0;
                        });
                        size_t before = model.order.size();
                        model.order.remove_if(
                            [&](const ModelLru::Entry& e) { return e.key % mod == 0; });
                        ASSERT_EQ(n, before - model.order.size());
                    }
                    break;
            }
            ASSERT_EQ(m.size(), model.order.size()) << "capacity " << capacity << " step " << step;
        }
        // Every key the model holds is found with its value and expiry; no other key is.
        for (int key = 0; key < keys; ++key) {
            auto it = model.find(key);
            Clock::time_point expires;
            const int* got = m.peek(key, Clock::time_point::min(), &expires);
            ASSERT_EQ(got != nullptr, it != model.order.end()) << "key " << key;
            if (got != nullptr) {
                EXPECT_EQ(*got, it->value);
                EXPECT_EQ(expires, it->expires);
            }
        }
    }
}

TEST(LruMap, ClearEmptiesAndStaysUsable) {
    LruMap<std::string, int> m(100);
    auto now = Clock::now();
    for (int i = 0; i < 50; ++i) m.put("k" + std::to_string(i), i, now + 1h);
    m.clear();
    EXPECT_EQ(m.size(), 0u);
    EXPECT_EQ(m.get("k1", now), nullptr);
    m.put("k1", 7, now + 1h);
    EXPECT_EQ(*m.get("k1", now), 7);
}

}  // namespace calloutd
