// The verification pipeline in-process against real dnsmasq and a fake SMTP target: cache,
// single-flight, reply budget, refresh-ahead, failed refresh, teardown mid-probe.
// Over 500 lines as one concept: the verifier's tests over one shared world of targets.
#include "policy/callout_verifier.hpp"

#include "callout/random_local_part.hpp"
#include "daemon/config.hpp"
#include "integration/allocation_counter.hpp"
#include "policy/mx_budget.hpp"

#include <gtest/gtest.h>

#include "storage/memory_cache.hpp"
#include "storage/probe_budget.hpp"
#include "storage/redis_budget.hpp"
#include "storage/redis_cache.hpp"
#include "storage/redis_client.hpp"
#include "storage/redis_schema.hpp"
#include "support/dnsmasq.hpp"
#include "support/fake_smtp.hpp"
#include "support/redis_server.hpp"

namespace calloutd {
namespace {

using namespace std::chrono_literals;
using test::Dnsmasq;
using test::DnsmasqZones;
using test::FakeSmtpScript;
using test::FakeSmtpServer;

constexpr const char* kTargetIp = "127.0.0.41";

FakeSmtpScript target_script() {
    FakeSmtpScript s;
    s.recipients["alice"] = "250 2.1.5 Ok";
    s.rcpt_default = "550 5.1.1 <x>: Recipient address rejected: User unknown";
    return s;
}

class VerifierTest : public ::testing::Test {
  protected:
    void SetUp() override {
        DnsmasqZones zones;
        zones.local_domains = {"verify.test"};
        zones.mx = {{"verify.test", "mx.verify.test", 10}};
        zones.hosts = {{"mx.verify.test", {kTargetIp}}};
        dns_ = std::make_unique<Dnsmasq>(zones);
        smtp_ = std::make_unique<FakeSmtpServer>(target_script(), kTargetIp, 0);
        ASSERT_TRUE(smtp_->ok()) << smtp_->error();
        uv_loop_init(&loop_);
        uv_timer_init(&loop_, &tick_);
        // Keeps uv_run(UV_RUN_ONCE) from blocking forever while we poll for a condition.
        uv_timer_start(
            &tick_, [](uv_timer_t*) {}, 10, 10);
        make_engine(2s);
    }

    void make_engine(std::chrono::milliseconds reply_timeout) {
        CalloutOptions o;
        o.dns.servers = {dns_->server()};
        o.dns.timeout = 1s;
        o.probe.port = smtp_->port();
        o.probe.helo_name = "probe.test";
        o.probe.connect_timeout = 1s;
        o.probe.command_timeout = 2s;
        o.probe.probe_timeout = 8s;
        o.allow_networks = CidrSet({*Cidr::parse("127.0.0.0/8")});
        o.random_secret = "verifier-test";
        std::string error;
        callout_ = Callout::create(&loop_, o, error);
        ASSERT_TRUE(callout_) << error;
        verifier_ =
            std::make_unique<CalloutVerifier>(&loop_, cache_, *callout_, budget_, reply_timeout);
    }

    void TearDown() override {
        verifier_.reset();
        callout_.reset();
        uv_close(reinterpret_cast<uv_handle_t*>(&tick_), nullptr);
        uv_run(&loop_, UV_RUN_DEFAULT);
        EXPECT_EQ(uv_loop_close(&loop_), 0);
    }

    template <class Pred>
    bool run_until(Pred pred, std::chrono::milliseconds timeout = 10s) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (!pred()) {
            if (std::chrono::steady_clock::now() > deadline) return false;
            uv_run(&loop_, UV_RUN_ONCE);
        }
        return true;
    }

    struct Answer {
        bool done = false;
        Verdict verdict;
        DecisionSource source = DecisionSource::skip;
    };

    // Asks for `sender`; an immediate answer is filled in at once.
    std::shared_ptr<Answer> ask(const std::string& sender) { return ask(*verifier_, sender); }
    std::shared_ptr<Answer> ask(CalloutVerifier& verifier, const std::string& sender) {
        auto a = std::make_shared<Answer>();
        PolicyRequest req;
        req.sender = sender;
        auto now = verifier.verify(req, [a](Verdict v, DecisionSource s) {
            a->done = true;
            a->verdict = std::move(v);
            a->source = s;
        });
        if (now) {
            a->done = true;
            a->verdict = now->verdict;
            a->source = now->source;
        }
        return a;
    }

