// The daemon must never behave like a list-washer: floods of forged senders through the real
// binary -> dnsmasq -> counting fake SMTP targets, checking the budgets (domain, MX, client), the
// reply budget of every request, probe-once-per-TTL, and peak RSS under 100k distinct senders.
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/callout_world.hpp"
#include "support/daemon_process.hpp"
#include "support/dnsmasq.hpp"
#include "support/fake_smtp.hpp"
#include "support/policy_burst.hpp"
#include "support/policy_client.hpp"
#include "support/text.hpp"

namespace calloutd::test {
namespace {

using namespace std::chrono_literals;

// FakeSmtpFleet of this file, one loopback address each (callout_world.hpp uses .21-.41).
constexpr const char* kVictimIp = "127.0.0.61";   // victim.test: the list-washing target
constexpr const char* kLegitIp = "127.0.0.62";    // legit.test: an innocent bystander
constexpr const char* kHosterIp = "127.0.0.63";   // d0..d49.hosted.test share this MX
constexpr const char* kSpamIp = "127.0.0.64";     // s0..s99.spam.test (client budget)
constexpr const char* kOnceIp = "127.0.0.65";     // once.test (probe once per TTL)
constexpr const char* kRssIp = "127.0.0.66";      // r0..r999.rss.test (memory bound)
constexpr const char* kPrimaryIp = "127.0.0.67";  // pair.test, preference 10
constexpr const char* kBackupIp = "127.0.0.68";   // pair.test preference 20; backuponly.test

constexpr int kHostedDomains = 50;
constexpr int kSpamDomains = 100;
constexpr int kRssDomains = 1000;

constexpr const char* kRateLimited = "WARN rate limited";

DnsmasqZones attack_zones() {
    DnsmasqZones z;
    z.local_domains = {"test"};
    z.mx = {{"victim.test", "mx.victim.test", 10}, {"legit.test", "mx.legit.test", 10},
            {"once.test", "mx.once.test", 10},     {"pair.test", "mx1.pair.test", 10},
            {"pair.test", "mx2.pair.test", 20},    {"backuponly.test", "mx2.pair.test", 10}};
    for (int k = 0; k < kHostedDomains; ++k) {
        z.mx.push_back({"d" + std::to_string(k) + ".hosted.test", "mx.hoster.test", 10});
    }
    for (int k = 0; k < kSpamDomains; ++k) {
        z.mx.push_back({"s" + std::to_string(k) + ".spam.test", "mx.spam.test", 10});
    }
    for (int k = 0; k < kRssDomains; ++k) {
        z.mx.push_back({"r" + std::to_string(k) + ".rss.test", "mx.rss.test", 10});
    }
    z.hosts = {{"mx.victim.test", {kVictimIp}}, {"mx.legit.test", {kLegitIp}},
               {"mx.hoster.test", {kHosterIp}}, {"mx.spam.test", {kSpamIp}},
               {"mx.once.test", {kOnceIp}},     {"mx.rss.test", {kRssIp}},
               {"mx1.pair.test", {kPrimaryIp}}, {"mx2.pair.test", {kBackupIp}}};
    return z;
}

// The bystander and the probe-once target know alice (and carol); nobody else exists.
FakeSmtpScript knows_alice() {
    FakeSmtpScript s;
    s.recipients["alice"] = "250 2.1.5 ok";
    s.recipients["carol"] = "250 2.1.5 ok";
    return s;
}

std::string limits(const std::string& domain_rate, const std::string& client_rate,
                   const std::string& mx_rate, int mx_concurrency) {
    return "[limits]\n"
           "domain_rate = \"" +
           domain_rate + "\"\nclient_rate = \"" + client_rate +
           "\"\nglobal_rate = \"unlimited\"\nglobal_concurrency = 10000\nmx_rate = \"" + mx_rate +
           "\"\nmx_concurrency = " + std::to_string(mx_concurrency) +
           "\n[actions]\nrate_limited = \"" + kRateLimited + "\"\n";
}

class ListWashing : public ::testing::Test {
  protected:
    static void SetUpTestSuite() { dnsmasq_ = std::make_unique<Dnsmasq>(attack_zones()); }
    static void TearDownTestSuite() { dnsmasq_.reset(); }
    void TearDown() override {
        if (HasFailure() && daemon_) {
            std::string log = daemon_->log();
            if (log.size() > 20000) log = "...\n" + log.substr(log.size() - 20000);
            std::cerr << "--- calloutd log (tail) ---\n" << log;
        }
        stop_daemon();
    }
    void stop_daemon() {
        if (daemon_ && daemon_->running()) {
            daemon_->signal(SIGTERM);
            if (daemon_->wait_exit(10s) < 0) ADD_FAILURE() << "calloutd did not exit on SIGTERM";
        }
    }

