// In-memory verdict cache: TTL per class, domain facts, refresh-ahead, replacement, LRU bound.
#include "storage/memory_cache.hpp"

#include <gtest/gtest.h>

namespace calloutd {
namespace {

using namespace std::chrono_literals;

class MemoryCache : public ::testing::Test {
  protected:
    CacheTtls ttls{31 * 24h, 3 * 24h, 10min, 24h, 7 * 24h};
    WallClock::time_point now = WallClock::time_point(std::chrono::hours(500000));
    MemoryVerdictCache cache{1000, ttls, [this] { return now; }};

    CachedVerdict verdict(VerdictClass c, std::string reason = "r") {
        return CachedVerdict{c, std::move(reason), now, ""};
    }
    CachedVerdict fact(VerdictClass c, std::string reason = "r") {
        CachedVerdict v = verdict(c, std::move(reason));
        v.scope = EvidenceScope::domain;
        return v;
    }
    std::optional<CacheHit> find(const std::string& addr) {
        return cache.find("example.org", addr);
    }
};

TEST_F(MemoryCache, EachClassLivesForItsTtl) {
    struct {
        VerdictClass cls;
        std::chrono::milliseconds ttl;
    } cases[] = {{VerdictClass::valid, 31 * 24h},
                 {VerdictClass::invalid, 3 * 24h},
                 {VerdictClass::tempfail, 10min}};
    for (auto& c : cases) {
        SCOPED_TRACE(std::string(to_string(c.cls)));
        auto start = now;
        cache.store("example.org", "a@example.org", verdict(c.cls));
        now = start + c.ttl - 1s;
        ASSERT_TRUE(find("a@example.org"));
        EXPECT_EQ(find("a@example.org")->verdict.cls, c.cls);
        EXPECT_FALSE(find("a@example.org")->domain_fact);
        now = start + c.ttl;
        EXPECT_FALSE(find("a@example.org"));
        now = start;
    }
}

TEST_F(MemoryCache, DomainFactAnswersEveryAddressOfTheDomain) {
    for (auto c : {VerdictClass::accept_all, VerdictClass::null_sender_rejected,
                   VerdictClass::policy_blocked, VerdictClass::no_mail_domain}) {
        SCOPED_TRACE(std::string(to_string(c)));
        cache.erase("example.org", "");
        cache.store("example.org", "a@example.org", fact(c));
        auto hit = find("someone-else@example.org");
        ASSERT_TRUE(hit);
        EXPECT_TRUE(hit->domain_fact);
        EXPECT_EQ(hit->verdict.cls, c);
        EXPECT_FALSE(cache.find("other.example", "a@other.example"));
    }
    auto start = now;
    now = start + 24h;
    EXPECT_FALSE(find("a@example.org"));
}

// A forged sender at one restricted mailbox must not switch verification off for its domain.
TEST_F(MemoryCache, OneMailboxVerdictNeverAnswersForTheDomain) {
    for (auto c : {VerdictClass::policy_blocked, VerdictClass::null_sender_rejected,
                   VerdictClass::tempfail, VerdictClass::invalid}) {
        SCOPED_TRACE(std::string(to_string(c)));
        cache.store("example.org", "restricted@example.org", verdict(c));
        EXPECT_EQ(find("restricted@example.org")->verdict.cls, c);
        EXPECT_FALSE(find("restricted@example.org")->domain_fact);
        EXPECT_FALSE(find("someone-else@example.org"));
        cache.erase("", "restricted@example.org");
    }
    // An address-scoped policy_blocked lives for cache.domain_ttl like the domain fact would.
    cache.store("example.org", "restricted@example.org", verdict(VerdictClass::policy_blocked));
    now += 24h - 1s;
    EXPECT_TRUE(find("restricted@example.org"));
    now += 1s;
    EXPECT_FALSE(find("restricted@example.org"));
}

// The address's own verdict answers before a domain fact, except "no mail at all".
TEST_F(MemoryCache, AddressVerdictAnswersBeforeADomainFact) {
    cache.store("example.org", "gone@example.org", verdict(VerdictClass::invalid, "user-unknown"));
    cache.store("example.org", "old@example.org", verdict(VerdictClass::valid));
    cache.store("example.org", "x@example.org",
                fact(VerdictClass::policy_blocked, "probes-refused"));
    EXPECT_EQ(find("gone@example.org")->verdict.cls, VerdictClass::invalid);
    EXPECT_FALSE(find("gone@example.org")->domain_fact);
    EXPECT_TRUE(find("new@example.org")->domain_fact);
    // A positive due for refresh is served, but not re-probed while a domain fact stands.
    now += 7 * 24h;
    cache.store("example.org", "x@example.org", fact(VerdictClass::accept_all));
    ASSERT_TRUE(find("old@example.org"));
    EXPECT_EQ(find("old@example.org")->verdict.cls, VerdictClass::valid);
    EXPECT_FALSE(find("old@example.org")->refresh_due);
    // The back-off record lives for limits.backoff_ttl, not cache.domain_ttl.
    MemoryVerdictCache c2(1000, CacheTtls{31 * 24h, 3 * 24h, 10min, 24h, 7 * 24h, 1h},
                          [this] { return now; });
    CachedVerdict backoff = fact(VerdictClass::policy_blocked, "backoff: 421");
    backoff.backoff = true;
    c2.store("example.org", "x@example.org", backoff);
    EXPECT_TRUE(c2.find("example.org", "y@example.org"));
    now += 1h;
    EXPECT_FALSE(c2.find("example.org", "y@example.org"));
    now -= 1h;

    cache.store("example.org", "x@example.org", fact(VerdictClass::no_mail_domain, "dns nxdomain"));
    EXPECT_EQ(find("old@example.org")->verdict.cls, VerdictClass::no_mail_domain);
    EXPECT_EQ(find("gone@example.org")->verdict.cls, VerdictClass::no_mail_domain);
}

TEST_F(MemoryCache, NotAcceptAllFactLivesForTheDomainTtl) {
    EXPECT_EQ(cache.not_accept_all("example.org", {}), std::optional<bool>(false));
    cache.store_not_accept_all("example.org", now);
    EXPECT_EQ(cache.not_accept_all("example.org", {}), std::optional<bool>(true));
    EXPECT_EQ(cache.not_accept_all("other.example", {}), std::optional<bool>(false));
    EXPECT_FALSE(find("a@example.org")) << "it never answers a request";
    now += 24h;
    EXPECT_EQ(cache.not_accept_all("example.org", {}), std::optional<bool>(false));
    cache.store_not_accept_all("example.org", now);
    cache.erase("example.org", "");
    EXPECT_EQ(cache.not_accept_all("example.org", {}), std::optional<bool>(false));
}

TEST_F(MemoryCache, NonProbeClassesAreNotStored) {
    for (auto c : {VerdictClass::in_progress, VerdictClass::rate_limited}) {
        cache.store("example.org", "a@example.org", verdict(c));
    }
    EXPECT_EQ(cache.size(), 0u);
}

// A callout that found an MX host on policy.skip_mx_hosts answers skipped/skip-mx: a fact
// about the domain's MX hosts, kept for cache.domain_ttl.
TEST_F(MemoryCache, SkipMxIsADomainFact) {
    cache.store("example.org", "a@example.org", fact(VerdictClass::skipped, "skip-mx"));
    auto hit = find("someone-else@example.org");
    ASSERT_TRUE(hit);
    EXPECT_TRUE(hit->domain_fact);
    EXPECT_EQ(hit->verdict.reason, "skip-mx");
    now += 24h;
    EXPECT_FALSE(find("a@example.org"));
}

// A failed refresh is remembered: the stale valid is still served, and the next refresh waits
// for cache.tempfail_ttl (10 min here) after the failed one.
TEST_F(MemoryCache, AFailedRefreshPostponesTheNextByTheTempfailTtl) {
    cache.store("example.org", "a@example.org", verdict(VerdictClass::valid, "first"));
    now += 8 * 24h;
    ASSERT_TRUE(find("a@example.org")->refresh_due);
    cache.store("example.org", "a@example.org", verdict(VerdictClass::tempfail, "failed"));
    cache.note_failed_refresh("example.org", "a@example.org");
    auto hit = find("a@example.org");
    ASSERT_TRUE(hit);
    EXPECT_EQ(hit->verdict.reason, "first");
    EXPECT_FALSE(hit->refresh_due);
    now += 10min - 1s;
    EXPECT_FALSE(find("a@example.org")->refresh_due);
    now += 1s;
    EXPECT_TRUE(find("a@example.org")->refresh_due);
    // Only a live valid verdict records attempts.
    cache.note_failed_refresh("example.org", "nobody@example.org");
    EXPECT_FALSE(find("nobody@example.org"));
    // A successful refresh starts afresh.
    cache.store("example.org", "a@example.org", verdict(VerdictClass::valid, "second"));
    EXPECT_EQ(find("a@example.org")->verdict.refresh_failed_at, WallClock::time_point{});
}

// The one skipped a probe produces (a UTF-8 address at a server without SMTPUTF8) is kept for
// the address, as long as a tempfail.
TEST_F(MemoryCache, SkippedFromAProbeIsKeptForTheTempfailTtl) {
    CachedVerdict v = verdict(VerdictClass::skipped);
    v.reason = "smtputf8-unsupported: SMTPUTF8 not offered at EHLO";
    cache.store("example.org", "jörg@example.org", v);
    ASSERT_TRUE(find("jörg@example.org"));
    EXPECT_EQ(find("jörg@example.org")->verdict.cls, VerdictClass::skipped);
    EXPECT_FALSE(find("jörg@example.org")->domain_fact);
    EXPECT_FALSE(find("other@example.org")) << "an address verdict, not a domain fact";
    EXPECT_EQ(ttl_for(VerdictClass::skipped, ttls), ttls.tempfail);
    now += ttls.tempfail - 1s;
    EXPECT_TRUE(find("jörg@example.org"));
    now += 2s;
    EXPECT_FALSE(find("jörg@example.org"));
}

TEST_F(MemoryCache, RefreshIsDueForOldPositivesOnly) {
    cache.store("example.org", "a@example.org", verdict(VerdictClass::valid));
    cache.store("example.org", "b@example.org", verdict(VerdictClass::invalid));
    EXPECT_FALSE(find("a@example.org")->refresh_due);
    now += 7 * 24h;
    EXPECT_TRUE(find("a@example.org")->refresh_due);
    EXPECT_EQ(find("a@example.org")->verdict.cls, VerdictClass::valid);  // still served
    now -= 5 * 24h;
    EXPECT_FALSE(find("b@example.org")->refresh_due);
}

TEST_F(MemoryCache, FailedRefreshNeverOverwritesAValidPositive) {
    cache.store("example.org", "a@example.org", verdict(VerdictClass::valid, "first"));
    now += 8 * 24h;
    cache.store("example.org", "a@example.org", verdict(VerdictClass::tempfail, "refresh failed"));
    EXPECT_EQ(find("a@example.org")->verdict.reason, "first");
    // A definitive answer does replace it: the mailbox is gone now.
    cache.store("example.org", "a@example.org", verdict(VerdictClass::invalid, "gone"));
    EXPECT_EQ(find("a@example.org")->verdict.cls, VerdictClass::invalid);
    // And a tempfail may replace a non-positive.
    cache.store("example.org", "a@example.org", verdict(VerdictClass::tempfail, "t"));
    EXPECT_EQ(find("a@example.org")->verdict.cls, VerdictClass::tempfail);
}

TEST_F(MemoryCache, ExpiryCountsFromTheProbeTime) {
    CachedVerdict old = verdict(VerdictClass::tempfail);
    old.probed_at = now - 9min;
    cache.store("example.org", "a@example.org", old);
    now += 61s;
    EXPECT_FALSE(find("a@example.org"));
}

TEST_F(MemoryCache, BoundedByEntries) {
    MemoryVerdictCache small(100, ttls, [this] { return now; });
    for (int i = 0; i < 10000; ++i) {
        std::string a = "u" + std::to_string(i) + "@example.org";
        small.store("example.org", a, verdict(VerdictClass::valid));
    }
    EXPECT_EQ(small.size(), 100u);
    EXPECT_TRUE(small.find("example.org", "u9999@example.org"));
    EXPECT_FALSE(small.find("example.org", "u0@example.org"));
}

TEST_F(MemoryCache, PeekAlwaysAnswers) {
    cache.store("example.org", "a@example.org", verdict(VerdictClass::valid));
    auto r = cache.peek("example.org", "a@example.org");
    ASSERT_TRUE(r.has_value());
    ASSERT_TRUE(r->has_value());
    EXPECT_EQ((*r)->verdict.cls, VerdictClass::valid);
    auto miss = cache.peek("example.org", "b@example.org");
    ASSERT_TRUE(miss.has_value());  // answered now: not found
    EXPECT_FALSE(miss->has_value());
}

}  // namespace
}  // namespace calloutd
