// The keyed string hash of the in-memory tables: deterministic per key, different per secret,
// and keys chosen to collide under std::hash spread out under it.
#include "util/keyed_hash.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <map>
#include <string>
#include <vector>

#include "storage/lru_map.hpp"

namespace calloutd {
namespace {

std::vector<std::string> senders(size_t n) {
    std::vector<std::string> out;
    for (size_t i = 0; i < n; ++i) out.push_back("user" + std::to_string(i) + "@example.org");
    return out;
}

TEST(KeyedHash, TheSameSeedGivesTheSameHash) {
    const std::array<unsigned char, 4> seed{1, 2, 3, 4};
    KeyedHash a(seed), b(seed);
    for (const auto& s : senders(100)) EXPECT_EQ(a(s), b(s)) << s;
}

TEST(KeyedHash, AnotherSeedGivesOtherHashes) {
    const std::array<unsigned char, 4> one{1, 2, 3, 4}, other{1, 2, 3, 5};
    KeyedHash a(one), b(other);
    size_t same = 0;
    for (const auto& s : senders(1000)) same += a(s) == b(s);
    EXPECT_EQ(same, 0u);
}

TEST(KeyedHash, RandomInstancesHaveTheirOwnSecret) {
    KeyedHash a = KeyedHash::random(), b = KeyedHash::random();
    size_t same = 0;
    for (const auto& s : senders(100)) same += a(s) == b(s);
    EXPECT_EQ(same, 0u);
}

TEST(KeyedHash, TablesOfStringsUseTheProcessKey) {
    LruMapHash<std::string>::type h;
    for (const auto& s : senders(10)) EXPECT_EQ(h(s), KeyedHash::process()(s)) << s;
}

// Hash flooding: keys an attacker picks offline so that std::hash puts them all in one bucket
// of a 4096-slot table (found here by brute force, as anyone could) land in as many buckets as
// random keys would under the tables' hash.
TEST(KeyedHash, KeysChosenToCollideUnderStdHashSpreadOut) {
    constexpr size_t kMask = 4095;
    constexpr size_t kKeys = 256;
    std::vector<std::string> chosen;
    for (size_t i = 0; chosen.size() < kKeys; ++i) {
        std::string key = "a:flood" + std::to_string(i) + "@example.org";
        if ((std::hash<std::string>{}(key)&kMask) == 0) chosen.push_back(key);
    }
    LruMapHash<std::string>::type table_hash;
    std::map<size_t, size_t> per_bucket;
    for (const auto& k : chosen) ++per_bucket[table_hash(k) & kMask];
    size_t worst = 0;
    for (const auto& [bucket, n] : per_bucket) worst = std::max(worst, n);
    // 256 random keys in 4096 buckets: ~248 buckets, rarely more than 3 keys in one.
    EXPECT_GT(per_bucket.size(), 200u);
    EXPECT_LE(worst, 5u);
}

}  // namespace
}  // namespace calloutd
