// DnsResolver against a real dnsmasq serving test zones, and a fake server for SERVFAIL/timeouts.
// Over 500 lines as one concept: the resolver against one dnsmasq and its zones.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "callout/dns_canary.hpp"
#include "callout/dns_resolver.hpp"
#include "support/dnsmasq.hpp"
#include "support/fake_dns.hpp"
#include "support/text.hpp"

namespace calloutd {
namespace {

using namespace std::chrono_literals;
using test::Dnsmasq;
using test::DnsmasqZones;
using test::FakeDnsServer;
using Status = MxResolution::Status;

// The test zones: every case the resolver must tell apart.
DnsmasqZones test_zones(const std::string& servfail_upstream, const std::string& silent_upstream) {
    DnsmasqZones z;
    z.local_domains = {"test"};
    z.mx = {
        {"mx.test", "mx2.mx.test", 20},
        {"mx.test", "mx1.mx.test", 10},
        {"mx.test", "mx3.mx.test", 30},
        {"equal.test", "e.equal.test", 20},
        {"equal.test", "a.equal.test", 10},
        {"equal.test", "b.equal.test", 10},
        {"equal.test", "c.equal.test", 10},
        {"equal.test", "d.equal.test", 10},
        {"nullmx.test", ".", 0},
        {"mxnoaddr.test", "ghost.mxnoaddr.test", 10},
        {"partial.test", "host.slow.test", 10},
        {"partial.test", "ghost.partial.test", 15},
        {"partial.test", "mx1.mx.test", 20},
        {"dup.test", "mx1.mx.test", 10},
        {"dup.test", "MX1.mx.test", 20},
    };
    z.hosts = {
        {"mx1.mx.test", {"127.0.0.11"}},
        {"mx2.mx.test", {"127.0.0.12", "2001:db8::12"}},
        {"mx3.mx.test", {"::1"}},
        {"a.equal.test", {"127.0.1.1"}},
        {"b.equal.test", {"127.0.1.2"}},
        {"c.equal.test", {"127.0.1.3"}},
        {"d.equal.test", {"127.0.1.4"}},
        {"e.equal.test", {"127.0.1.5"}},
        {"implicit.test", {"127.0.0.13", "2001:db8::13"}},
        {"v6only.test", {"2001:db8::14"}},
    };
    z.txt_only = {"noaddr.test"};
    z.cnames = {{"alias.test", "implicit.test"}};
    z.forwards = {{"servfail.test", servfail_upstream}, {"slow.test", silent_upstream}};
    return z;
}

// One libuv loop per test; closing it also proves no handle was left open.
class DnsResolverTest : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        servfail_ = std::make_unique<FakeDnsServer>(FakeDnsServer::Mode::servfail);
        silent_ = std::make_unique<FakeDnsServer>(FakeDnsServer::Mode::silent);
        dnsmasq_ = std::make_unique<Dnsmasq>(
            test_zones(servfail_->dnsmasq_upstream(), silent_->dnsmasq_upstream()));
    }
    static void TearDownTestSuite() {
        dnsmasq_.reset();
        silent_.reset();
        servfail_.reset();
    }

    void SetUp() override { ASSERT_EQ(uv_loop_init(&loop_), 0); }
    void TearDown() override {
        uv_run(&loop_, UV_RUN_DEFAULT);  // lets closing handles finish
        EXPECT_EQ(uv_loop_close(&loop_), 0) << "a libuv handle was left open";
        if (HasFailure()) std::cerr << "--- dnsmasq log ---\n" << dnsmasq_->log();
    }

    std::unique_ptr<DnsResolver> make(DnsOptions options) {
        std::string error;
        auto r = DnsResolver::create(&loop_, std::move(options), error);
        EXPECT_TRUE(r) << error;
        return r;
    }
    DnsOptions local_options(std::optional<std::uint64_t> seed = 1) {
        DnsOptions o;
        o.servers = {dnsmasq_->server()};
        o.timeout = 300ms;
        o.tries = 2;
        o.shuffle_seed = seed;
        return o;
    }

