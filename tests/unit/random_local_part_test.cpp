// The stable random local part of the accept-all check: per domain and day, keyed by a secret.
#include "callout/random_local_part.hpp"

#include <gtest/gtest.h>

#include <set>

#include "callout/address.hpp"

namespace calloutd {
namespace {

TEST(RandomLocalPart, StablePerDomainAndDay) {
    const std::string a = stable_random_local_part("secret", "example.org", 20000);
    EXPECT_EQ(a, stable_random_local_part("secret", "example.org", 20000)) << "same day: same";
    EXPECT_TRUE(a.starts_with(kRandomLocalPrefix)) << a;
    ASSERT_EQ(a.size(), kRandomLocalPrefix.size() + kRandomLocalLength) << a;
    for (char c : a.substr(kRandomLocalPrefix.size())) {
        EXPECT_TRUE((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) << a;
    }
    // It rotates daily, differs per domain, and without the secret it cannot be predicted.
    EXPECT_NE(a, stable_random_local_part("secret", "example.org", 20001));
    EXPECT_NE(a, stable_random_local_part("secret", "example.net", 20000));
    EXPECT_NE(a, stable_random_local_part("other", "example.org", 20000));
    // And it parses as a sender-style address: safe to write in RCPT TO.
    EXPECT_TRUE(parse_sender(a + "@example.org"));
}

TEST(RandomLocalPart, KnownAnswersAgreeAcrossNodes) {
    // Every node of a cluster must ask the same local part: HMAC-SHA256(secret, "DAY\nDOMAIN"),
    // its first 12 bytes mod 36 (values from Python's hmac module). The second key is longer
    // than SHA-256's block, so it is hashed first (RFC 2104).
    EXPECT_EQ(stable_random_local_part("secret", "example.org", 20000),
              "calloutd-check-6wc2ho257v6z");
    EXPECT_EQ(stable_random_local_part(std::string(100, 'k'), "example.org", 20240),
              "calloutd-check-cc4qlb24ujhs");
    // Alternating secrets reuse no stale key state.
    for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(stable_random_local_part("secret", "example.org", 20000),
                  "calloutd-check-6wc2ho257v6z");
        EXPECT_EQ(stable_random_local_part(std::string(100, 'k'), "example.org", 20240),
                  "calloutd-check-cc4qlb24ujhs");
    }
}

TEST(RandomLocalPart, SpreadsOverManyDomains) {
    std::set<std::string> seen;
    for (int i = 0; i < 1000; ++i)
        seen.insert(stable_random_local_part("k", "d" + std::to_string(i) + ".example", 1));
    EXPECT_EQ(seen.size(), 1000u);
}

TEST(RandomLocalPart, DayIsTheUtcDate) {
    using namespace std::chrono;
    EXPECT_EQ(utc_day(system_clock::time_point(seconds(0))), 0);
    EXPECT_EQ(utc_day(system_clock::time_point(seconds(86399))), 0);
    EXPECT_EQ(utc_day(system_clock::time_point(seconds(86400))), 1);
    // 2025-06-01T00:00:00Z
    EXPECT_EQ(utc_day(system_clock::time_point(seconds(1748736000))), 20240);
}

TEST(RandomLocalPart, Secrets) {
    // The host secret survives restarts (same machine ID, same value); a fresh one is new.
    EXPECT_EQ(host_random_secret(), host_random_secret());
    EXPECT_GE(host_random_secret().size(), 32u);
    EXPECT_NE(fresh_random_secret(), fresh_random_secret());
    EXPECT_EQ(fresh_random_secret().size(), 64u);
}

}  // namespace
}  // namespace calloutd
