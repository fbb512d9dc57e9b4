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
    EXPECT_EQ(not_accept_all_key("example.org"), "calloutd:{example.org}:n");
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
    EXPECT_EQ(back->scope, EvidenceScope::address);
    v.backoff = true;
    v.cls = VerdictClass::policy_blocked;
    EXPECT_TRUE(decode(encode(v))->backoff);
    EXPECT_EQ(decode(encode(v))->scope, EvidenceScope::domain) << "a back-off is domain-wide";
}

// The scope travels in the flags field: "d" domain fact, "b" back-off, "" one address (an
// MX-host-scoped verdict is kept under the address, so it needs no flag of its own).
TEST(RedisSchema, ScopeIsEncodedInTheFlags) {
    CachedVerdict v;
    v.cls = VerdictClass::policy_blocked;
    v.reason = "probes-refused: policy 550 5.7.1 at RCPT";
    v.scope = EvidenceScope::domain;
    EXPECT_TRUE(encode(v).starts_with("v1|policy_blocked|0|d|")) << encode(v);
    EXPECT_EQ(decode(encode(v))->scope, EvidenceScope::domain);
    v.scope = EvidenceScope::address;
    EXPECT_TRUE(encode(v).starts_with("v1|policy_blocked|0||")) << encode(v);
    EXPECT_EQ(decode(encode(v))->scope, EvidenceScope::address);
    v.scope = EvidenceScope::mx_host;
    EXPECT_EQ(decode(encode(v))->scope, EvidenceScope::address);
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

// The time of a failed refresh travels with the verdict; values written before it existed
// (six fields) still decode.
TEST(RedisSchema, RefreshFailedAtRoundTrips) {
    CachedVerdict v;
    v.cls = VerdictClass::valid;
    v.reason = "rcpt-accepted";
    v.probed_at = WallClock::time_point(std::chrono::milliseconds(1764316800123));
    v.remote_reply = "250 2.1.5 ok";
    std::string plain = encode(v);
    EXPECT_EQ(plain, "v1|valid|1764316800123||rcpt-accepted|250 2.1.5 ok");
    EXPECT_EQ(decode(plain)->refresh_failed_at, WallClock::time_point{});
    v.refresh_failed_at = WallClock::time_point(std::chrono::milliseconds(1764317400456));
    auto back = decode(encode(v));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->refresh_failed_at, v.refresh_failed_at);
    EXPECT_EQ(back->remote_reply, "250 2.1.5 ok");
    EXPECT_EQ(decode(plain + "|junk")->remote_reply, "250 2.1.5 ok");
    EXPECT_EQ(provider_window_key("google.com"), "calloutd:provider:google.com:w");
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
          "v1|valid|-9223372036855|||", "v1|valid|99999999999999999999|||",
          "v1|valid|0||||9223372036855", "v1|valid|0||||-9223372036855"}) {
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

RedisReply strings(std::vector<std::string> parts) {
    std::vector<RedisReply> e;
    for (auto& p : parts) e.push_back(RedisReply::string(std::move(p)));
    return RedisReply::array(std::move(e));
}

// The scripts' replies are believed only in the shape the scripts build; anything else from a
// corrupted or hostile Redis is malformed and the caller falls back to local budgets.
TEST(RedisSchema, AdmissionRepliesAreReadDefensively) {
    using Kind = AdmitReply::Kind;
    const std::string token = "node:7";
    const std::string v = "v1|valid|1764547200000||rcpt-accepted|250 ok";
    EXPECT_EQ(read_admit_reply(strings({"admitted", token}), token).kind, Kind::admitted);
    EXPECT_EQ(read_admit_reply(strings({"in_flight"}), token).kind, Kind::in_flight);
    auto cached = read_admit_reply(strings({"cached", v, "a"}), token);
    EXPECT_EQ(cached.kind, Kind::cached);
    ASSERT_TRUE(cached.cached);
    EXPECT_EQ(cached.cached->cls, VerdictClass::valid);
    auto unreadable =
        read_admit_reply(strings({"cached", "v1|valid|9223372036855|||", "d"}), token);
    EXPECT_EQ(unreadable.kind, Kind::cached);
    EXPECT_FALSE(unreadable.cached);
    auto denied = read_admit_reply(strings({"denied", "client"}), token);
    EXPECT_EQ(denied.kind, Kind::denied);
    EXPECT_EQ(denied.denied_by, BudgetKind::client);
    for (const RedisReply& bad :
         {strings({"admitted", "someone-else:1"}), strings({"admitted"}),
          strings({"admitted", token, "x"}), strings({"cached", v, "x"}), strings({"cached", v}),
          strings({"denied", "mx"}), strings({"denied"}), strings({"yes"}), strings({}),
          RedisReply::array({RedisReply::string("admitted"), RedisReply::integer(7)}),
          RedisReply::string("admitted"), RedisReply::integer(1), RedisReply{},
          RedisReply::error("ERR"), RedisReply::status("OK")}) {
        EXPECT_EQ(read_admit_reply(bad, token).kind, Kind::malformed);
    }
    EXPECT_EQ(read_admit_mx_reply(strings({"admitted", token}), token).kind, Kind::admitted);
    EXPECT_EQ(read_admit_mx_reply(strings({"denied", "provider"}), token).denied_by,
              BudgetKind::provider);
    EXPECT_EQ(read_admit_mx_reply(strings({"denied", "concurrency"}), token).denied_by,
              BudgetKind::mx);
    EXPECT_EQ(read_admit_mx_reply(strings({"admitted", "other"}), token).kind, Kind::malformed);
    EXPECT_EQ(read_admit_mx_reply(RedisReply::integer(0), token).kind, Kind::malformed);
}

}  // namespace
}  // namespace calloutd