    // Runs the loop until done() or the limit; a repeating guard timer keeps UV_RUN_ONCE moving.
    bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 10s) {
        uv_timer_t guard;
        uv_timer_init(&loop_, &guard);
        uv_timer_start(
            &guard, [](uv_timer_t*) {}, 10, 10);
        auto deadline = std::chrono::steady_clock::now() + limit;
        while (!done() && std::chrono::steady_clock::now() < deadline) uv_run(&loop_, UV_RUN_ONCE);
        uv_close(reinterpret_cast<uv_handle_t*>(&guard), nullptr);
        uv_run(&loop_, UV_RUN_NOWAIT);
        return done();
    }

    MxResolution resolve(DnsResolver& r, const std::string& domain) {
        std::optional<MxResolution> out;
        r.resolve_mx(domain, [&](MxResolution res) { out = std::move(res); });
        EXPECT_TRUE(run_until([&] { return out.has_value(); })) << domain << " never completed";
        return out.value_or(MxResolution{});
    }
    MxResolution resolve_local(const std::string& domain) {
        auto r = make(local_options());
        return resolve(*r, domain);
    }

    static std::vector<std::string> names(const MxResolution& res) {
        std::vector<std::string> out;
        for (const auto& h : res.hosts) out.push_back(h.name);
        return out;
    }

    uv_loop_t loop_{};
    static inline std::unique_ptr<FakeDnsServer> servfail_;
    static inline std::unique_ptr<FakeDnsServer> silent_;
    static inline std::unique_ptr<Dnsmasq> dnsmasq_;
};

TEST_F(DnsResolverTest, MxSortedByPreferenceWithAddressesAThenAaaa) {
    MxResolution res = resolve_local("mx.test");
    ASSERT_EQ(res.status, Status::ok) << res.reason;
    EXPECT_EQ(res.reason, "mx");
    ASSERT_EQ(names(res), (std::vector<std::string>{"mx1.mx.test", "mx2.mx.test", "mx3.mx.test"}));
    EXPECT_EQ(res.hosts[0].preference, 10);
    EXPECT_EQ(res.hosts[1].preference, 20);
    EXPECT_FALSE(res.hosts[0].implicit);
    EXPECT_EQ(res.hosts[0].addresses, (std::vector<std::string>{"127.0.0.11"}));
    EXPECT_EQ(res.hosts[1].addresses, (std::vector<std::string>{"127.0.0.12", "2001:db8::12"}));
    EXPECT_EQ(res.hosts[2].addresses, (std::vector<std::string>{"::1"}));
}

TEST_F(DnsResolverTest, TrailingDotAndCaseAreNormalised) {
    MxResolution res = resolve_local("MX.Test.");
    ASSERT_EQ(res.status, Status::ok) << res.reason;
    EXPECT_EQ(res.hosts.size(), 3u);
}

TEST_F(DnsResolverTest, EqualPreferencesAreShuffledDeterministicallyPerSeed) {
    std::set<std::vector<std::string>> orders;
    for (std::uint64_t seed = 1; seed <= 12; ++seed) {
        auto r = make(local_options(seed));
        MxResolution first = resolve(*r, "equal.test");
        ASSERT_EQ(first.status, Status::ok) << first.reason;
        std::vector<std::string> order = names(first);
        ASSERT_EQ(order.size(), 5u);
        EXPECT_EQ(order.back(), "e.equal.test") << "preference 20 must stay last";
        EXPECT_EQ(std::set<std::string>(order.begin(), order.end() - 1),
                  (std::set<std::string>{"a.equal.test", "b.equal.test", "c.equal.test",
                                         "d.equal.test"}));
        auto again = make(local_options(seed));
        EXPECT_EQ(names(resolve(*again, "equal.test")), order) << "same seed, same order";
        orders.insert(order);
    }
    EXPECT_GE(orders.size(), 3u) << "12 seeds should give several orders of 4 equal hosts";
}

TEST_F(DnsResolverTest, DuplicateMxHostsAreMergedKeepingTheBestPreference) {
    MxResolution res = resolve_local("dup.test");
    ASSERT_EQ(res.status, Status::ok) << res.reason;
    ASSERT_EQ(names(res), (std::vector<std::string>{"mx1.mx.test"}));
    EXPECT_EQ(res.hosts[0].preference, 10);
}

TEST_F(DnsResolverTest, NoMxMeansImplicitMxFromTheDomainsAddresses) {
    MxResolution res = resolve_local("implicit.test");
    ASSERT_EQ(res.status, Status::ok) << res.reason;
    EXPECT_EQ(res.reason, "implicit-mx");
    ASSERT_EQ(res.hosts.size(), 1u);
    EXPECT_EQ(res.hosts[0].name, "implicit.test");
    EXPECT_TRUE(res.hosts[0].implicit);
    EXPECT_EQ(res.hosts[0].preference, 0);
    EXPECT_EQ(res.hosts[0].addresses, (std::vector<std::string>{"127.0.0.13", "2001:db8::13"}));
}