    CalloutConfig config(uint16_t smtp_port, const std::string& sections) const {
        CalloutConfig c;
        c.dns_server = dnsmasq_->server();  // never the system resolver
        c.smtp_port = smtp_port;
        c.reply_timeout = "2s";
        c.log_level = "info";  // one decision line per request, no per-probe debug chatter
        c.sections = sections;
        return c;
    }
    void start(const CalloutConfig& c) {
        daemon_ = std::make_unique<DaemonProcess>("washing", callout_config(c));
        ASSERT_TRUE(daemon_->started()) << daemon_->log();
        port_ = daemon_->tcp_port();
        ASSERT_NE(port_, 0) << daemon_->log();
    }
    BurstOptions burst(size_t connections, size_t window, std::chrono::milliseconds spread) const {
        BurstOptions o;
        o.port = port_;
        o.connections = connections;
        o.window = window;
        o.spread = spread;
        o.timeout = 30s;
        return o;
    }

    // One request on its own connection; the action and the decision line logged for it.
    std::pair<std::optional<std::string>, std::string> ask(const std::string& sender,
                                                           const std::string& client,
                                                           const std::string& queue_id) {
        PolicyClient c = PolicyClient::inet("127.0.0.1", port_);
        if (!c.connected()) return {};
        c.send(policy_request(sender, client, queue_id, queue_id));
        auto action = c.read_action(5s);
        std::string needle = "decision queue_id=" + queue_id + " ";
        daemon_->wait_for_log(needle, 3s);
        return {action, line_with(daemon_->log(), needle)};
    }

    // Waits until the log holds at least `n` occurrences of `needle` (log lines are written
    // asynchronously); returns how many it holds.
    size_t wait_count(const std::string& needle, size_t n) const {
        size_t seen = 0;
        for (auto deadline = std::chrono::steady_clock::now() + 5s;
             std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(50ms)) {
            seen = occurrences(daemon_->log(), needle);
            if (seen >= n) break;
        }
        return seen;
    }

    // Every request answered, each within the reply budget (2 s) plus scheduling slack.
    static void expect_all_answered_in_budget(const BurstResult& r, size_t n) {
        EXPECT_EQ(r.answered, n);
        EXPECT_EQ(r.lost_connections, 0u);
        EXPECT_LE(r.max_latency(), 2500ms) << "a reply outlived server.reply_timeout";
        std::cout << "[ figures  ] " << n << " requests in " << r.elapsed.count() / 1000
                  << " ms; latency p50 " << r.percentile(50).count() << " us, p99 "
                  << r.percentile(99).count() << " us, max " << r.max_latency().count() << " us\n";
    }