    WallClock::time_point now_ = WallClock::now();
    MemoryVerdictCache cache_{1000, CacheTtls{31 * 24h, 3 * 24h, 10min, 24h, 7 * 24h, 1h},
                              [this] { return now_; }};
    static constexpr Rate kUnlimited{0, std::chrono::milliseconds(0), true};
    MemoryProbeBudget budget_{
        BudgetLimits{kUnlimited, kUnlimited, kUnlimited, 1000, kUnlimited, 1000}};
    std::unique_ptr<Dnsmasq> dns_;
    std::unique_ptr<FakeSmtpServer> smtp_;
    uv_loop_t loop_;
    uv_timer_t tick_;
    std::unique_ptr<Callout> callout_;
    std::unique_ptr<CalloutVerifier> verifier_;
};

TEST_F(VerifierTest, MissProbesOnceThenAnswersFromCache) {
    auto first = ask("alice@verify.test");
    EXPECT_FALSE(first->done);  // never answered synchronously on a miss
    ASSERT_TRUE(run_until([&] { return first->done; }));
    EXPECT_EQ(first->verdict.cls, VerdictClass::valid) << first->verdict.reason;
    EXPECT_EQ(first->source, DecisionSource::probe);

    auto again = ask("alice@verify.test");
    ASSERT_TRUE(again->done);
    EXPECT_EQ(again->verdict.cls, VerdictClass::valid);
    EXPECT_EQ(again->source, DecisionSource::cache);
    EXPECT_EQ(smtp_->connections_accepted(), 1u);
}

// A policy connection's cached answer (Decider::decide_into with this verifier and the memory
// cache) allocates nothing once the strings it reuses have grown: no heap churn per request,
// whatever the length of the sender or of the cached reason.
TEST_F(VerifierTest, ACachedAnswerAllocatesNothing) {
    const std::string senders[] = {"alice@verify.test",
                                   "someone-with-a-rather-long-local-part@verify.test"};
    for (const auto& sender : senders) {
        auto probed = ask(sender);
        ASSERT_TRUE(run_until([&] { return probed->done; })) << sender;
    }
    Decider decider(std::get<Config>(load_config_text("", "t.toml")).policy, verifier_.get());
    // Never made: a cached answer is immediate.
    const Decider::MakeDone make_done = [] { return Decider::Done{}; };
    PolicyRequest req;
    req.request = "smtpd_access_policy";
    req.protocol_state = "RCPT";
    req.client_address = "198.51.100.7";
    req.instance = "4F2A1B3C9D.A1B2C3.0";
    Decision d;
    std::string classes;
    for (const auto& sender : senders) {  // once each: the reused strings grow to their sizes
        req.sender = sender;
        ASSERT_TRUE(decider.decide_into(req, make_done, Decider::Clock::now(), d)) << sender;
        ASSERT_EQ(d.source, DecisionSource::cache) << sender;
        classes += std::string(to_string(d.verdict.cls)) + " (" + d.verdict.reason + ") ";
    }
    int immediate = 0, from_cache = 0;
    uint64_t allocations = 0;
    {
        test::CountAllocations counter;
        for (int i = 0; i < 100; ++i) {
            for (const auto& sender : senders) {
                req.sender.assign(sender);
                immediate += decider.decide_into(req, make_done, Decider::Clock::now(), d);
                from_cache += d.source == DecisionSource::cache;
            }
        }
        allocations = counter.count();
    }
    EXPECT_EQ(immediate, 200);
    EXPECT_EQ(from_cache, 200);
    EXPECT_EQ(allocations, 0u) << "verdicts: " << classes;
}

// A 2xx counts only after the random local part was refused as unknown, in the same probe or in
// a recent one (the "not accept-all" domain fact). The engine's secret is fixed here, so today's
// random local part is known and the target can treat it specially.
TEST_F(VerifierTest, ACachedNotAcceptAllFactLetsA2xxCountWhileTheRandomLocalPartIsGreylisted) {
    const std::string random = stable_random_local_part("verifier-test", "verify.test",
                                                        utc_day(std::chrono::system_clock::now())) +
                               "@verify.test";
    ASSERT_EQ(callout_->random_local_part_for("verify.test") + "@verify.test", random);

    // Refused as unknown in the same probe: valid, and the domain is known not accept-all.
    auto alice = ask("alice@verify.test");
    ASSERT_TRUE(run_until([&] { return alice->done; }));
    EXPECT_EQ(alice->verdict.cls, VerdictClass::valid) << alice->verdict.reason;
    EXPECT_EQ(cache_.not_accept_all("verify.test", {}), std::optional<bool>(true));
    ASSERT_EQ(smtp_->count_commands("RCPT TO:<" + random + ">"), 1u);

    // Now the target greylists the random local part: a 2xx still counts, thanks to the fact.
    smtp_.reset();
    FakeSmtpScript grey = target_script();
    grey.recipients[random] = "450 4.7.1 Greylisted, please try again later";
    grey.recipients["carol"] = "250 2.1.5 Ok";
    grey.recipients["dave"] = "250 2.1.5 Ok";
    smtp_ = std::make_unique<FakeSmtpServer>(grey, kTargetIp, 0);
    verifier_.reset();
    callout_.reset();
    make_engine(2s);
    auto carol = ask("carol@verify.test");
    ASSERT_TRUE(run_until([&] { return carol->done; }));
    EXPECT_EQ(carol->verdict.cls, VerdictClass::valid) << carol->verdict.reason;
    EXPECT_NE(carol->verdict.reason.find("domain known not accept-all"), std::string::npos)
        << carol->verdict.reason;
    // The greylisted random local part is a tempfail domain fact meanwhile.
    auto hot = ask("erin@verify.test");
    ASSERT_TRUE(hot->done);
    EXPECT_EQ(hot->verdict.cls, VerdictClass::tempfail);
    EXPECT_EQ(hot->source, DecisionSource::cache);

    // Without the fact the same 2xx is only "accept-all-unknown", and nothing positive is kept.
    cache_.erase("verify.test", "");
    auto dave = ask("dave@verify.test");
    ASSERT_TRUE(run_until([&] { return dave->done; }));
    EXPECT_EQ(dave->verdict.cls, VerdictClass::tempfail) << dave->verdict.reason;
    EXPECT_TRUE(dave->verdict.reason.starts_with("accept-all-unknown: ")) << dave->verdict.reason;
    auto cached = cache_.find("verify.test", "dave@verify.test");
    ASSERT_TRUE(cached);
    EXPECT_EQ(cached->verdict.cls, VerdictClass::tempfail);
}

TEST_F(VerifierTest, ConcurrentRequestsShareOneProbe) {
    std::vector<std::shared_ptr<Answer>> answers;
    for (int i = 0; i < 10; ++i) answers.push_back(ask("bob@verify.test"));
    ASSERT_TRUE(run_until([&] {
        for (auto& a : answers) {
            if (!a->done) return false;
        }
        return true;
    }));
    for (auto& a : answers) EXPECT_EQ(a->verdict.cls, VerdictClass::invalid) << a->verdict.reason;
    EXPECT_EQ(smtp_->connections_accepted(), 1u);
    EXPECT_EQ(smtp_->count_commands("RCPT TO:<bob@verify.test>"), 1u);
}

TEST_F(VerifierTest, BadAddressIsNeverProbed) {
    for (const char* bad : {"a b@verify.test", "a@[127.0.0.41]", "\"unterminated@verify.test",
                            "x@verify.test\r\nRCPT TO:<y@verify.test>"}) {
        auto a = ask(bad);
        ASSERT_TRUE(a->done) << bad;
        EXPECT_EQ(a->verdict.cls, VerdictClass::skipped) << bad;
        EXPECT_EQ(a->source, DecisionSource::skip);
    }
    EXPECT_EQ(smtp_->connections_accepted(), 0u);
}

TEST_F(VerifierTest, ReplyBudgetAnswersInProgressAndTheProbeFinishesInBackground) {
    // Every reply takes 150 ms; the budget is 100 ms.
    smtp_.reset();
    FakeSmtpScript slow = target_script();
    slow.reply_delay = 150ms;
    smtp_ = std::make_unique<FakeSmtpServer>(slow, kTargetIp, 0);
    verifier_.reset();
    callout_.reset();
    make_engine(100ms);

    auto first = ask("alice@verify.test");
    ASSERT_TRUE(run_until([&] { return first->done; }));
    EXPECT_EQ(first->verdict.cls, VerdictClass::in_progress);
    EXPECT_EQ(verifier_->probes_in_flight(), 1u);
    ASSERT_TRUE(run_until([&] { return verifier_->probes_in_flight() == 0; }));
    auto retry = ask("alice@verify.test");
    ASSERT_TRUE(retry->done);
    EXPECT_EQ(retry->verdict.cls, VerdictClass::valid);
    EXPECT_EQ(retry->source, DecisionSource::cache);
    EXPECT_EQ(smtp_->connections_accepted(), 1u);
}

TEST_F(VerifierTest, RefreshAheadServesThenReprobesAndAFailedRefreshKeepsThePositive) {
    auto first = ask("alice@verify.test");
    ASSERT_TRUE(run_until([&] { return first->done; }));
    ASSERT_EQ(first->verdict.cls, VerdictClass::valid);

    now_ += 8 * 24h;  // older than cache.positive_refresh
    auto served = ask("alice@verify.test");
    ASSERT_TRUE(served->done);
    EXPECT_EQ(served->verdict.cls, VerdictClass::valid);
    EXPECT_EQ(served->source, DecisionSource::cache);
    EXPECT_EQ(verifier_->probes_in_flight(), 1u);
    ASSERT_TRUE(run_until([&] { return verifier_->probes_in_flight() == 0; }));
    EXPECT_EQ(smtp_->connections_accepted(), 2u);

    // The target goes away; the next refresh fails, the positive stays.
    smtp_->stop();
    now_ += 8 * 24h;
    auto again = ask("alice@verify.test");
    ASSERT_TRUE(again->done);
    EXPECT_EQ(again->verdict.cls, VerdictClass::valid);
    ASSERT_TRUE(run_until([&] { return verifier_->probes_in_flight() == 0; }));
    auto hit = cache_.find("verify.test", "alice@verify.test");
    ASSERT_TRUE(hit);
    EXPECT_EQ(hit->verdict.cls, VerdictClass::valid);
}

// Postgrey's wording: a temporary failure that does not ask us to go away (no back-off).
constexpr const char* kGreylisted =
    "450 4.2.0 <alice@verify.test>: Recipient address rejected: Greylisted, see "
    "http://postgrey.schweikert.ch/help/verify.test.html";

// An MX that greylists `<>` for good: a valid address due for refresh is served from the cache
// by every request, and re-probed once per cache.tempfail_ttl (10 min), not once per request.
TEST_F(VerifierTest, AFailingRefreshIsTriedOncePerTempfailTtl) {
    auto first = ask("alice@verify.test");
    ASSERT_TRUE(run_until([&] { return first->done; }));
    ASSERT_EQ(first->verdict.cls, VerdictClass::valid);
    uint16_t port = smtp_->port();
    smtp_.reset();
    FakeSmtpScript greylist = target_script();
    greylist.recipients["alice"] = kGreylisted;
    smtp_ = std::make_unique<FakeSmtpServer>(greylist, kTargetIp, port);
    ASSERT_TRUE(smtp_->ok()) << smtp_->error();

    now_ += 8 * 24h;  // older than cache.positive_refresh
    // 100 requests 30 s apart: 50 minutes of refresh window, five tempfail TTLs.
    for (int i = 0; i < 100; ++i) {
        auto a = ask("alice@verify.test");
        ASSERT_TRUE(a->done) << i;
        EXPECT_EQ(a->verdict.cls, VerdictClass::valid) << i;
        EXPECT_EQ(a->source, DecisionSource::cache) << i;
        ASSERT_TRUE(run_until([&] { return verifier_->probes_in_flight() == 0; }));
        now_ += 30s;
    }
    EXPECT_EQ(smtp_->connections_accepted(), 5u);
    EXPECT_EQ(smtp_->count_commands("RCPT TO:<alice@verify.test>"), 5u);
    auto hit = cache_.find("verify.test", "alice@verify.test");
    ASSERT_TRUE(hit);
    EXPECT_EQ(hit->verdict.cls, VerdictClass::valid);
    EXPECT_NE(hit->verdict.refresh_failed_at, WallClock::time_point{});
}

// Two tags of one mailbox asked at once share one probe when its answer (valid) speaks for
// every tag; an answer that may be about the tag (invalid) is not handed to the other tag.
TEST_F(VerifierTest, TagsOfOneMailboxShareAProbeButNotARejection) {
    smtp_.reset();
    FakeSmtpScript s = target_script();
    s.recipients["prvs=1111aaaaaa=alice"] = test::FakeReply::slow("250 2.1.5 Ok", 100ms);
    // (Whatever the server means by it, the answer is about this tagged address.)
    s.recipients["prvs=3333cccccc=bob"] = test::FakeReply::slow(
        "550 5.1.1 <x>: Recipient address rejected: User unknown in virtual mailbox table", 100ms);
    smtp_ = std::make_unique<FakeSmtpServer>(s, kTargetIp, 0);
    verifier_.reset();
    callout_.reset();
    make_engine(2s);

    auto a1 = ask("prvs=1111aaaaaa=alice@verify.test");
    auto a2 = ask("prvs=2222bbbbbb=alice@verify.test");  // joins: same key
    ASSERT_TRUE(run_until([&] { return a1->done && a2->done; }));
    EXPECT_EQ(a1->verdict.cls, VerdictClass::valid) << a1->verdict.reason;
    EXPECT_EQ(a2->verdict.cls, VerdictClass::valid) << a2->verdict.reason;
    EXPECT_EQ(smtp_->connections_accepted(), 1u);
    auto a3 = ask("prvs=5555eeeeee=alice@verify.test");
    ASSERT_TRUE(a3->done);
    EXPECT_EQ(a3->source, DecisionSource::cache);
    EXPECT_EQ(a3->verdict.cls, VerdictClass::valid);

    auto b1 = ask("prvs=3333cccccc=bob@verify.test");
    auto b2 = ask("prvs=4444dddddd=bob@verify.test");
    ASSERT_TRUE(run_until([&] { return b1->done && b2->done; }));
    ASSERT_EQ(b1->verdict.cls, VerdictClass::invalid) << b1->verdict.reason;
    EXPECT_EQ(b2->verdict.cls, VerdictClass::in_progress) << "another tag's rejection";
    EXPECT_EQ(smtp_->connections_accepted(), 2u);
    // The retry of the second tag probes its own address; the first stays rejected from cache.
    auto b3 = ask("prvs=4444dddddd=bob@verify.test");
    ASSERT_TRUE(run_until([&] { return b3->done; }));
    EXPECT_EQ(b3->source, DecisionSource::probe);
    EXPECT_EQ(smtp_->connections_accepted(), 3u);
    EXPECT_EQ(smtp_->count_commands("RCPT TO:<prvs=4444dddddd=bob@verify.test>"), 1u);
    auto b4 = ask("prvs=3333cccccc=bob@verify.test");
    ASSERT_TRUE(b4->done);
    EXPECT_EQ(b4->verdict.cls, VerdictClass::invalid);
    EXPECT_EQ(b4->source, DecisionSource::cache);
}

TEST_F(VerifierTest, ClientBudgetKeysIpv6ByNetwork) {
    EXPECT_EQ(verifier_->client_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
    EXPECT_EQ(verifier_->client_key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
    EXPECT_EQ(verifier_->client_key("2001:db8:1:3::1"), "2001:db8:1:3::/64");
    EXPECT_EQ(verifier_->client_key("192.0.2.7"), "192.0.2.7");
    EXPECT_EQ(verifier_->client_key("::ffff:192.0.2.7"), "192.0.2.7");
    EXPECT_EQ(verifier_->client_key(""), "unknown");
    EXPECT_EQ(verifier_->client_key("unknown"), "unknown");
    verifier_->set_client_ipv6_prefix(48);
    EXPECT_EQ(verifier_->client_key("2001:db8:1:2::1"), "2001:db8:1::/48");
}

TEST_F(VerifierTest, OnlyRealProbesSpendBudgetAndDenialsAreImmediate) {
    budget_.set_limits(
        BudgetLimits{Rate{2, 60s, false}, kUnlimited, kUnlimited, 1000, kUnlimited, 1000});
    // Two probes at the domain are admitted; joined and cached requests cost nothing.
    auto a1 = ask("alice@verify.test");
    auto a2 = ask("alice@verify.test");  // joins
    ASSERT_TRUE(run_until([&] { return a1->done && a2->done; }));
    auto a3 = ask("alice@verify.test");  // cache
    ASSERT_TRUE(a3->done);
    EXPECT_EQ(a3->source, DecisionSource::cache);
    auto b = ask("bob@verify.test");
    ASSERT_TRUE(run_until([&] { return b->done; }));
    EXPECT_EQ(b->verdict.cls, VerdictClass::invalid);
    // The third distinct address is over the domain budget: answered at once, no connection.
    auto c = ask("carol@verify.test");
    ASSERT_TRUE(c->done);
    EXPECT_EQ(c->verdict.cls, VerdictClass::rate_limited);
    EXPECT_EQ(c->verdict.reason, "domain");
    EXPECT_EQ(c->source, DecisionSource::limit);
    EXPECT_EQ(smtp_->connections_accepted(), 2u);
    EXPECT_EQ(verifier_->counters().admitted, 2u);
    EXPECT_EQ(verifier_->counters().denied_domain, 1u);
    EXPECT_EQ(verifier_->counters().joined, 1u);
    EXPECT_EQ(budget_.probes_running(), 0);
}

TEST_F(VerifierTest, MxBudgetSkipsTargetsAndPushbackBacksOff) {
    MxBudget mx(budget_, 1h);
    callout_->set_target_budget(&mx);
    budget_.set_limits(
        BudgetLimits{kUnlimited, kUnlimited, kUnlimited, 1000, Rate{1, 60s, false}, 1000});
    auto a = ask("alice@verify.test");
    ASSERT_TRUE(run_until([&] { return a->done; }));
    EXPECT_EQ(a->verdict.cls, VerdictClass::valid);
    auto b = ask("bob@verify.test");
    ASSERT_TRUE(run_until([&] { return b->done; }));
    EXPECT_EQ(b->verdict.cls, VerdictClass::rate_limited);
    EXPECT_EQ(b->verdict.reason, "mx");
    EXPECT_EQ(smtp_->connections_accepted(), 1u);
    EXPECT_EQ(budget_.mx_running(kTargetIp), 0);
    callout_->set_target_budget(nullptr);
}

TEST_F(VerifierTest, TargetThatPushesBackIsLeftAlone) {
    smtp_.reset();
    FakeSmtpScript busy = target_script();
    busy.banner = test::FakeReply("421 4.7.0 Too many connections from your host, slow down");
    smtp_ = std::make_unique<FakeSmtpServer>(busy, kTargetIp, 0);
    verifier_.reset();
    callout_.reset();
    make_engine(2s);
    MxBudget mx(budget_, 1h);
    callout_->set_target_budget(&mx);
    auto a = ask("alice@verify.test");
    ASSERT_TRUE(run_until([&] { return a->done; }));
    EXPECT_EQ(a->verdict.cls, VerdictClass::tempfail);
    // The domain is now a back-off fact, and the IP is refused by the MX budget.
    auto b = ask("bob@verify.test");
    ASSERT_TRUE(b->done);
    EXPECT_EQ(b->verdict.cls, VerdictClass::policy_blocked);
    EXPECT_EQ(b->source, DecisionSource::cache);
    EXPECT_FALSE(budget_.admit_mx(kTargetIp, "verify.test", {})->admitted);
    EXPECT_EQ(smtp_->connections_accepted(), 1u);
    callout_->set_target_budget(nullptr);
}

TEST_F(VerifierTest, TeardownMidProbeIsClean) {
    smtp_.reset();
    FakeSmtpScript tarpit;
    tarpit.banner = std::nullopt;
    smtp_ = std::make_unique<FakeSmtpServer>(tarpit, kTargetIp, 0);
    verifier_.reset();
    callout_.reset();
    make_engine(5s);
    auto a = ask("alice@verify.test");
    ASSERT_TRUE(run_until([&] { return smtp_->connections_accepted() == 1; }));
    verifier_.reset();
    callout_.reset();
    run_until([] { return false; }, 200ms);
    EXPECT_FALSE(a->done);  // cancelled: no late callback into a dead verifier
}

// The same verifier as the daemon runs it in cluster mode: Redis cache and budgets, two nodes
// sharing one real redis-server, the cache clock injected.
class RedisVerifierTest : public VerifierTest {
  protected:
    struct Node {
        std::unique_ptr<RedisClient> client;
        std::unique_ptr<MemoryVerdictCache> local;
        std::unique_ptr<MemoryProbeBudget> local_budget;
        std::unique_ptr<RedisVerdictCache> cache;
        std::unique_ptr<RedisProbeBudget> budget;
        std::unique_ptr<CalloutVerifier> verifier;
    };

    std::unique_ptr<Node> make_node(const std::string& id) {
        auto n = std::make_unique<Node>();
        RedisOptions o;
        o.url = redis_.url();
        o.command_timeout = 1s;
        std::string error;
        n->client = RedisClient::create(&loop_, o, error);
        EXPECT_TRUE(n->client) << error;
        if (!n->client) return nullptr;
        namespace rs = redis_schema;
        n->client->register_script("admit", std::string(rs::kAdmitScript));
        n->client->register_script("release", std::string(rs::kReleaseScript));
        n->client->register_script("store", std::string(rs::kStoreScript));
        n->client->register_script("admit_mx", std::string(rs::kAdmitMxScript));
        n->client->register_script("refresh_failed", std::string(rs::kRefreshFailedScript));
        n->client->start();
        EXPECT_TRUE(run_until([&] { return n->client->is_connected(); }));
        auto clock = [this] { return now_; };
        n->local = std::make_unique<MemoryVerdictCache>(1000, kTtls, clock);
        n->local_budget = std::make_unique<MemoryProbeBudget>(kLimits);
        // near_cache_ttl 0: every lookup asks Redis, so the nodes share everything.
        n->cache =
            std::make_unique<RedisVerdictCache>(*n->client, *n->local, kTtls, 0ms, 1000, clock);
        n->budget =
            std::make_unique<RedisProbeBudget>(*n->client, *n->local_budget, kLimits, 10s, id);
        n->verifier =
            std::make_unique<CalloutVerifier>(&loop_, *n->cache, *callout_, *n->budget, 2s);
        return n;
    }
    // Every probe finished and every Redis command of both nodes answered.
    bool settle(const std::vector<Node*>& nodes) {
        return run_until([&] {
            for (Node* n : nodes) {
                if (n->verifier->probes_in_flight() != 0 || n->client->in_flight() != 0) {
                    return false;
                }
            }
            return true;
        });
    }
    void TearDown() override {
        a_.reset();
        b_.reset();
        VerifierTest::TearDown();
    }

    static constexpr CacheTtls kTtls{31 * 24h, 3 * 24h, 10min, 24h, 7 * 24h, 1h};
    static constexpr BudgetLimits kLimits{kUnlimited, kUnlimited, kUnlimited,
                                          1000,       kUnlimited, 1000};
    test::RedisServer redis_;
    std::unique_ptr<Node> a_;
    std::unique_ptr<Node> b_;
};

// The failed refresh is recorded in Redis, so neither node re-probes before
// cache.tempfail_ttl, whichever node the requests go to.
TEST_F(RedisVerifierTest, AFailingRefreshIsTriedOncePerTempfailTtlAcrossNodes) {
    a_ = make_node("a");
    b_ = make_node("b");
    ASSERT_TRUE(a_ && b_);
    auto first = ask(*a_->verifier, "alice@verify.test");
    ASSERT_TRUE(run_until([&] { return first->done; }));
    ASSERT_EQ(first->verdict.cls, VerdictClass::valid);
    ASSERT_TRUE(settle({a_.get(), b_.get()}));
    auto shared = ask(*b_->verifier, "alice@verify.test");
    ASSERT_TRUE(run_until([&] { return shared->done; }));
    EXPECT_EQ(shared->source, DecisionSource::cache);
    ASSERT_EQ(smtp_->connections_accepted(), 1u);

    uint16_t port = smtp_->port();
    smtp_.reset();
    FakeSmtpScript greylist = target_script();
    greylist.recipients["alice"] = kGreylisted;
    smtp_ = std::make_unique<FakeSmtpServer>(greylist, kTargetIp, port);
    ASSERT_TRUE(smtp_->ok()) << smtp_->error();

    now_ += 8 * 24h;
    for (int i = 0; i < 100; ++i) {
        Node& n = i % 2 == 0 ? *a_ : *b_;
        auto a = ask(*n.verifier, "alice@verify.test");
        ASSERT_TRUE(run_until([&] { return a->done; })) << i;
        EXPECT_EQ(a->verdict.cls, VerdictClass::valid) << i;
        EXPECT_EQ(a->source, DecisionSource::cache) << i;
        ASSERT_TRUE(settle({a_.get(), b_.get()})) << i;
        now_ += 30s;
    }
    EXPECT_EQ(smtp_->connections_accepted(), 5u);
    auto stored = redis_schema::decode(
        redis_.command({"GET", redis_schema::address_key("verify.test", "alice@verify.test")})
            .text());
    ASSERT_TRUE(stored);
    EXPECT_EQ(stored->cls, VerdictClass::valid);
    EXPECT_NE(stored->refresh_failed_at, WallClock::time_point{});
}

}  // namespace
}  // namespace calloutd