// Found by fuzzing: an MX answer with only a CNAME (the canonical name has no MX) was taken for
// an answer without any record and called no_mail_domain (a 5.1.8 rejection) instead of the
// implicit MX of RFC 5321 5.1.
TEST_F(DnsResolverTest, CnameWithoutMxMeansImplicitMx) {
    auto res = resolve_local("alias.test");
    EXPECT_EQ(res.status, Status::ok) << res.reason;
    EXPECT_EQ(res.reason, "implicit-mx");
    ASSERT_EQ(res.hosts.size(), 1u);
    EXPECT_EQ(res.hosts[0].name, "alias.test");
    EXPECT_EQ(res.hosts[0].addresses, (std::vector<std::string>{"127.0.0.13", "2001:db8::13"}));
}

TEST_F(DnsResolverTest, ImplicitMxWithOnlyAaaa) {
    MxResolution res = resolve_local("v6only.test");
    ASSERT_EQ(res.status, Status::ok) << res.reason;
    ASSERT_EQ(res.hosts.size(), 1u);
    EXPECT_EQ(res.hosts[0].addresses, (std::vector<std::string>{"2001:db8::14"}));
}

TEST_F(DnsResolverTest, NullMxIsNoMailDomain) {
    MxResolution res = resolve_local("nullmx.test");
    EXPECT_EQ(res.status, Status::no_mail_domain);
    EXPECT_EQ(res.reason, "null-mx");
    EXPECT_TRUE(res.hosts.empty());
}

TEST_F(DnsResolverTest, NxdomainIsNoMailDomain) {
    MxResolution res = resolve_local("no-such-domain.test");
    EXPECT_EQ(res.status, Status::no_mail_domain);
    EXPECT_EQ(res.reason, "nxdomain");
}

TEST_F(DnsResolverTest, NoMxAndNoAddressIsNoMailDomain) {
    MxResolution res = resolve_local("noaddr.test");
    EXPECT_EQ(res.status, Status::no_mail_domain);
    EXPECT_EQ(res.reason, "no-mx-no-address");
}

TEST_F(DnsResolverTest, MxHostsWithoutAnyAddressAreTempfail) {
    MxResolution res = resolve_local("mxnoaddr.test");
    EXPECT_EQ(res.status, Status::tempfail);
    EXPECT_EQ(res.reason, "mx-without-address");
}

TEST_F(DnsResolverTest, HostsWhoseLookupsFailAreDropped) {
    // host.slow.test times out, ghost.partial.test is NXDOMAIN; mx1.mx.test remains.
    MxResolution res = resolve_local("partial.test");
    ASSERT_EQ(res.status, Status::ok) << res.reason;
    EXPECT_EQ(names(res), (std::vector<std::string>{"mx1.mx.test"}));
    EXPECT_EQ(res.hosts[0].preference, 20);
}

TEST_F(DnsResolverTest, BadNameIsNoMailDomain) {
    MxResolution res = resolve_local("bad name.test");
    EXPECT_EQ(res.status, Status::no_mail_domain);
    EXPECT_EQ(res.reason, "bad-name");
}

TEST_F(DnsResolverTest, RefusedIsTempfail) {
    // dnsmasq has no upstream, so a name outside its zones is REFUSED.
    MxResolution res = resolve_local("example.org");
    EXPECT_EQ(res.status, Status::tempfail);
    EXPECT_EQ(res.reason, "refused");
}

TEST_F(DnsResolverTest, ServfailFromServerIsTempfail) {
    DnsOptions o = local_options();
    o.servers = {servfail_->server()};
    auto r = make(o);
    MxResolution res = resolve(*r, "example.org");
    EXPECT_EQ(res.status, Status::tempfail);
    EXPECT_EQ(res.reason, "servfail");
}

TEST_F(DnsResolverTest, ServfailFromTheFirstOfSeveralServersFailsOver) {
    DnsOptions o = local_options();
    o.servers = {servfail_->server(), dnsmasq_->server()};
    auto r = make(o);
    MxResolution res = resolve(*r, "mx.test");
    ASSERT_EQ(res.status, Status::ok) << res.reason;
    EXPECT_EQ(res.hosts.size(), 3u);
}

TEST_F(DnsResolverTest, EveryServerFailingIsTempfail) {
    DnsOptions o = local_options();
    o.servers = {servfail_->server(), dnsmasq_->server()};
    auto r = make(o);
    MxResolution res = resolve(*r, "example.org");  // SERVFAIL, then REFUSED
    EXPECT_EQ(res.status, Status::tempfail);
    EXPECT_EQ(res.reason, "all-servers-failed");
}

