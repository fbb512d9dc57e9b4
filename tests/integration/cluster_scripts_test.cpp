// Cluster mode, the Lua scripts' semantics (admission, release, store, MX admission, refresh,
// the random secret) driven directly through RedisClient against a real redis-server, as the
// daemon registers them; and the Redis cache and budget backends on top of them.
// Over 500 lines as one concept: one fixture that drives the scripts, and a case per rule.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "storage/memory_cache.hpp"
#include "storage/probe_budget.hpp"
#include "storage/redis_budget.hpp"
#include "storage/redis_cache.hpp"
#include "storage/redis_client.hpp"
#include "storage/redis_schema.hpp"
#include "support/redis_server.hpp"
#include "util/uv_timer.hpp"

namespace calloutd::test {
namespace {

using namespace std::chrono_literals;

namespace rs = redis_schema;

// Budget arguments of one admission (0 = unlimited), as RedisProbeBudget passes them.
struct Admission {
    std::string domain = "s.test";
    std::string address = "a@s.test";
    std::string client = "192.0.2.1";
    std::string token = "node:1";
    long long marker_ms = 10000;
    long long domain_count = 0, domain_ms = 60000;
    long long client_count = 0, client_ms = 60000;
    long long global_count = 0, global_ms = 60000;
    long long concurrency = 100;
    long long lifetime_ms = 10000;
    bool refresh = false;
};

class ClusterScripts : public ::testing::Test {
  protected:
    void SetUp() override {
        uv_loop_init(&loop_);
        RedisOptions o;
        o.url = server_.url();
        o.command_timeout = 500ms;
        o.backoff_min = 20ms;
        o.backoff_max = 200ms;
        std::string error;
        client_ = RedisClient::create(&loop_, o, error);
        ASSERT_TRUE(client_) << error;
        // The daemon's registration (daemon/daemon.cpp start_redis).
        client_->register_script("admit", std::string(rs::kAdmitScript));
        client_->register_script("release", std::string(rs::kReleaseScript));
        client_->register_script("store", std::string(rs::kStoreScript));
        client_->register_script("admit_mx", std::string(rs::kAdmitMxScript));
        client_->register_script("random_secret", std::string(rs::kRandomSecretScript));
        client_->register_script("refresh_failed", std::string(rs::kRefreshFailedScript));
        client_->start();
        ASSERT_TRUE(run_until([this] { return client_->is_connected(); }));
    }
    void TearDown() override {
        client_.reset();
        uv_run(&loop_, UV_RUN_DEFAULT);
        EXPECT_EQ(uv_loop_close(&loop_), 0);
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

    RedisReply eval(std::string_view script, const std::vector<std::string>& keys,
                    const std::vector<std::string>& args) {
        std::vector<std::string_view> kv(keys.begin(), keys.end());
        std::vector<std::string_view> av(args.begin(), args.end());
        std::optional<RedisResult> result;
        client_->eval(script, kv, av, [&](RedisResult r) { result = std::move(r); });
        EXPECT_TRUE(run_until([&] { return result.has_value(); }));
        EXPECT_TRUE(result && result->ok()) << (result ? result->error : "no answer");
        return result ? result->reply : RedisReply::error("no answer");
    }

    // The reply as "a,b,c" (strings, integers), for compact expectations.
    static std::string flat(const RedisReply& r) {
        if (!r.is_array()) return r.is_integer() ? std::to_string(r.as_integer()) : r.text();
        std::string out;
        for (const auto& e : r.elements()) {
            if (!out.empty()) out += ',';
            out += e.is_integer() ? std::to_string(e.as_integer()) : e.text();
        }
        return out;
    }

    RedisReply admit(const Admission& a) {
        return eval("admit",
                    {rs::domain_fact_key(a.domain), rs::address_key(a.domain, a.address),
                     rs::in_flight_key(a.domain, a.address), rs::domain_window_key(a.domain),
                     rs::client_window_key(a.client), std::string(rs::kGlobalWindowKey),
                     std::string(rs::kRunningKey)},
                    {a.token, std::to_string(a.marker_ms), std::to_string(a.domain_count),
                     std::to_string(a.domain_ms), std::to_string(a.client_count),
                     std::to_string(a.client_ms), std::to_string(a.global_count),
                     std::to_string(a.global_ms), std::to_string(a.concurrency),
                     std::to_string(a.lifetime_ms), a.refresh ? "1" : "0"});
    }
    RedisReply release(const Admission& a) {
        return eval("release",
                    {std::string(rs::kRunningKey), rs::in_flight_key(a.domain, a.address)},
                    {a.token});
    }
    // The script picks the key (domain fact or address) from the verdict's scope.
    RedisReply store(const Admission& a, const CachedVerdict& v, const std::string& message) {
        return eval("store", {rs::domain_fact_key(a.domain), rs::address_key(a.domain, a.address)},
                    {rs::encode(v), "60000", std::string(rs::kStoredChannel), message});
    }
    RedisReply admit_mx(const std::string& ip, const std::string& token, long long count,
                        long long concurrency, const std::string& provider = "p.test",
                        long long provider_count = 0) {
        return eval("admit_mx",
                    {rs::mx_window_key(ip), rs::mx_running_key(ip), rs::mx_backoff_key(ip),
                     rs::provider_window_key(provider)},
                    {token, std::to_string(count), "60000", std::to_string(concurrency), "10000",
                     std::to_string(provider_count), "60000"});
    }
    long long integer(const std::vector<std::string>& args) {
        return server_.command(args).as_integer();
    }

    RedisServer server_;
    uv_loop_t loop_{};
    std::unique_ptr<RedisClient> client_;
};

CachedVerdict verdict(VerdictClass cls, const std::string& reason) {
    return CachedVerdict{cls, reason, WallClock::now(), "250 2.1.5 ok", false};
}

TEST_F(ClusterScripts, AdmittedThenInFlightThenReleased) {
    Admission a;
    a.marker_ms = 5000;
    EXPECT_EQ(flat(admit(a)), "admitted,node:1");
    EXPECT_EQ(server_.command({"GET", rs::in_flight_key(a.domain, a.address)}).text(), "node:1");
    long long pttl = integer({"PTTL", rs::in_flight_key(a.domain, a.address)});
    EXPECT_GT(pttl, 0);
    EXPECT_LE(pttl, 5000);
    EXPECT_EQ(integer({"ZCARD", std::string(rs::kRunningKey)}), 1);

    Admission other = a;  // another node asks for the same address
    other.token = "node:2";
    EXPECT_EQ(flat(admit(other)), "in_flight");
    EXPECT_EQ(integer({"ZCARD", std::string(rs::kRunningKey)}), 1) << "in_flight spends nothing";

    release(other);  // a stranger's token releases nothing
    EXPECT_EQ(integer({"EXISTS", rs::in_flight_key(a.domain, a.address)}), 1);
    release(a);
    EXPECT_EQ(integer({"EXISTS", rs::in_flight_key(a.domain, a.address)}), 0);
    EXPECT_EQ(integer({"ZCARD", std::string(rs::kRunningKey)}), 0);
    EXPECT_EQ(flat(admit(other)), "admitted,node:2");
}

TEST_F(ClusterScripts, CachedAddressAndDomainFactAnswerBeforeAnyBudget) {
    bool published = false;
    client_->subscribe(std::string(rs::kStoredChannel),
                       [&](const std::string&, const std::string& m) {
                           published = published || m == "s.test a@s.test";
                       });
    ASSERT_TRUE(run_until([this] { return client_->is_subscribed(); }));

    Admission a;
    a.domain_count = 1;
    CachedVerdict v = verdict(VerdictClass::valid, "rcpt-accepted");
    EXPECT_EQ(flat(store(a, v, "s.test a@s.test")), "1");
    EXPECT_TRUE(run_until([&] { return published; })) << "store publishes on calloutd:stored";
    RedisReply r = admit(a);
    ASSERT_EQ(r.elements().size(), 3u) << flat(r);
    EXPECT_EQ(r.elements()[0].text(), "cached");
    EXPECT_EQ(r.elements()[2].text(), "a");
    auto back = rs::decode(r.elements()[1].text());
    ASSERT_TRUE(back);
    EXPECT_EQ(back->cls, VerdictClass::valid);
    EXPECT_EQ(back->reason, "rcpt-accepted");
    EXPECT_EQ(integer({"EXISTS", rs::in_flight_key(a.domain, a.address)}), 0);

    // A failed refresh never replaces the live positive; a definitive answer does.
    EXPECT_EQ(flat(store(a, verdict(VerdictClass::tempfail, "timeout"), "s.test a@s.test")), "0");
    EXPECT_EQ(flat(store(a, verdict(VerdictClass::policy_blocked, "policy"), "s.test a@s.test")),
              "0")
        << "one mailbox's policy reply is no definitive answer";
    EXPECT_EQ(
        rs::decode(server_.command({"GET", rs::address_key(a.domain, a.address)}).text())->cls,
        VerdictClass::valid);

    // A refresh skips the cache and is admitted (it is a real probe).
    Admission refresh = a;
    refresh.refresh = true;
    EXPECT_EQ(flat(admit(refresh)), "admitted,node:1");
    release(refresh);

    // A domain fact answers for every address of the domain that has no verdict of its own.
    CachedVerdict fact = verdict(VerdictClass::accept_all, "random-local-part-accepted");
    fact.scope = EvidenceScope::domain;
    store(a, fact, "s.test ");
    Admission b = a;
    b.address = "b@s.test";
    r = admit(b);
    ASSERT_EQ(r.elements().size(), 3u) << flat(r);
    EXPECT_EQ(r.elements()[0].text(), "cached");
    EXPECT_EQ(r.elements()[2].text(), "d");
    EXPECT_EQ(rs::decode(r.elements()[1].text())->cls, VerdictClass::accept_all);
    // The address's own verdict still answers for it.
    r = admit(a);
    EXPECT_EQ(r.elements()[2].text(), "a") << flat(r);
}

// DESIGN.md "Evidence has a scope", enforced by the scripts themselves: the store script keeps
// a value under the domain only when it is domain-scoped, and admission ignores a domain-key
// value without that flag (one mailbox's policy reply written before scopes existed).
TEST_F(ClusterScripts, OnlyDomainScopedEvidenceBecomesADomainFact) {
    Admission a;
    a.domain = "scope.test";
    a.address = "restricted@scope.test";
    CachedVerdict one = verdict(VerdictClass::policy_blocked, "vendor:m365-restricted-recipient");
    EXPECT_EQ(flat(store(a, one, "scope.test restricted@scope.test")), "1");
    EXPECT_EQ(integer({"EXISTS", rs::domain_fact_key(a.domain)}), 0);
    EXPECT_EQ(integer({"EXISTS", rs::address_key(a.domain, a.address)}), 1);
    Admission other = a;
    other.address = "other@scope.test";
    other.token = "node:2";
    EXPECT_EQ(flat(admit(other)), "admitted,node:2") << "the other address is still probed";
    release(other);

    // A legacy value under the domain key (no scope flag) speaks for no one.
    server_.command({"SET", rs::domain_fact_key(a.domain), "v1|policy_blocked|0||policy 550|"});
    EXPECT_EQ(flat(admit(other)), "admitted,node:2");
    release(other);

    // The same refusal for the random local part: a domain fact, for every address...
    CachedVerdict refused = verdict(VerdictClass::policy_blocked, "probes-refused: policy");
    refused.scope = EvidenceScope::domain;
    EXPECT_EQ(flat(store(a, refused, "scope.test restricted@scope.test")), "1");
    RedisReply r = admit(other);
    ASSERT_EQ(r.elements().size(), 3u) << flat(r);
    EXPECT_EQ(r.elements()[2].text(), "d");
    // ... but never over an address's own answer, unless the domain has no mail at all.
    Admission known = a;
    known.address = "gone@scope.test";
    store(known, verdict(VerdictClass::invalid, "user-unknown"), "scope.test gone@scope.test");
    r = admit(known);
    EXPECT_EQ(r.elements()[2].text(), "a") << flat(r);
    EXPECT_EQ(rs::decode(r.elements()[1].text())->cls, VerdictClass::invalid);
    CachedVerdict nx = verdict(VerdictClass::no_mail_domain, "dns nxdomain");
    nx.scope = EvidenceScope::domain;
    store(a, nx, "scope.test ");
    r = admit(known);
    EXPECT_EQ(r.elements()[2].text(), "d") << flat(r);
    EXPECT_EQ(rs::decode(r.elements()[1].text())->cls, VerdictClass::no_mail_domain);
}

// The Redis cache backend keeps each verdict at its scope and shares the "not accept-all" fact:
// a node that never probed the domain learns it from Redis.
TEST_F(ClusterScripts, RedisCacheKeepsScopesAndSharesTheNotAcceptAllFact) {
    const CacheTtls ttls{31 * 24h, 3 * 24h, 10min, 24h, 7 * 24h, 1h};
    MemoryVerdictCache local_a(100, ttls);
    MemoryVerdictCache local_b(100, ttls);
    RedisVerdictCache a(*client_, local_a, ttls, 0ms);
    RedisVerdictCache b(*client_, local_b, ttls, 0ms);  // another node, same Redis

    auto lookup = [&](RedisVerdictCache& cache, const std::string& address) {
        std::optional<std::optional<CacheHit>> got;
        cache.lookup("n.test", address, [&](std::optional<CacheHit> h) { got = std::move(h); });
        EXPECT_TRUE(run_until([&] { return got.has_value(); }));
        return got.value_or(std::nullopt);
    };

    a.store("n.test", "restricted@n.test",
            verdict(VerdictClass::policy_blocked, "vendor:m365-restricted-recipient"));
    run_for(100ms);
    EXPECT_FALSE(lookup(b, "other@n.test")) << "one mailbox's reply is no domain fact";
    auto own = lookup(b, "restricted@n.test");
    ASSERT_TRUE(own);
    EXPECT_EQ(own->verdict.cls, VerdictClass::policy_blocked);
    EXPECT_FALSE(own->domain_fact);

    std::optional<bool> known = b.not_accept_all("n.test", [&](bool v) { known = v; });
    EXPECT_FALSE(known.has_value()) << "asks Redis";
    ASSERT_TRUE(run_until([&] { return known.has_value(); }));
    EXPECT_FALSE(*known);
    a.store_not_accept_all("n.test", WallClock::now());
    EXPECT_EQ(a.not_accept_all("n.test", {}), std::optional<bool>(true)) << "known locally";
    run_for(100ms);
    known.reset();
    EXPECT_FALSE(b.not_accept_all("n.test", [&](bool v) { known = v; }).has_value());
    ASSERT_TRUE(run_until([&] { return known.has_value(); }));
    EXPECT_TRUE(*known) << "learnt from Redis";
    EXPECT_GT(integer({"PTTL", rs::not_accept_all_key("n.test")}), 23 * 3600 * 1000);
}

TEST_F(ClusterScripts, RandomSecretIsCreatedOnceAndShared) {
    std::string key(rs::kRandomSecretKey);
    EXPECT_EQ(flat(eval("random_secret", {key}, {"first"})), "first");
    EXPECT_EQ(flat(eval("random_secret", {key}, {"second"})), "first") << "the first one stays";
}

TEST_F(ClusterScripts, OverBudgetPerDomainClientGlobalAndConcurrency) {
    Admission a;
    a.domain_count = 2;
    for (int i = 0; i < 2; ++i) {
        a.address = "u" + std::to_string(i) + "@s.test";
        a.token = "t" + std::to_string(i);
        EXPECT_EQ(flat(admit(a)), "admitted," + a.token);
    }
    a.address = "u2@s.test";
    EXPECT_EQ(flat(admit(a)), "denied,domain");
    EXPECT_EQ(integer({"EXISTS", rs::in_flight_key(a.domain, a.address)}), 0)
        << "a denial sets no marker";

    Admission c;  // one client, many domains
    c.client = "192.0.2.99";
    c.client_count = 1;
    c.domain = "c1.test";
    c.address = "x@c1.test";
    c.token = "c1";
    EXPECT_EQ(flat(admit(c)), "admitted,c1");
    c.domain = "c2.test";
    c.address = "x@c2.test";
    c.token = "c2";
    EXPECT_EQ(flat(admit(c)), "denied,client");

    // Windows record only the budgets that are limited: the global one starts here.
    Admission g;
    g.client = "192.0.2.50";
    g.domain = "g.test";
    g.address = "y@g.test";
    g.token = "g1";
    g.global_count = 1;
    EXPECT_EQ(flat(admit(g)), "admitted,g1");
    Admission g2 = g;
    g2.address = "z@g.test";
    g2.token = "g2";
    EXPECT_EQ(flat(admit(g2)), "denied,global");

    Admission k;  // global concurrency: t0, t1, c1 and g1 are running
    k.domain = "k.test";
    k.address = "k@k.test";
    k.client = "192.0.2.51";
    k.token = "k1";
    k.concurrency = 4;
    EXPECT_EQ(flat(admit(k)), "denied,global");
    EXPECT_EQ(integer({"ZCARD", std::string(rs::kRunningKey)}), 4);
    release(g);  // frees one running slot
    EXPECT_EQ(flat(admit(k)), "admitted,k1");
}

TEST_F(ClusterScripts, MarkerAndWindowsExpire) {
    Admission a;
    a.marker_ms = 150;
    a.domain_count = 1;
    a.domain_ms = 300;
    EXPECT_EQ(flat(admit(a)), "admitted,node:1");
    Admission again = a;
    again.token = "node:2";
    EXPECT_EQ(flat(admit(again)), "in_flight");
    run_for(200ms);  // the prober died: its marker expires by itself
    EXPECT_EQ(integer({"EXISTS", rs::in_flight_key(a.domain, a.address)}), 0);
    EXPECT_EQ(flat(admit(again)), "denied,domain") << "the window still holds the first probe";
    run_for(200ms);
    EXPECT_EQ(flat(admit(again)), "admitted,node:2") << "the sliding window moved on";
}

TEST_F(ClusterScripts, MxAdmissionConcurrencyRateAndBackoff) {
    EXPECT_EQ(flat(admit_mx("192.0.2.25", "m1", 2, 1)), "admitted,m1");
    EXPECT_EQ(flat(admit_mx("192.0.2.25", "m2", 2, 1)), "denied,concurrency");
    server_.command({"ZREM", rs::mx_running_key("192.0.2.25"), "m1"});
    EXPECT_EQ(flat(admit_mx("192.0.2.25", "m3", 2, 1)), "admitted,m3");
    server_.command({"ZREM", rs::mx_running_key("192.0.2.25"), "m3"});
    EXPECT_EQ(flat(admit_mx("192.0.2.25", "m4", 2, 1)), "denied,rate");
    server_.command({"SET", rs::mx_backoff_key("192.0.2.26"), "1", "PX", "60000"});
    EXPECT_EQ(flat(admit_mx("192.0.2.26", "m5", 2, 1)), "denied,backoff");
}

// One provider, five MX IPs: the provider window binds across them, and a connection it
// refuses spends nothing at the IP.
TEST_F(ClusterScripts, MxAdmissionProviderRateSpansItsIps) {
    int admitted = 0;
    for (int i = 0; i < 20; ++i) {
        std::string ip = "192.0.2." + std::to_string(40 + i % 5);
        std::string token = "p" + std::to_string(i);
        std::string r = flat(admit_mx(ip, token, 100, 100, "bigprovider.test", 3));
        if (r == "admitted," + token) {
            ++admitted;
        } else {
            EXPECT_EQ(r, "denied,provider");
        }
    }
    EXPECT_EQ(admitted, 3);
    EXPECT_EQ(integer({"ZCARD", rs::provider_window_key("bigprovider.test")}), 3);
    long long at_ips = 0;
    for (int i = 0; i < 5; ++i) {
        at_ips += integer({"ZCARD", rs::mx_window_key("192.0.2." + std::to_string(40 + i))});
    }
    EXPECT_EQ(at_ips, 3) << "a refused connection must not count at its IP";
    EXPECT_EQ(flat(admit_mx("192.0.2.40", "q1", 100, 100, "other.test", 3)), "admitted,q1");
}

// A failed refresh is recorded in the live valid verdict, keeping its TTL, and announced.
TEST_F(ClusterScripts, RefreshFailedMarksALiveValidAndKeepsItsTtl) {
    std::string key = rs::address_key("s.test", "a@s.test");
    CachedVerdict v = verdict(VerdictClass::valid, "rcpt-accepted");
    ASSERT_EQ(flat(store(Admission{}, v, "s.test a@s.test")), "1");
    long long ttl_before = integer({"PTTL", key});
    auto mark = [&](const std::string& k, long long ms) {
        return flat(eval("refresh_failed", {k},
                         {std::to_string(ms), std::string(rs::kStoredChannel), "s.test a@s.test"}));
    };
    EXPECT_EQ(mark(key, 1764317400456), "1");
    auto back = rs::decode(server_.command({"GET", key}).text());
    ASSERT_TRUE(back);
    EXPECT_EQ(back->cls, VerdictClass::valid);
    EXPECT_EQ(back->reason, "rcpt-accepted");
    EXPECT_EQ(back->refresh_failed_at,
              WallClock::time_point(std::chrono::milliseconds(1764317400456)));
    long long ttl_after = integer({"PTTL", key});
    EXPECT_GT(ttl_after, 0);
    EXPECT_LE(ttl_after, ttl_before);
    EXPECT_GT(ttl_after, ttl_before - 5000) << "the TTL is kept, not reset or dropped";
    EXPECT_EQ(mark(key, 1764317500000), "1");  // a later failure replaces the earlier time
    EXPECT_EQ(rs::decode(server_.command({"GET", key}).text())->refresh_failed_at,
              WallClock::time_point(std::chrono::milliseconds(1764317500000)));
    // Nothing to mark: no verdict, or one that is not valid.
    EXPECT_EQ(mark(rs::address_key("s.test", "none@s.test"), 1), "0");
    std::string bad = rs::address_key("s.test", "b@s.test");
    Admission b;
    b.address = "b@s.test";
    store(b, verdict(VerdictClass::invalid, "unknown"), "s.test b@s.test");
    EXPECT_EQ(mark(bad, 1), "0");
    EXPECT_EQ(rs::decode(server_.command({"GET", bad}).text())->refresh_failed_at,
              WallClock::time_point{});
}

// An MX slot granted locally because Redis did not answer in time keeps the Redis token: when
// Redis runs that admission late, the release frees the slot there too instead of leaving it
// taken cluster-wide for the probe lifetime.
TEST_F(ClusterScripts, MxSlotAdmittedLateByRedisIsReleasedWithTheLocalOne) {
    static constexpr Rate kUnlimited{0, std::chrono::milliseconds(0), true};
    BudgetLimits limits{kUnlimited, kUnlimited, kUnlimited, 100, kUnlimited, 5};
    MemoryProbeBudget local(limits);
    RedisProbeBudget budget(*client_, local, limits, 10000ms, "late");
    const std::string ip = "192.0.2.60";
    auto running = [&] { return integer({"ZCARD", rs::mx_running_key(ip)}); };

    server_.pause();
    std::optional<BudgetDecision> decided;
    ASSERT_FALSE(budget.admit_mx(ip, "p.test", [&](BudgetDecision d) { decided = d; }));
    ASSERT_TRUE(run_until([&] { return decided.has_value(); }, 3s));
    EXPECT_TRUE(decided->admitted) << "decided locally after redis.timeout";
    EXPECT_EQ(local.mx_running(ip), 1);
    server_.resume();
    ASSERT_TRUE(run_until([this] { return client_->is_connected(); }, 10s));
    // Redis read the admission before it stopped answering, and runs it now.
    for (auto deadline = std::chrono::steady_clock::now() + 3s;
         running() == 0 && std::chrono::steady_clock::now() < deadline;) {
        run_for(20ms);
    }
    ASSERT_EQ(running(), 1) << "the late admission took a slot in Redis";

    budget.release_mx(ip);
    EXPECT_EQ(local.mx_running(ip), 0);
    for (auto deadline = std::chrono::steady_clock::now() + 3s;
         running() != 0 && std::chrono::steady_clock::now() < deadline;) {
        run_for(20ms);
    }
    EXPECT_EQ(running(), 0) << "the release freed the slot Redis granted late";
}

// The token of a probe says who granted it: Redis ({local = false, its token}), or the local
// budget after Redis did not answer in time ({local = true, the unanswered token}). When Redis
// runs that admission late, the release clears its in-flight marker and running slot too.
TEST_F(ClusterScripts, ProbeTokenNamesWhoGrantedItAndReleasesALateAdmission) {
    static constexpr Rate kUnlimited{0, std::chrono::milliseconds(0), true};
    BudgetLimits limits{kUnlimited, kUnlimited, kUnlimited, 100, kUnlimited, 5};
    MemoryProbeBudget local(limits);
    RedisProbeBudget budget(*client_, local, limits, 10000ms, "late");
    auto admit_now = [&](const std::string& address) {
        std::optional<BudgetDecision> decided;
        EXPECT_FALSE(budget.admit_probe("s.test", address, "192.0.2.1", false,
                                        [&](BudgetDecision d) { decided = d; }));
        EXPECT_TRUE(run_until([&] { return decided.has_value(); }, 3s));
        return decided.value_or(BudgetDecision{});
    };
    auto marker = [&](const std::string& address) {
        return integer({"EXISTS", rs::in_flight_key("s.test", address)});
    };

    BudgetDecision shared = admit_now("a@s.test");
    ASSERT_TRUE(shared.admitted);
    EXPECT_EQ(shared.token, (ProbeToken{false, "late:1"}));
    EXPECT_EQ(marker("a@s.test"), 1);
    budget.release_probe("s.test", "a@s.test", shared.token);
    ASSERT_TRUE(run_until([&] { return marker("a@s.test") == 0; }, 3s));

    server_.pause();
    BudgetDecision degraded = admit_now("b@s.test");
    ASSERT_TRUE(degraded.admitted) << "decided locally after redis.timeout";
    EXPECT_EQ(degraded.token, (ProbeToken{true, "late:2"}));
    EXPECT_EQ(local.probes_running(), 1);
    server_.resume();
    ASSERT_TRUE(run_until([this] { return client_->is_connected(); }, 10s));
    // Redis read the admission before it stopped answering, and runs it now.
    for (auto deadline = std::chrono::steady_clock::now() + 3s;
         marker("b@s.test") == 0 && std::chrono::steady_clock::now() < deadline;) {
        run_for(20ms);
    }
    ASSERT_EQ(marker("b@s.test"), 1) << "the late admission set its marker";
    budget.release_probe("s.test", "b@s.test", degraded.token);
    EXPECT_EQ(local.probes_running(), 0);
    EXPECT_TRUE(run_until([&] { return marker("b@s.test") == 0; }, 3s))
        << "the release cleared the marker Redis set late";
    EXPECT_EQ(integer({"ZCARD", std::string(rs::kRunningKey)}), 0);
}

TEST_F(ClusterScripts, ScriptFlushIsAnsweredByTransparentReload) {
    Admission a;
    EXPECT_EQ(flat(admit(a)), "admitted,node:1");
    release(a);
    auto reloads = client_->stats().script_reloads;
    EXPECT_EQ(server_.command({"SCRIPT", "FLUSH"}).text(), "OK");
    EXPECT_EQ(flat(admit(a)), "admitted,node:1") << "NOSCRIPT is retried with EVAL";
    EXPECT_EQ(client_->stats().script_reloads, reloads + 1);
    release(a);  // each script is reloaded by its own first NOSCRIPT
    EXPECT_EQ(integer({"EXISTS", rs::in_flight_key(a.domain, a.address)}), 0);
    EXPECT_EQ(client_->stats().script_reloads, reloads + 2);
    EXPECT_EQ(flat(admit(a)), "admitted,node:1") << "EVALSHA works again after the EVAL";
    EXPECT_EQ(client_->stats().script_reloads, reloads + 2);
}

}  // namespace
}  // namespace calloutd::test