    static inline std::unique_ptr<Dnsmasq> dnsmasq_;
    std::unique_ptr<DaemonProcess> daemon_;
    uint16_t port_ = 0;
};

// --- a. One domain, one client, 1,000 forged senders -----------------------------------------

TEST_F(ListWashing, ThousandForgedSendersAtOneDomainMakeAtMostTenProbes) {
    FakeSmtpScript victim;  // nobody exists: every admitted probe ends `invalid`
    FakeSmtpFleet t({{kVictimIp, victim}, {kLegitIp, knows_alice()}});
    ASSERT_TRUE(t.ok());
    start(config(t.port(), limits("10/1m", "unlimited", "unlimited", 100)));

    constexpr size_t kRequests = 1000;
    std::vector<std::string> requests;
    for (size_t i = 0; i < kRequests; ++i) {
        std::string id = "A" + std::to_string(i);
        requests.push_back(
            policy_request("forged" + std::to_string(i) + "@victim.test", "203.0.113.5", id, id));
    }
    BurstResult r;
    std::thread attack([&] { r = run_burst(requests, burst(8, 16, 2s)); });

    // Meanwhile an innocent sender of another domain, from another client, is verified.
    std::this_thread::sleep_for(300ms);
    auto [legit_action, legit_line] = ask("alice@legit.test", "198.51.100.20", "LEGIT1");
    attack.join();

    EXPECT_EQ(legit_action, "DUNNO") << legit_line;
    EXPECT_NE(legit_line.find(" class=valid "), std::string::npos) << legit_line;
    EXPECT_NE(legit_line.find(" source=probe "), std::string::npos) << legit_line;
    EXPECT_EQ(t.at(1).connections_accepted(), 1u);

    expect_all_answered_in_budget(r, kRequests);
    size_t seen = t.at(0).connections_accepted();
    std::cout << "[ figures  ] victim MX connections: " << seen << "; rate_limited replies "
              << r.count(kRateLimited) << "\n";
    EXPECT_GT(seen, 0u);
    EXPECT_LE(seen, 10u);
    EXPECT_EQ(r.count("REJECT 5.1.7"), seen) << "each admitted probe found `invalid`";
    EXPECT_EQ(r.count(kRateLimited) + r.count("REJECT 5.1.7"), kRequests);
    EXPECT_GE(r.count(kRateLimited), kRequests - 10);
    EXPECT_EQ(wait_count(" limit=domain", r.count(kRateLimited)), r.count(kRateLimited));
    EXPECT_EQ(occurrences(daemon_->log(), " limit=client"), 0u);
    // Admission comes before DNS: the denied requests never reached the resolver.
    size_t mx_queries = occurrences(dnsmasq_->log(), "query[MX] victim.test ");
    EXPECT_LE(mx_queries, 10u) << "MX lookups for victim.test";

    stop_daemon();
    std::string stats = line_with(daemon_->log(), " stats ");
    std::cout << "[ figures  ] " << stats << "\n";
    EXPECT_NE(stats.find("denied_domain=" + std::to_string(r.count(kRateLimited))),
              std::string::npos)
        << stats;
}

// --- b. 50 domains behind one MX IP ------------------------------------------------------------

TEST_F(ListWashing, FiftyDomainsSharingOneMxStayWithinItsRateAndConcurrency) {
    FakeSmtpScript hoster;
    hoster.reply_delay = 40ms;  // a probe takes ~8 replies: about 320 ms, so probes overlap
    FakeSmtpFleet t({{kHosterIp, hoster}});
    ASSERT_TRUE(t.ok());
    constexpr size_t kMxRate = 5;
    start(config(t.port(), limits("1000/1m", "unlimited", std::to_string(kMxRate) + "/1m", 2)));

    constexpr size_t kRequests = 1000;
    std::vector<std::string> requests;
    for (size_t i = 0; i < kRequests; ++i) {
        std::string id = "B" + std::to_string(i);
        std::string domain = "d" + std::to_string(i % kHostedDomains) + ".hosted.test";
        requests.push_back(
            policy_request("forged" + std::to_string(i) + "@" + domain, "203.0.113.6", id, id));
    }
    // Spread over 3 s: two slots of ~320 ms probes would allow ~18 connections, the rate 5.
    BurstResult r = run_burst(requests, burst(8, 16, 3s));

    expect_all_answered_in_budget(r, kRequests);
    size_t seen = t.at(0).connections_accepted();
    std::cout << "[ figures  ] shared MX connections: " << seen << ", at most "
              << t.at(0).max_concurrent_connections() << " at once; rate_limited replies "
              << r.count(kRateLimited) << "\n";
    EXPECT_GT(seen, 0u);
    EXPECT_LE(seen, kMxRate);
    EXPECT_LE(t.at(0).max_concurrent_connections(), 2u);
    EXPECT_GE(r.count(kRateLimited), kRequests - kMxRate);
    EXPECT_GT(wait_count(" limit=mx", 1), 0u);
    EXPECT_EQ(occurrences(daemon_->log(), " limit=domain"), 0u);
}

// --- c. One client forging senders at 100 domains ---------------------------------------------

TEST_F(ListWashing, OneClientForgingHundredDomainsGetsFiveProbes) {
    FakeSmtpFleet t({{kSpamIp, knows_alice()}});
    ASSERT_TRUE(t.ok());
    start(config(t.port(), limits("unlimited", "5/1m", "unlimited", 100)));

    std::vector<std::string> requests;
    for (int k = 0; k < kSpamDomains; ++k) {
        std::string id = "C" + std::to_string(k);
        requests.push_back(
            policy_request("forged@s" + std::to_string(k) + ".spam.test", "203.0.113.7", id, id));
    }
    BurstResult r = run_burst(requests, burst(4, 8, 0ms));
    expect_all_answered_in_budget(r, requests.size());
    size_t seen = t.at(0).connections_accepted();
    std::cout << "[ figures  ] connections caused by one client: " << seen << "\n";
    EXPECT_GT(seen, 0u);
    EXPECT_LE(seen, 5u);
    EXPECT_GE(r.count(kRateLimited), requests.size() - 5);
    EXPECT_EQ(wait_count(" limit=client", r.count(kRateLimited)), r.count(kRateLimited));

    // Another client is not punished for the first one's forgeries.
    auto [action, line] = ask("alice@s99.spam.test", "198.51.100.30", "C-OTHER");
    EXPECT_EQ(action, "DUNNO") << line;
    EXPECT_NE(line.find(" class=valid "), std::string::npos) << line;
    EXPECT_EQ(t.at(0).connections_accepted(), seen + 1);
}

// --- d. Probed once per TTL -------------------------------------------------------------------

TEST_F(ListWashing, AnAddressProbedWithinItsTtlIsNeverProbedAgain) {
    FakeSmtpScript s = knows_alice();
    s.recipients["carol"] = FakeReply::slow("250 2.1.5 ok", 500ms);
    FakeSmtpFleet t({{kOnceIp, s}});
    ASSERT_TRUE(t.ok());
    start(config(t.port(), ""));  // the shipped default limits

    auto [first, first_line] = ask("alice@once.test", "198.51.100.40", "D0");
    EXPECT_EQ(first, "DUNNO") << first_line;
    EXPECT_NE(first_line.find(" class=valid "), std::string::npos) << first_line;
    EXPECT_NE(first_line.find(" source=probe "), std::string::npos) << first_line;
    ASSERT_EQ(t.at(0).connections_accepted(), 1u);

    // 20 more over ~3 s, each from another client on a new connection.
    for (int i = 1; i <= 20; ++i) {
        std::string id = "D" + std::to_string(i);
        auto [action, line] = ask("alice@once.test", "198.51.100." + std::to_string(40 + i), id);
        EXPECT_EQ(action, "DUNNO") << line;
        EXPECT_NE(line.find(" class=valid "), std::string::npos) << line;
        EXPECT_NE(line.find(" source=cache "), std::string::npos) << line;
        std::this_thread::sleep_for(150ms);
    }
    EXPECT_EQ(t.at(0).connections_accepted(), 1u);

    // 20 at once for an address whose probe is still running: they join it.
    std::vector<std::string> requests;
    for (int i = 0; i < 20; ++i) {
        std::string id = "J" + std::to_string(i);
        requests.push_back(
            policy_request("carol@once.test", "198.51.100." + std::to_string(100 + i), id, id));
    }
    BurstResult r = run_burst(requests, burst(20, 1, 0ms));
    expect_all_answered_in_budget(r, requests.size());
    EXPECT_EQ(r.count("DUNNO"), requests.size());
    EXPECT_EQ(t.at(0).connections_accepted(), 2u);
    EXPECT_EQ(t.at(0).count_commands("RCPT TO:<carol@once.test>"), 1u);
    EXPECT_EQ(occurrences(daemon_->log(), " limit="), 0u) << "nothing here spends budget";
}

// --- Back-off from a target that pushes back ---------------------------------------------------

TEST_F(ListWashing, AnMxThatSaysTooManyConnectionsIsLeftAloneForEveryDomainItServes) {
    FakeSmtpScript s;
    s.banner = FakeReply::hangup("421 4.7.0 Too many connections, try again later");
    FakeSmtpFleet t({{kHosterIp, s}});
    ASSERT_TRUE(t.ok());
    start(config(t.port(), limits("unlimited", "unlimited", "unlimited", 100)));

    auto [first, first_line] = ask("forged0@d0.hosted.test", "203.0.113.8", "F0");
    EXPECT_EQ(first, "DUNNO") << first_line;
    EXPECT_NE(first_line.find(" source=probe "), std::string::npos) << first_line;
    ASSERT_EQ(t.at(0).connections_accepted(), 1u);

    // The domain is a policy_blocked fact for limits.backoff_ttl ...
    auto [same, same_line] = ask("forged1@d0.hosted.test", "203.0.113.8", "F1");
    EXPECT_EQ(same, "DUNNO") << same_line;
    EXPECT_NE(same_line.find(" class=policy_blocked "), std::string::npos) << same_line;
    EXPECT_NE(same_line.find(" source=cache "), std::string::npos) << same_line;
    // ... and the MX IP is left alone for the other domains it serves.
    auto [other, other_line] = ask("forged2@d1.hosted.test", "203.0.113.9", "F2");
    EXPECT_EQ(other, kRateLimited) << other_line;
    EXPECT_NE(other_line.find(" limit=mx"), std::string::npos) << other_line;
    EXPECT_EQ(t.at(0).connections_accepted(), 1u);
}

// --- The MX budget counts connections, not MX hosts that were never contacted -----------------

// KNOWN BUG, disabled until fixed: MxBudget::admit() admits up to callout.max_mx hosts before the
// probe starts, so every probe of pair.test spends mx_rate (and holds an mx_concurrency slot) at
// its backup MX although the probe only talks to the primary. backuponly.test, whose only MX is
// that backup, is then answered rate_limited (limit=mx) while the backup has seen no connection.
// A fix admits each host when the probe moves on to it.
TEST_F(ListWashing, AnUnusedBackupMxSpendsNoBudget) {
    FakeSmtpFleet t({{kPrimaryIp, knows_alice()}, {kBackupIp, knows_alice()}});
    ASSERT_TRUE(t.ok());
    start(config(t.port(), limits("unlimited", "unlimited", "2/1m", 100)));

    for (int i = 0; i < 2; ++i) {
        std::string id = "P" + std::to_string(i);
        auto [action, line] = ask("user" + std::to_string(i) + "@pair.test", "198.51.100.50", id);
        EXPECT_NE(line.find(" class=invalid "), std::string::npos) << line;
    }
    EXPECT_EQ(t.at(0).connections_accepted(), 2u);
    EXPECT_EQ(t.at(1).connections_accepted(), 0u) << "the backup is never contacted";

    auto [action, line] = ask("alice@backuponly.test", "198.51.100.51", "P-BACKUP");
    EXPECT_EQ(action, "DUNNO") << line;
    EXPECT_NE(line.find(" class=valid "), std::string::npos)
        << "the backup MX has taken no connection, so its budget is untouched: " << line;
    EXPECT_EQ(t.at(1).connections_accepted(), 1u);
}

// --- e. Peak memory under 100,000 distinct forged senders --------------------------------------

long vm_hwm_kb(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);) {
        if (line.starts_with("VmHWM:")) return std::stol(line.substr(6));
    }
    return -1;
}