TEST_F(DnsResolverTest, ServfailRelayedByDnsmasqIsTempfail) {
    MxResolution res = resolve_local("x.servfail.test");
    EXPECT_EQ(res.status, Status::tempfail);
    EXPECT_EQ(res.reason, "servfail");
}

TEST_F(DnsResolverTest, ServerTimeoutIsTempfailWithinTheRetryBound) {
    DnsOptions o = local_options();
    o.servers = {silent_->server()};
    o.timeout = 200ms;
    o.tries = 2;
    auto r = make(o);
    auto start = std::chrono::steady_clock::now();
    MxResolution res = resolve(*r, "example.org");
    auto elapsed = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(res.status, Status::tempfail);
    EXPECT_EQ(res.reason, "dns-timeout");
    // c-ares 1.18 doubles the per-try timeout on each pass over the servers: 200 + 400 ms.
    EXPECT_GE(elapsed, 550ms);
    EXPECT_LT(elapsed, 1200ms);
}

TEST_F(DnsResolverTest, SingleTryTimeoutIsTheTimeout) {
    DnsOptions o = local_options();
    o.servers = {silent_->server()};
    o.timeout = 200ms;
    o.tries = 1;
    auto r = make(o);
    auto start = std::chrono::steady_clock::now();
    MxResolution res = resolve(*r, "example.org");
    auto elapsed = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(res.reason, "dns-timeout");
    EXPECT_GE(elapsed, 190ms);
    EXPECT_LT(elapsed, 600ms);
}

TEST_F(DnsResolverTest, CallbackIsNeverSynchronous) {
    auto r = make(local_options());
    bool called = false;
    r->resolve_mx("bad name", [&](MxResolution) { called = true; });
    r->resolve_mx("mx.test", [&](MxResolution) { called = true; });
    EXPECT_FALSE(called);
    EXPECT_TRUE(run_until([&] { return called; }));
}

TEST_F(DnsResolverTest, CancelledLookupNeverCallsBackAndItsLateAnswerIsDropped) {
    auto r = make(local_options());
    bool cancelled_called = false;
    std::optional<MxResolution> other;
    auto h = r->resolve_mx("mx.test", [&](MxResolution) { cancelled_called = true; });
    r->resolve_mx("implicit.test", [&](MxResolution res) { other = std::move(res); });
    EXPECT_TRUE(r->cancel(h));
    EXPECT_FALSE(r->cancel(h)) << "a second cancel finds nothing";
    ASSERT_TRUE(run_until([&] { return other.has_value(); }));
    // Let the cancelled query's answer (and its A/AAAA follow-ups, if any) arrive and drop.
    run_until([] { return false; }, 200ms);
    EXPECT_FALSE(cancelled_called);
    EXPECT_EQ(other->status, Status::ok);
    EXPECT_EQ(r->in_flight(), 0u);
}

TEST_F(DnsResolverTest, CancelAfterCompletionBeforeDeliverySuppressesTheCallback) {
    auto r = make(local_options());
    bool called = false;
    // A bad name completes at once but is delivered on the next loop turn.
    auto h = r->resolve_mx("bad name", [&](MxResolution) { called = true; });
    EXPECT_TRUE(r->cancel(h));
    run_until([] { return false; }, 50ms);
    EXPECT_FALSE(called);
}

TEST_F(DnsResolverTest, CallbackMayCancelAnotherCompletedLookup) {
    auto r = make(local_options());
    int calls = 0;
    DnsResolver::Handle second = 0;
    r->resolve_mx("bad name", [&](MxResolution) {
        ++calls;
        r->cancel(second);
    });
    second = r->resolve_mx("bad-name-too ", [&](MxResolution) { ++calls; });
    run_until([] { return false; }, 50ms);
    EXPECT_EQ(calls, 1);
}

TEST_F(DnsResolverTest, DestroyingTheResolverWithQueriesInFlightIsSafe) {
    DnsOptions o = local_options();
    o.servers = {silent_->server()};
    auto r = make(o);
    bool called = false;
    for (int i = 0; i < 5; ++i) r->resolve_mx("example.org", [&](MxResolution) { called = true; });
    run_until([] { return false; }, 50ms);  // the queries are on the wire now
    EXPECT_GT(silent_->queries_seen(), 0);
    r.reset();
    run_until([] { return false; }, 100ms);
    EXPECT_FALSE(called);
}

