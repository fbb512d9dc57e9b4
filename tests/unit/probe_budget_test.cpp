// Sliding windows and probe budgets with an injected clock.
#include <gtest/gtest.h>

#include "storage/probe_budget.hpp"
#include "storage/sliding_window.hpp"

namespace calloutd {
namespace {

using namespace std::chrono_literals;
using Clock = SlidingWindows::Clock;

TEST(SlidingWindows, ExactBoundaryNoDoubleBurst) {
    SlidingWindows w(Rate{10, 60s, false}, 100);
    Clock::time_point t0{};
    // 10 events just before a minute boundary ...
    for (int i = 0; i < 10; ++i) {
        ASSERT_TRUE(w.allows("d", t0 + 59s));
        w.record("d", t0 + 59s);
    }
    EXPECT_FALSE(w.allows("d", t0 + 59s));
    // ... a fixed window would let 10 more through right after it; a sliding one does not.
    EXPECT_FALSE(w.allows("d", t0 + 61s));
    EXPECT_FALSE(w.allows("d", t0 + 59s + 60s - 1ms));
    EXPECT_TRUE(w.allows("d", t0 + 59s + 60s));
    EXPECT_EQ(w.count("d", t0 + 59s + 60s), 0u);
}

TEST(SlidingWindows, EventsLeaveOneByOne) {
    SlidingWindows w(Rate{3, 10s, false}, 100);
    Clock::time_point t0{};
    w.record("k", t0);
    w.record("k", t0 + 4s);
    w.record("k", t0 + 8s);
    EXPECT_FALSE(w.allows("k", t0 + 9s));
    EXPECT_TRUE(w.allows("k", t0 + 10s));  // the first left
    w.record("k", t0 + 10s);
    EXPECT_FALSE(w.allows("k", t0 + 13s));
    EXPECT_TRUE(w.allows("k", t0 + 14s));
}

TEST(SlidingWindows, KeysAreIndependentAndIdleKeysEvicted) {
    SlidingWindows w(Rate{1, 10s, false}, 1000);
    Clock::time_point t0{};
    for (int i = 0; i < 500; ++i) {
        std::string k = "k" + std::to_string(i);
        ASSERT_TRUE(w.allows(k, t0));
        w.record(k, t0);
    }
    EXPECT_FALSE(w.allows("k1", t0 + 1s));
    EXPECT_EQ(w.keys(), 500u);
    EXPECT_TRUE(w.allows("new", t0 + 10s));  // sweeps the idle ones
    EXPECT_EQ(w.keys(), 0u);
}

TEST(SlidingWindows, MemoryBoundRefusesNewKeysInsteadOfForgetting) {
    SlidingWindows w(Rate{1, 60s, false}, 100);
    Clock::time_point t0{};
    for (int i = 0; i < 100; ++i) w.record("k" + std::to_string(i), t0);
    EXPECT_FALSE(w.allows("another", t0 + 1s));
    EXPECT_FALSE(w.allows("k5", t0 + 1s));  // still remembered
    EXPECT_EQ(w.keys(), 100u);
    EXPECT_TRUE(w.allows("another", t0 + 60s));
}

TEST(SlidingWindows, Unlimited) {
    SlidingWindows w(Rate{0, 0ms, true}, 1);
    for (int i = 0; i < 1000; ++i) {
        ASSERT_TRUE(w.allows("k" + std::to_string(i), Clock::time_point{}));
        w.record("k" + std::to_string(i), Clock::time_point{});
    }
    EXPECT_EQ(w.keys(), 0u);
}

class Budget : public ::testing::Test {
  protected:
    BudgetLimits limits{Rate{10, 60s, false}, Rate{20, 60s, false},
                        Rate{30, 60s, false}, 5,
                        Rate{4, 60s, false},  2};
    Clock::time_point now{};
    MemoryProbeBudget budget{limits, [this] { return now; }};

