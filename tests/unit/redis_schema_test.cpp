// Redis key layout and verdict encoding.
#include "storage/redis_schema.hpp"

#include <gtest/gtest.h>

namespace calloutd {
namespace {

using namespace redis_schema;

TEST(RedisSchema, DomainKeysShareOneHashTag) {
    EXPECT_EQ(address_key("example.org", "alice@example.org"),
              "calloutd:{example.org}:a:alice@example.org");
    EXPECT_EQ(domain_fact_key("example.org"), "calloutd:{example.org}:d");
    EXPECT_EQ(in_flight_key("example.org", "a@example.org"),
              "calloutd:{example.org}:f:a@example.org");
    EXPECT_EQ(domain_window_key("example.org"), "calloutd:{example.org}:w");
}

TEST(RedisSchema, VerdictRoundTrips) {
    CachedVerdict v;
    v.cls = VerdictClass::invalid;
    v.reason = "user-unknown 550 5.1.1 at RCPT";
    v.probed_at = WallClock::time_point(std::chrono::milliseconds(1764316800123));
    v.remote_reply = "550 5.1.1 <bob@example.org>: Recipient address rejected";
    auto back = decode(encode(v));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->cls, v.cls);
    EXPECT_EQ(back->reason, v.reason);
    EXPECT_EQ(back->probed_at, v.probed_at);
    EXPECT_EQ(back->remote_reply, v.remote_reply);
    EXPECT_FALSE(back->backoff);
    v.backoff = true;
    v.cls = VerdictClass::policy_blocked;
    EXPECT_TRUE(decode(encode(v))->backoff);
}

TEST(RedisSchema, HostileTextCannotBreakTheEncoding) {
    CachedVerdict v;
    v.cls = VerdictClass::valid;
    v.reason = "a|b\nc";
    v.remote_reply = "250 ok|v1|invalid|0||x\r\n" + std::string(1000, 'x');
    auto back = decode(encode(v));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->cls, VerdictClass::valid);
    EXPECT_EQ(back->reason, "a b c");
    EXPECT_LE(back->remote_reply.size(), 200u);
    EXPECT_EQ(back->remote_reply.find('|'), std::string::npos);
}

TEST(RedisSchema, RejectsGarbage) {
    for (const char* bad :
         {"", "v1", "v2|valid|0|||", "v1|bogus|0|||", "v1|valid|x|||", "v1|valid|12"}) {
        EXPECT_FALSE(decode(bad)) << bad;
    }
}

// Found by fuzzing: a probe time beyond what system_clock holds overflowed in the chrono
// conversion (undefined behaviour). A corrupted or hostile value is malformed, not a verdict.
TEST(RedisSchema, RejectsProbeTimesTheClockCannotHold) {
    for (const char* bad :
         {"v1|valid|9223372036855||||", "v1|valid|9223372036854775807|||", "v1|invalid|-1|||",
          "v1|valid|-9223372036855|||", "v1|valid|99999999999999999999|||"}) {
        EXPECT_FALSE(decode(bad)) << bad;
    }
    auto last = decode("v1|valid|9223372036854|||");
    ASSERT_TRUE(last);
    EXPECT_EQ(
        std::chrono::duration_cast<std::chrono::milliseconds>(last->probed_at.time_since_epoch())
            .count(),
        9223372036854);
    EXPECT_TRUE(decode("v1|valid|0|||"));
}

}  // namespace
}  // namespace calloutd