TEST_F(DnsResolverTest, CallbackMayDestroyTheResolver) {
    auto r = make(local_options());
    int calls = 0;
    // Both complete in the same delivery batch; the first destroys the resolver.
    r->resolve_mx("bad name", [&](MxResolution) {
        ++calls;
        r.reset();
    });
    r->resolve_mx("bad name 2", [&](MxResolution) { ++calls; });
    r->resolve_mx("mx.test", [&](MxResolution) { ++calls; });
    run_until([] { return false; }, 200ms);
    EXPECT_EQ(calls, 1);
    EXPECT_FALSE(r);
}

TEST_F(DnsResolverTest, ManyConcurrentLookups) {
    auto r = make(local_options());
    const std::vector<std::pair<std::string, Status>> cases = {
        {"mx.test", Status::ok},
        {"implicit.test", Status::ok},
        {"nullmx.test", Status::no_mail_domain},
        {"no-such-domain.test", Status::no_mail_domain},
        {"equal.test", Status::ok},
        {"example.org", Status::tempfail},
    };
    constexpr int kRounds = 50;
    int done = 0;
    int wrong = 0;
    for (int i = 0; i < kRounds; ++i) {
        for (const auto& [domain, expected] : cases) {
            r->resolve_mx(domain, [&, domain = domain, expected = expected](MxResolution res) {
                ++done;
                if (res.status != expected) {
                    ++wrong;
                    ADD_FAILURE() << domain << ": " << res.reason;
                }
            });
        }
    }
    const int total = kRounds * static_cast<int>(cases.size());
    EXPECT_EQ(r->in_flight(), static_cast<std::size_t>(total));
    ASSERT_TRUE(run_until([&] { return done == total; }, 30s)) << done << " of " << total;
    EXPECT_EQ(wrong, 0);
    EXPECT_EQ(r->in_flight(), 0u);
}

TEST_F(DnsResolverTest, AddressLookupsGoBeforeTheMxLookupsOfLaterDomains) {
    // A burst of domains finishes domain by domain: the first domain's A and AAAA queries do
    // not wait behind the MX queries of all the others (its probe can connect at once).
    DnsOptions o = local_options();
    o.max_outstanding_queries = 1;  // one query on the wire: dnsmasq sees the queue's order
    auto r = make(o);
    size_t log_before = dnsmasq_->log().size();
    constexpr int kDomains = 50;
    int done = 0;
    for (int i = 0; i < kDomains; ++i) {
        r->resolve_mx("implicit.test", [&](MxResolution res) {
            EXPECT_EQ(res.status, Status::ok) << res.reason;
            ++done;
        });
    }
    ASSERT_TRUE(run_until([&] { return done == kDomains; }, 30s));
    std::string asked;
    std::istringstream log(dnsmasq_->log().substr(log_before));
    for (std::string line; std::getline(log, line);) {
        for (const char* type : {"query[MX] implicit.test ", "query[A] implicit.test ",
                                 "query[AAAA] implicit.test "}) {
            if (line.find(type) != std::string::npos) asked += std::string(type).substr(6, 2);
        }
    }
    // "MX" "A]" "AA" per domain, each domain's three together.
    std::string one = "MXA]AA";
    std::string expected;
    for (int i = 0; i < kDomains; ++i) expected += one;
    EXPECT_EQ(asked, expected);
}

TEST_F(DnsResolverTest, MxHostsAndAddressesAreCapped) {
    DnsOptions o = local_options();
    o.max_mx_hosts = 2;
    o.max_addresses_per_host = 1;
    auto r = make(o);
    MxResolution res = resolve(*r, "mx.test");
    ASSERT_EQ(res.status, Status::ok);
    EXPECT_EQ(names(res), (std::vector<std::string>{"mx1.mx.test", "mx2.mx.test"}));
    EXPECT_EQ(res.hosts[1].addresses, (std::vector<std::string>{"127.0.0.12"}));
}