    BudgetDecision admit(const std::string& domain, const std::string& client) {
        auto d = budget.admit_probe(domain, "a@" + domain, client, false, {});
        EXPECT_TRUE(d.has_value());
        return *d;
    }
};

TEST_F(Budget, DomainBudgetFirst) {
    for (int i = 0; i < 10; ++i) {
        ASSERT_TRUE(admit("victim.example", "192.0.2." + std::to_string(i)).admitted);
        budget.release_probe("", "", {});
    }
    auto d = admit("victim.example", "192.0.2.99");
    EXPECT_FALSE(d.admitted);
    EXPECT_EQ(d.denied_by, BudgetKind::domain);
    EXPECT_TRUE(admit("other.example", "192.0.2.99").admitted);
}

TEST_F(Budget, ClientBudgetStopsOneSpammerForgingManyDomains) {
    int admitted = 0;
    for (int i = 0; i < 25; ++i) {
        auto d = admit("d" + std::to_string(i) + ".example", "198.51.100.1");
        if (d.admitted) {
            ++admitted;
            budget.release_probe("", "", {});
        } else {
            EXPECT_EQ(d.denied_by, BudgetKind::client);
        }
    }
    EXPECT_EQ(admitted, 20);
}

TEST_F(Budget, GlobalRateAndConcurrency) {
    for (int i = 0; i < 5; ++i) {
        ASSERT_TRUE(admit("d" + std::to_string(i), "c" + std::to_string(i)).admitted);
    }
    auto busy = admit("x", "y");
    EXPECT_FALSE(busy.admitted);
    EXPECT_EQ(busy.denied_by, BudgetKind::global);
    EXPECT_EQ(budget.probes_running(), 5);
    for (int i = 0; i < 5; ++i) budget.release_probe("", "", {});
    int admitted = 5;
    for (int i = 5; i < 40; ++i) {
        auto d = admit("d" + std::to_string(i), "c" + std::to_string(i));
        if (d.admitted) {
            ++admitted;
            budget.release_probe("", "", {});
        }
    }
    EXPECT_EQ(admitted, 30);
}

TEST_F(Budget, DeniedProbesCostNothing) {
    for (int i = 0; i < 10; ++i) {
        admit("victim.example", "c");
        budget.release_probe("", "", {});
    }
    for (int i = 0; i < 100; ++i) EXPECT_FALSE(admit("victim.example", "c").admitted);
    // The client spent only the 10 admitted probes.
    for (int i = 0; i < 10; ++i) {
        EXPECT_TRUE(admit("d" + std::to_string(i), "c").admitted) << i;
        budget.release_probe("", "", {});
    }
}

TEST_F(Budget, MxRateConcurrencyAndBackoff) {
    auto mx = [&](const std::string& ip) { return budget.admit_mx(ip, "p.example", {})->admitted; };
    EXPECT_TRUE(mx("192.0.2.25"));
    EXPECT_TRUE(mx("192.0.2.25"));
    EXPECT_FALSE(mx("192.0.2.25"));  // two at once
    EXPECT_EQ(budget.mx_running("192.0.2.25"), 2);
    budget.release_mx("192.0.2.25");
    budget.release_mx("192.0.2.25");
    EXPECT_TRUE(mx("192.0.2.25"));
    budget.release_mx("192.0.2.25");
    EXPECT_TRUE(mx("192.0.2.25"));
    budget.release_mx("192.0.2.25");
    EXPECT_FALSE(mx("192.0.2.25"));  // 4 per minute
    now += 60s;
    EXPECT_TRUE(mx("192.0.2.25"));
    budget.release_mx("192.0.2.25");

    budget.back_off_mx("192.0.2.26", 10min);
    EXPECT_FALSE(mx("192.0.2.26"));
    now += 10min;
    EXPECT_TRUE(mx("192.0.2.26"));
}

// A provider with many MX IPs is one provider: its rate binds whatever IP a connection goes to,
// and a connection it refuses costs the IP nothing.
TEST_F(Budget, ProviderRateSpansAllItsMxIps) {
    limits.mx_rate = Rate{100, 60s, false};
    limits.mx_concurrency = 100;
    limits.provider_rate = Rate{10, 60s, false};
    budget.set_limits(limits);
    int admitted = 0;
    for (int i = 0; i < 100; ++i) {
        std::string ip = "192.0.2." + std::to_string(10 + i % 5);
        auto d = budget.admit_mx(ip, "bigprovider.example", {});
        ASSERT_TRUE(d);
        if (d->admitted) {
            ++admitted;
            budget.release_mx(ip);
        } else {
            EXPECT_EQ(d->denied_by, BudgetKind::provider);
        }
    }
    EXPECT_EQ(admitted, 10);
    EXPECT_TRUE(budget.admit_mx("192.0.2.10", "other.example", {})->admitted);
    now += 60s;
    EXPECT_TRUE(budget.admit_mx("192.0.2.11", "bigprovider.example", {})->admitted);
}

// Admissions granted elsewhere (Redis) count against the local windows and running slots, so
// the local budget grants no fresh window when it has to decide alone.
TEST_F(Budget, RecordedAdmissionsCountAgainstTheLocalWindows) {
    for (int i = 0; i < 10; ++i) budget.record_probe("victim.example", "c" + std::to_string(i));
    EXPECT_EQ(budget.probes_running(), 10);
    for (int i = 0; i < 10; ++i) budget.release_probe("", "", {});
    auto d = admit("victim.example", "c99");
    EXPECT_FALSE(d.admitted);
    EXPECT_EQ(d.denied_by, BudgetKind::domain);

    budget.record_mx("192.0.2.30", "p.example");
    budget.record_mx("192.0.2.30", "p.example");
    EXPECT_EQ(budget.mx_running("192.0.2.30"), 2);
    EXPECT_FALSE(budget.admit_mx("192.0.2.30", "p.example", {})->admitted);  // concurrency 2
    budget.release_mx("192.0.2.30");
    budget.release_mx("192.0.2.30");
    budget.record_mx("192.0.2.30", "p.example");
    budget.record_mx("192.0.2.30", "p.example");
    budget.release_mx("192.0.2.30");
    budget.release_mx("192.0.2.30");
    EXPECT_FALSE(budget.admit_mx("192.0.2.30", "p.example", {})->admitted);  // 4 per minute
}

TEST(NodeShare, EachNodeGetsTheCeilingOfItsShare) {
    BudgetLimits l{Rate{10, 60s, false}, Rate{60, 60s, false},
                   Rate{0, 0ms, true},   200,
                   Rate{30, 60s, false}, 2};
    l.provider_rate = Rate{9, 60s, false};
    BudgetLimits one = node_share(l, 1);
    EXPECT_EQ(one.domain_rate, l.domain_rate);
    BudgetLimits three = node_share(l, 3);
    EXPECT_EQ(three.domain_rate.count, 4u);  // ceil(10 / 3)
    EXPECT_EQ(three.domain_rate.period, 60s);
    EXPECT_EQ(three.client_rate.count, 20u);
    EXPECT_TRUE(three.global_rate.unlimited);
    EXPECT_EQ(three.global_concurrency, 67);
    EXPECT_EQ(three.mx_rate.count, 10u);
    EXPECT_EQ(three.mx_concurrency, 1);  // never 0: a node alone may still probe
    EXPECT_EQ(three.provider_rate.count, 3u);
    EXPECT_EQ(node_share(l, 1000).domain_rate.count, 1u);
}

TEST_F(Budget, MemoryStaysBoundedUnderDistinctKeys) {
    MemoryProbeBudget small(
        limits, [this] { return now; }, 1000);
    for (int i = 0; i < 100000; ++i) {
        auto d =
            small.admit_probe("d" + std::to_string(i), "a", "c" + std::to_string(i % 7), false, {});
        if (d->admitted) small.release_probe("", "", {});
    }
    EXPECT_LE(small.tracked_keys(), 3000u);
}

}  // namespace
}  // namespace calloutd