TEST_F(ListWashing, HundredThousandForgedSendersKeepMemoryBounded) {
    FakeSmtpFleet t({{kRssIp, FakeSmtpScript{}}});
    ASSERT_TRUE(t.ok());
    // The shipped default limits, only the rate_limited action marked.
    start(config(t.port(), std::string("[actions]\nrate_limited = \"") + kRateLimited + "\"\n"));
    long before_kb = vm_hwm_kb(daemon_->pid());

    constexpr size_t kRequests = 100'000;
    std::vector<std::string> requests;
    requests.reserve(kRequests);
    for (size_t i = 0; i < kRequests; ++i) {
        // 1,000 domains and 1,000 client IPs, so every budget kind sees many keys.
        std::string id = "E" + std::to_string(i);
        std::string domain = "r" + std::to_string(i % kRssDomains) + ".rss.test";
        std::string client = "203.0." + std::to_string((i / 7) % 1000 / 250) + "." +
                             std::to_string((i / 7) % 250 + 1);
        requests.push_back(
            policy_request("forged" + std::to_string(i) + "@" + domain, client, id, id));
    }
    BurstOptions o = burst(8, 64, 0ms);
    o.timeout = 50s;
    BurstResult r = run_burst(requests, o);
    long hwm_kb = vm_hwm_kb(daemon_->pid());

    expect_all_answered_in_budget(r, kRequests);
    std::cout << "[ figures  ] " << kRequests * 1'000'000 / std::max<long>(1, r.elapsed.count())
              << " requests/s; VmHWM " << before_kb / 1024 << " MB after start, " << hwm_kb / 1024
              << " MB after 100k forged senders; MX connections " << t.at(0).connections_accepted()
              << "\n";
    EXPECT_GE(r.count(kRateLimited), kRequests - 600) << "global_rate 600/1m bounds the probes";
    // Bound: measured ~27 MB (a few MB at start, plus the per-message memo capped at 65,536
    // entries of a few hundred bytes, budget windows for <= a few thousand keys, the verdict
    // cache and I/O buffers). 80 MB is ~3x that, and a daemon that kept even ~550 bytes (the
    // size of one request) per forged sender would pass it after 100k of them.
    EXPECT_GT(hwm_kb, 0);
#ifndef CALLOUTD_SANITIZED
    // (Under ASan the quarantine and shadow memory make the figure meaningless.)
    EXPECT_LT(hwm_kb, 80 * 1024) << "VmHWM " << hwm_kb << " kB";
#endif
    EXPECT_LE(t.at(0).max_concurrent_connections(), 2u);
    EXPECT_LE(t.at(0).connections_accepted(), 30u) << "mx_rate 30/1m";

    stop_daemon();
    std::string log = daemon_->log();
    EXPECT_EQ(occurrences(log, " decision queue_id=E"), kRequests) << "one decision line each";
    std::cout << "[ figures  ] " << line_with(log, " stats ") << "\n";
}

}  // namespace
}  // namespace calloutd::test