TEST_F(DnsResolverTest, ServerNotations) {
    std::string error;
    EXPECT_TRUE(DnsResolver::create(&loop_, DnsOptions{}, error)) << "resolv.conf: " << error;
    for (const char* good : {"127.0.0.1", "127.0.0.1:5353", "[::1]:5353", "::1", "[::1]"}) {
        DnsOptions o;
        o.servers = {good};
        EXPECT_TRUE(DnsResolver::create(&loop_, o, error)) << good << ": " << error;
    }
    for (const char* bad :
         {"localhost", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:70000", "[::1", "[::1]5353", ""}) {
        DnsOptions o;
        o.servers = {bad};
        error.clear();
        EXPECT_FALSE(DnsResolver::create(&loop_, o, error)) << bad;
        EXPECT_FALSE(error.empty());
    }
}

TEST_F(DnsResolverTest, IPv6ServerAddress) {
    // dnsmasq listens on 127.0.0.1 only; [::1] with its port gets ICMP-refused or times out
    // quickly, which must still be a tempfail, never a crash or a hang.
    DnsOptions o = local_options();
    o.servers = {"[::1]:" + std::to_string(dnsmasq_->port())};
    o.timeout = 100ms;
    o.tries = 1;
    auto r = make(o);
    MxResolution res = resolve(*r, "mx.test");
    EXPECT_EQ(res.status, Status::tempfail);
}

// --- The DNS health canary ----------------------------------------------------------------

TEST_F(DnsResolverTest, CheckNameTellsAWorkingResolverFromABrokenOne) {
    auto r = make(local_options());
    auto check = [&](DnsResolver& resolver, const std::string& name) {
        std::optional<NameCheck> out;
        resolver.check_name(name, [&](NameCheck c) { out = std::move(c); });
        EXPECT_FALSE(out.has_value()) << "never answered from inside check_name()";
        EXPECT_TRUE(run_until([&] { return out.has_value(); })) << name;
        return out.value_or(NameCheck{});
    };
    NameCheck canary = check(*r, test::kDnsCanaryName);
    EXPECT_TRUE(canary.resolves);
    EXPECT_EQ(canary.reason, "a");
    NameCheck v6 = check(*r, "v6only.test");
    EXPECT_TRUE(v6.resolves);
    EXPECT_EQ(v6.reason, "aaaa");
    EXPECT_EQ(check(*r, "no-such-name.test").reason, "nxdomain");
    EXPECT_FALSE(check(*r, "noaddr.test").resolves);
    EXPECT_EQ(check(*r, "noaddr.test").reason, "nodata");
    // The offline dnsmasq has no root to offer: refused, so not a working Internet resolver.
    NameCheck root = check(*r, ".");
    EXPECT_FALSE(root.resolves);
    EXPECT_EQ(root.reason, "refused");

    DnsOptions broken;
    broken.servers = {servfail_->server()};
    broken.timeout = 300ms;
    auto b = make(broken);
    EXPECT_EQ(check(*b, test::kDnsCanaryName).reason, "servfail");
}

// At most one check per interval: a fresh state answers at once, a stale one starts one check
// that every waiter shares; the listener hears changes only.
TEST_F(DnsResolverTest, CanaryChecksAtMostOncePerInterval) {
    auto r = make(local_options());
    DnsCanary canary(*r, test::kDnsCanaryName, 300ms);
    std::vector<std::string> changes;
    canary.set_listener([&](bool healthy, const std::string& why) {
        changes.push_back(std::string(healthy ? "healthy " : "failing ") + why);
    });
    EXPECT_FALSE(canary.fresh_state().has_value()) << "unknown before the first check";
    int answered = 0;
    for (int i = 0; i < 3; ++i) canary.after_check([&](bool ok) { answered += ok ? 1 : 0; });
    ASSERT_TRUE(run_until([&] { return answered == 3; }));
    EXPECT_EQ(canary.fresh_state(), std::optional<bool>(true));
    EXPECT_EQ(changes, std::vector<std::string>{"healthy a"});
    auto queries = [&] {
        return test::occurrences(dnsmasq_->log(), std::string("query[A] ") + test::kDnsCanaryName);
    };
    EXPECT_EQ(queries(), 1u) << "three waiters, one query";
    for (int i = 0; i < 10; ++i) EXPECT_EQ(canary.fresh_state(), std::optional<bool>(true));
    EXPECT_EQ(queries(), 1u);

    std::this_thread::sleep_for(350ms);
    uv_update_time(&loop_);
    EXPECT_FALSE(canary.fresh_state().has_value()) << "stale: checked again";
    ASSERT_TRUE(run_until([&] { return canary.fresh_state().has_value(); }));
    EXPECT_EQ(queries(), 2u);
    EXPECT_EQ(changes.size(), 1u) << "no change, no new line";

    DnsCanary off(*r, "", 300ms);
    EXPECT_EQ(off.fresh_state(), std::optional<bool>(true)) << "disabled: always believed";
}

}  // namespace
}  // namespace calloutd
