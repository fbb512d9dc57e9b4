// Cluster mode acceptance: three real calloutd processes sharing one real redis-server, dnsmasq
// zones and counting fake SMTP targets (single flight, shared budgets, Redis killed, restarted
// and paused under load); and the Lua scripts' semantics driven directly through RedisClient.
#include <gtest/gtest.h>

#include <csignal>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "storage/redis_budget.hpp"
#include "storage/redis_cache.hpp"
#include "storage/redis_client.hpp"
#include "storage/redis_schema.hpp"
#include "support/callout_world.hpp"
#include "support/daemon_process.hpp"
#include "support/dnsmasq.hpp"
#include "support/fake_smtp.hpp"
#include "support/policy_burst.hpp"
#include "support/policy_client.hpp"
#include "support/redis_server.hpp"
#include "support/text.hpp"

namespace calloutd::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// One target per scenario (callout_world.hpp uses .21-.41, list_washing_test .61-.68).
constexpr const char* kForgedIp = "127.0.0.71";    // forged.test: single flight
constexpr const char* kBudgetIp = "127.0.0.72";    // budget.test: shared domain budget
constexpr const char* kKillIp = "127.0.0.73";      // kill.test: Redis killed and restarted
constexpr const char* kPauseIp = "127.0.0.74";     // pause.test: Redis paused and resumed
constexpr const char* kRaceIp = "127.0.0.77";      // race.test: fast probes raced by three nodes
constexpr const char* kStallIp = "127.0.0.78";     // stall.test: Redis stalls mid-window
constexpr const char* kDegradeIp = "127.0.0.79";   // degrade.test: three nodes without Redis
constexpr const char* kShutdownIp = "127.0.0.80";  // shutdown.test: SIGTERM during probes

constexpr const char* kInvalid = "REJECT 5.1.7";
constexpr const char* kInProgress = "DEFER_IF_PERMIT";
constexpr const char* kRateLimited = "WARN rate limited";
constexpr const char* kTempfail = "WARN tempfail";
constexpr int kNodes = 3;
constexpr auto kReplyTimeout = 2s;
constexpr auto kSlack = 500ms;  // scheduling on a shared 2-core machine

DnsmasqZones cluster_zones() {
    DnsmasqZones z;
    z.local_domains = {"test"};
    z.mx = {{"forged.test", "mx.forged.test", 10},   {"budget.test", "mx.budget.test", 10},
            {"kill.test", "mx.kill.test", 10},       {"pause.test", "mx.pause.test", 10},
            {"race.test", "mx.race.test", 10},       {"stall.test", "mx.stall.test", 10},
            {"degrade.test", "mx.degrade.test", 10}, {"shutdown.test", "mx.shutdown.test", 10}};
    z.hosts = {{"mx.forged.test", {kForgedIp}},   {"mx.budget.test", {kBudgetIp}},
               {"mx.kill.test", {kKillIp}},       {"mx.pause.test", {kPauseIp}},
               {"mx.race.test", {kRaceIp}},       {"mx.stall.test", {kStallIp}},
               {"mx.degrade.test", {kDegradeIp}}, {"mx.shutdown.test", {kShutdownIp}}};
    return z;
}

// alice and bob exist everywhere; every other mailbox is unknown (550 5.1.1 -> invalid).
FakeSmtpScript knows_alice_and_bob() {
    FakeSmtpScript s;
    s.recipients["alice"] = "250 2.1.5 ok";
    s.recipients["bob"] = "250 2.1.5 ok";
    return s;
}

class Cluster : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        dnsmasq_ = std::make_unique<Dnsmasq>(cluster_zones());
        // callout.port is one port for every MX: all targets share it.
        for (int attempt = 0; attempt < 5 && targets_.empty(); ++attempt) {
            uint16_t port = 0;
            for (const char* ip : {kForgedIp, kBudgetIp, kKillIp, kPauseIp, kRaceIp, kStallIp,
                                   kDegradeIp, kShutdownIp}) {
                FakeSmtpScript script = knows_alice_and_bob();
                // The forged sender's probe lasts long enough for every node to ask meanwhile.
                if (ip == std::string(kForgedIp)) {
                    script.recipients["forger"] = FakeReply::slow("550 5.1.1 no such user", 400ms);
                }
                // Probes still running when their node is told to stop.
                for (int i = 0; ip == std::string(kShutdownIp) && i < 5; ++i) {
                    script.recipients["slow" + std::to_string(i)] =
                        FakeReply::slow("550 5.1.1 no such user", 4s);
                }
                auto s = std::make_unique<FakeSmtpServer>(script, ip, port);
                if (!s->ok()) {
                    targets_.clear();
                    break;
                }
                port = s->port();
                targets_.push_back(std::move(s));
            }
        }
    }
    static void TearDownTestSuite() {
        for (auto& t : targets_) t->stop();
        targets_.clear();
        dnsmasq_.reset();
    }
    void SetUp() override {
        ASSERT_EQ(targets_.size(), 8u) << "fake SMTP targets could not be bound";
        RedisServerOptions o;
        o.debug_command = true;  // DEBUG SLEEP: a Redis that stalls
        redis_ = std::make_unique<RedisServer>(o);
    }
    void TearDown() override {
        if (HasFailure()) {
            for (size_t i = 0; i < nodes_.size(); ++i) {
                std::string log = nodes_[i]->log();
                if (log.size() > 8000) log = "...\n" + log.substr(log.size() - 8000);
                std::cerr << "--- node " << i + 1 << " log (tail) ---\n" << log;
            }
        }
        for (auto& n : nodes_) {
            if (n->running()) {
                n->signal(SIGTERM);
                if (n->wait_exit(10s) < 0) ADD_FAILURE() << "calloutd did not exit on SIGTERM";
            }
        }
        nodes_.clear();
        redis_.reset();
    }

    static FakeSmtpServer& target(const char* ip) {
        for (auto& t : targets_) {
            if (t->ip() == ip) return *t;
        }
        throw std::logic_error("no target");
    }

    // `count` nodes (three unless said) on the test's Redis with the same configuration;
    // `redis_extra` adds lines to [redis]; `slow_targets` lets a probe wait 6 s for a reply.
    void start_nodes(const std::string& domain_rate, const std::string& redis_extra = "",
                     int count = kNodes, bool slow_targets = false) {
        CalloutConfig c;
        if (slow_targets) {
            c.command_timeout = "6s";
            c.probe_timeout = "8s";
        }
        c.dns_server = dnsmasq_->server();  // never the system resolver
        c.smtp_port = targets_.front()->port();
        c.reply_timeout = "2s";
        c.log_level = "info";
        c.sections = "[limits]\ndomain_rate = \"" + domain_rate +
                     "\"\nclient_rate = \"unlimited\"\nglobal_rate = \"unlimited\"\n"
                     "global_concurrency = 10000\nmx_rate = \"unlimited\"\nmx_concurrency = 100\n"
                     "provider_rate = \"unlimited\"\n"
                     "[actions]\nrate_limited = \"" +
                     std::string(kRateLimited) + "\"\ntempfail = \"" + kTempfail +
                     "\"\n[redis]\nurl = \"" + redis_->url() + "\"\ntimeout = \"250ms\"\n" +
                     redis_extra;
        for (int i = 0; i < count; ++i) {
            nodes_.push_back(
                std::make_unique<DaemonProcess>("cluster" + std::to_string(i), callout_config(c)));
            ASSERT_TRUE(nodes_.back()->started()) << nodes_.back()->log();
            ASSERT_NE(nodes_.back()->tcp_port(), 0) << nodes_.back()->log();
        }
        for (auto& n : nodes_) {
            ASSERT_TRUE(wait_count(*n, "redis link=commands state=up", 1)) << n->log();
        }
    }

    uint16_t port(int node) const { return nodes_.at(static_cast<size_t>(node))->tcp_port(); }

    // Waits until node's log holds `needle` at least `n` times.
    static bool wait_count(const DaemonProcess& node, const std::string& needle, size_t n,
                           std::chrono::milliseconds limit = 10s) {
        for (auto deadline = Clock::now() + limit; Clock::now() < deadline;
             std::this_thread::sleep_for(20ms)) {
            if (occurrences(node.log(), needle) >= n) return true;
        }
        return occurrences(node.log(), needle) >= n;
    }
    size_t total(const std::string& needle) const {
        size_t n = 0;
        for (const auto& node : nodes_) n += occurrences(node->log(), needle);
        return n;
    }

    // One request on its own connection; the action, retried while it is in_progress.
    std::optional<std::string> final_action(int node, const std::string& sender,
                                            const std::string& id) {
        std::optional<std::string> action;
        for (int attempt = 0; attempt < 20; ++attempt) {
            PolicyClient c = PolicyClient::inet("127.0.0.1", port(node));
            std::string qid = id + "-" + std::to_string(attempt);
            c.send(policy_request(sender, "198.51.100.7", qid, qid));
            action = c.read_action(kReplyTimeout + kSlack);
            if (!action || !action->starts_with(kInProgress)) return action;
            std::this_thread::sleep_for(100ms);
        }
        return action;
    }
    // The decision line a node logged for queue id `qid`.
    std::string decision(int node, const std::string& qid) {
        const auto& n = *nodes_.at(static_cast<size_t>(node));
        std::string needle = "decision queue_id=" + qid + " ";
        n.wait_for_log(needle, 3s);
        return line_with(n.log(), needle);
    }

    // Pipelined load over every node at once, one thread per node; request k of node i is
    // sender(i, k).
    std::vector<BurstResult> load(size_t per_node, std::chrono::milliseconds spread,
                                  const std::function<std::string(int, size_t)>& sender) {
        std::vector<BurstResult> results(kNodes);
        std::vector<std::thread> threads;
        for (int i = 0; i < kNodes; ++i) {
            std::vector<std::string> requests;
            for (size_t k = 0; k < per_node; ++k) {
                std::string id = "L" + std::to_string(i) + "-" + std::to_string(k);
                requests.push_back(policy_request(sender(i, k), "203.0.113.9", id, id));
            }
            BurstOptions o;
            o.port = port(i);
            o.connections = 4;
            o.window = 4;
            o.spread = spread;
            o.timeout = spread + 20s;
            threads.emplace_back([o, requests = std::move(requests), &r = results[i]] {
                r = run_burst(requests, o);
            });
        }
        for (auto& t : threads) t.join();
        return results;
    }
    static void expect_answered_in_budget(const std::vector<BurstResult>& results, size_t per_node,
                                          const char* what) {
        size_t answered = 0;
        std::chrono::microseconds worst{0};
        for (const auto& r : results) {
            EXPECT_EQ(r.answered, per_node) << what;
            EXPECT_EQ(r.lost_connections, 0u) << what;
            answered += r.answered;
            worst = std::max(worst, r.max_latency());
        }
        EXPECT_LE(worst, kReplyTimeout + kSlack) << what << ": a reply outlived the reply budget";
        std::cout << "[ figures  ] " << what << ": " << answered << "/" << per_node * kNodes
                  << " answered; per node p50/p99/max ";
        for (const auto& r : results) {
            std::cout << r.percentile(50).count() / 1000.0 << "/"
                      << r.percentile(99).count() / 1000.0 << "/"
                      << r.max_latency().count() / 1000.0 << " ms  ";
        }
        std::cout << "\n";
    }

    static inline std::unique_ptr<Dnsmasq> dnsmasq_;
    static inline std::vector<std::unique_ptr<FakeSmtpServer>> targets_;
    std::unique_ptr<RedisServer> redis_;
    std::vector<std::unique_ptr<DaemonProcess>> nodes_;
};

// --- a. One forged sender at three nodes at once: one probe, one verdict ---------------------

TEST_F(Cluster, SameForgedSenderAtThreeNodesAtOnceIsProbedOnce) {
    start_nodes("100/1m");
    const std::string sender = "forger@forged.test";
    constexpr int kPerNode = 4;
    std::vector<PolicyClient> clients;
    std::vector<int> node_of;
    for (int k = 0; k < kPerNode; ++k) {
        for (int i = 0; i < kNodes; ++i) {
            clients.push_back(PolicyClient::inet("127.0.0.1", port(i)));
            ASSERT_TRUE(clients.back().connected());
            node_of.push_back(i);
        }
    }
    for (size_t c = 0; c < clients.size(); ++c) {
        std::string id = "A" + std::to_string(c);
        ASSERT_TRUE(clients[c].send(policy_request(sender, "198.51.100.7", id, id)));
    }
    size_t in_progress = 0;
    std::vector<std::string> actions;
    for (size_t c = 0; c < clients.size(); ++c) {
        auto action = clients[c].read_action(kReplyTimeout + kSlack);
        ASSERT_TRUE(action) << "request " << c << " to node " << node_of[c] + 1 << " unanswered";
        if (action->starts_with(kInProgress)) {
            ++in_progress;
            action = final_action(node_of[c], sender, "A-retry" + std::to_string(c));
            ASSERT_TRUE(action);
        }
        actions.push_back(*action);
    }
    std::this_thread::sleep_for(300ms);  // a second, late probe would show up by now

    std::cout << "[ figures  ] " << clients.size() << " concurrent requests over " << kNodes
              << " nodes: " << target(kForgedIp).connections_accepted()
              << " connection(s) at the target, " << in_progress << " in_progress first\n";
    EXPECT_EQ(target(kForgedIp).connections_accepted(), 1u);
    EXPECT_EQ(target(kForgedIp).count_commands("RCPT TO:<forger@forged.test>"), 1u);
    EXPECT_EQ(total(" probe sender=" + sender), 1u);
    for (size_t c = 0; c < actions.size(); ++c) {
        EXPECT_TRUE(actions[c].starts_with(kInvalid))
            << "node " << node_of[c] + 1 << ": " << actions[c];
    }
    // Every node logged the same class; the two that did not probe waited for the prober's
    // verdict (published on calloutd:stored) and answered it as a cache hit.
    size_t probed = 0, waited = 0;
    for (int i = 0; i < kNodes; ++i) {
        std::string log = nodes_[static_cast<size_t>(i)]->log();
        EXPECT_GE(occurrences(log, "sender=" + sender + " client=198.51.100.7 class=invalid "),
                  static_cast<size_t>(kPerNode))
            << "node " << i + 1;
        if (log.find(" source=probe ") != std::string::npos) {
            ++probed;
        } else if (log.find(" source=cache ") != std::string::npos) {
            ++waited;
        }
    }
    EXPECT_EQ(probed, 1u);
    EXPECT_EQ(waited, 2u);
}

// A node told "in flight elsewhere" registers its wait after the admission reply; the prober's
// "stored" message may already have been handled by then. Fast probes make that window real.
TEST_F(Cluster, FastProbeRacedByThreeNodesNeverLeavesAWaiterHanging) {
    start_nodes("100000/1m");
    constexpr int kRounds = 200;
    size_t in_progress = 0;
    std::chrono::microseconds worst{0};
    for (int round = 0; round < kRounds; ++round) {
        std::string sender = "r" + std::to_string(round) + "@race.test";
        std::vector<PolicyClient> clients;
        for (int i = 0; i < kNodes; ++i)
            clients.push_back(PolicyClient::inet("127.0.0.1", port(i)));
        for (int i = 0; i < kNodes; ++i) {
            std::string id = "R" + std::to_string(round) + "-" + std::to_string(i);
            ASSERT_TRUE(clients[static_cast<size_t>(i)].send(
                policy_request(sender, "203.0.113.5", id, id)));
        }
        auto sent = Clock::now();
        for (auto& c : clients) {
            auto action = c.read_action(kReplyTimeout + kSlack);
            ASSERT_TRUE(action) << sender;
            if (action->starts_with(kInProgress)) ++in_progress;
        }
        worst = std::max(
            worst, std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - sent));
    }
    std::cout << "[ figures  ] " << kRounds << " senders x " << kNodes
              << " nodes at once: " << target(kRaceIp).connections_accepted() << " connections, "
              << in_progress << " in_progress, slowest round " << worst.count() / 1000.0 << " ms\n";
    EXPECT_EQ(target(kRaceIp).connections_accepted(), static_cast<size_t>(kRounds));
    EXPECT_EQ(in_progress, 0u) << "a node waited out the reply budget for a stored verdict";
    EXPECT_LT(worst, 1s);
}

// --- b. The domain budget is one budget for the whole cluster -------------------------------

TEST_F(Cluster, DomainBudgetHoldsAcrossNodes) {
    start_nodes("6/1m");
    constexpr int kSenders = 60;
    // Round robin: sender k goes to node k % 3, pipelined on one connection per node.
    std::vector<PolicyClient> clients;
    for (int i = 0; i < kNodes; ++i) clients.push_back(PolicyClient::inet("127.0.0.1", port(i)));
    for (int k = 0; k < kSenders; ++k) {
        std::string id = "B" + std::to_string(k);
        ASSERT_TRUE(clients[static_cast<size_t>(k % kNodes)].send(
            policy_request("user" + std::to_string(k) + "@budget.test", "203.0.113.5", id, id)));
    }
    size_t limited = 0, invalid = 0, other = 0;
    for (int k = 0; k < kSenders; ++k) {
        auto action = clients[static_cast<size_t>(k % kNodes)].read_action(kReplyTimeout + kSlack);
        ASSERT_TRUE(action) << "request " << k << " unanswered";
        if (*action == kRateLimited) {
            ++limited;
        } else if (action->starts_with(kInvalid)) {
            ++invalid;
        } else {
            ++other;
        }
    }
    std::this_thread::sleep_for(200ms);
    size_t seen = target(kBudgetIp).connections_accepted();
    std::cout << "[ figures  ] " << kSenders << " senders over " << kNodes
              << " nodes, domain_rate 6/1m: " << seen << " connections, " << invalid << " invalid, "
              << limited << " rate_limited, " << other << " other\n";
    EXPECT_LE(seen, 6u);
    EXPECT_EQ(seen, 6u) << "every admitted probe reaches the target";
    EXPECT_EQ(invalid, seen);
    EXPECT_EQ(limited, kSenders - seen);
    EXPECT_EQ(other, 0u);
    size_t logged = 0;
    for (auto deadline = Clock::now() + 3s; Clock::now() < deadline && logged < limited;
         std::this_thread::sleep_for(20ms)) {
        logged = total(" limit=domain");
    }
    EXPECT_EQ(logged, limited) << "one limit=domain decision line per rate_limited reply";
}

// --- c. Redis killed under load, then restarted ----------------------------------------------

TEST_F(Cluster, RedisKilledUnderLoadThenRestartedResumesSharedMode) {
    start_nodes("1000/1m");
    FakeSmtpServer& t = target(kKillIp);
    ASSERT_EQ(final_action(0, "alice@kill.test", "C-warm"), "DUNNO");  // hot, cached sender

    // 4 s of requests at every node; Redis dies 1.5 s in. Every third sender is new.
    std::thread killer([this] {
        std::this_thread::sleep_for(1500ms);
        redis_->kill();
    });
    auto results = load(240, 4s, [](int node, size_t k) {
        if (k % 3 != 0) return std::string("alice@kill.test");
        return "n" + std::to_string(node) + "-" + std::to_string(k) + "@kill.test";
    });
    killer.join();
    expect_answered_in_budget(results, 240, "Redis killed 1.5 s into 4 s of load");
    size_t before_restart = t.connections_accepted();
    for (int i = 0; i < kNodes; ++i) {
        std::string log = nodes_[static_cast<size_t>(i)]->log();
        std::string down = line_with(log, "redis link=commands state=down");
        EXPECT_FALSE(down.empty()) << "node " << i + 1;
        EXPECT_NE(down.find(" mode=degraded"), std::string::npos) << down;
    }

    redis_->restart();  // same port, empty data set
    auto restarted = Clock::now();
    for (const auto& n : nodes_) {
        EXPECT_TRUE(wait_count(*n, "redis link=commands state=up", 2, 15s)) << "no reconnect";
    }
    std::cout
        << "[ figures  ] every node back in shared mode "
        << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - restarted).count()
        << " ms after the restart; target connections during the run: " << before_restart << "\n";

    // Shared mode again: probed through node 1, node 2 answers from the shared cache.
    EXPECT_EQ(final_action(0, "bob@kill.test", "C-after1"), "DUNNO");
    EXPECT_EQ(t.connections_accepted(), before_restart + 1);
    PolicyClient c = PolicyClient::inet("127.0.0.1", port(1));
    c.send(policy_request("bob@kill.test", "198.51.100.7", "C-after2", "C-after2"));
    EXPECT_EQ(c.read_action(kReplyTimeout + kSlack), "DUNNO");
    std::string line = decision(1, "C-after2");
    EXPECT_NE(line.find(" class=valid "), std::string::npos) << line;
    EXPECT_NE(line.find(" source=cache "), std::string::npos) << line;
    EXPECT_EQ(t.connections_accepted(), before_restart + 1) << "node 2 probed again";
    EXPECT_EQ(redis_->command({"EXISTS", redis_schema::address_key("kill.test", "bob@kill.test")})
                  .as_integer(),
              1);
}

// --- d. Redis hangs (SIGSTOP), then comes back --------------------------------------------------

TEST_F(Cluster, PausedRedisKeepsRepliesWithinBudgetAndSharedModeResumes) {
    start_nodes("1000/1m");
    FakeSmtpServer& t = target(kPauseIp);
    ASSERT_EQ(final_action(0, "alice@pause.test", "D-warm"), "DUNNO");

    redis_->pause();
    auto results = load(45, 1500ms, [](int node, size_t k) {
        if (k % 3 != 0) return std::string("alice@pause.test");
        return "p" + std::to_string(node) + "-" + std::to_string(k) + "@pause.test";
    });
    expect_answered_in_budget(results, 45, "Redis paused (redis.timeout 250ms)");
    std::chrono::microseconds worst{0};
    for (const auto& r : results) worst = std::max(worst, r.max_latency());
    EXPECT_LE(worst, 1000ms) << "a stalled Redis may cost a request redis.timeout, not more";
    for (const auto& n : nodes_) {
        EXPECT_TRUE(wait_count(*n, "redis link=commands state=down", 1, 3s)) << "no state=down";
    }

    redis_->resume();
    for (const auto& n : nodes_) {
        EXPECT_TRUE(wait_count(*n, "redis link=commands state=up", 2, 15s)) << "no reconnect";
    }
    size_t before = t.connections_accepted();
    EXPECT_EQ(final_action(1, "bob@pause.test", "D-after1"), "DUNNO");
    EXPECT_EQ(t.connections_accepted(), before + 1);
    PolicyClient c = PolicyClient::inet("127.0.0.1", port(2));
    c.send(policy_request("bob@pause.test", "198.51.100.7", "D-after2", "D-after2"));
    EXPECT_EQ(c.read_action(kReplyTimeout + kSlack), "DUNNO");
    std::string line = decision(2, "D-after2");
    EXPECT_NE(line.find(" source=cache "), std::string::npos) << line;
    EXPECT_EQ(t.connections_accepted(), before + 1) << "node 3 probed again";
}

// --- Degraded mode stays within the budgets -----------------------------------------------------

// The node's local windows count what it spent through Redis, so a stall in the middle of the
// window grants no fresh budget: 12 forged senders through Redis, then Redis stalls (DEBUG
// SLEEP), 12 more decided locally: at most domain_rate connections in all.
TEST_F(Cluster, OneNodeThatLosesRedisMidWindowStaysWithinTheDomainRate) {
    start_nodes("10/1m", "", 1);
    FakeSmtpServer& t = target(kStallIp);
    size_t limited = 0;
    for (int k = 0; k < 12; ++k) {
        std::string sender = "before" + std::to_string(k) + "@stall.test";
        auto action = final_action(0, sender, "S" + std::to_string(k));
        ASSERT_TRUE(action) << sender;
        if (*action == kRateLimited) ++limited;
    }
    ASSERT_EQ(t.connections_accepted(), 10u) << "the shared window admitted domain_rate probes";
    EXPECT_EQ(limited, 2u);

    redis_->debug_sleep(5s);
    auto stalled = Clock::now();
    for (int k = 0; k < 12; ++k) {
        std::string sender = "during" + std::to_string(k) + "@stall.test";
        auto action = final_action(0, sender, "SD" + std::to_string(k));
        ASSERT_TRUE(action) << sender;
        EXPECT_EQ(*action, kRateLimited) << sender;
    }
    auto spent = Clock::now() - stalled;
    std::this_thread::sleep_for(200ms);
    std::cout << "[ figures  ] 24 forged senders, Redis stalled after 12: "
              << t.connections_accepted() << " connections (domain_rate 10/1m)\n";
    EXPECT_EQ(t.connections_accepted(), 10u);
    EXPECT_LT(spent, 5s) << "the second half was decided while Redis slept";
    EXPECT_TRUE(wait_count(*nodes_[0], "redis link=commands state=down", 1, 3s))
        << "the node noticed the stall";
    EXPECT_GE(total(" limit=domain"), 14u);
}

// N nodes that lose Redis together, with redis.nodes = N, share the rate instead of each
// spending all of it.
TEST_F(Cluster, ThreeNodesWithoutRedisStayWithinTheDomainRate) {
    start_nodes("9/1m", "nodes = 3\n");
    redis_->kill();
    for (const auto& n : nodes_) {
        EXPECT_TRUE(wait_count(*n, "redis link=commands state=down", 1, 5s)) << "no state=down";
    }
    constexpr int kSenders = 30;
    std::vector<PolicyClient> clients;
    for (int i = 0; i < kNodes; ++i) clients.push_back(PolicyClient::inet("127.0.0.1", port(i)));
    for (int k = 0; k < kSenders; ++k) {
        std::string id = "G" + std::to_string(k);
        ASSERT_TRUE(clients[static_cast<size_t>(k % kNodes)].send(
            policy_request("user" + std::to_string(k) + "@degrade.test", "203.0.113.5", id, id)));
    }
    size_t limited = 0;
    for (int k = 0; k < kSenders; ++k) {
        auto action = clients[static_cast<size_t>(k % kNodes)].read_action(kReplyTimeout + kSlack);
        ASSERT_TRUE(action) << "request " << k << " unanswered";
        if (*action == kRateLimited) ++limited;
    }
    std::this_thread::sleep_for(200ms);
    size_t seen = target(kDegradeIp).connections_accepted();
    std::cout << "[ figures  ] " << kSenders << " senders over " << kNodes
              << " nodes without Redis, domain_rate 9/1m, redis.nodes 3: " << seen
              << " connections, " << limited << " rate_limited\n";
    EXPECT_GT(seen, 0u);
    EXPECT_LE(seen, 9u);
    EXPECT_EQ(limited, kSenders - seen);
}

// --- Shutdown releases what it cancels -----------------------------------------------------------

// SIGTERM during probes: the release scripts reach Redis before the node exits, so another node
// probes those addresses at once instead of waiting for stale in-flight markers.
TEST_F(Cluster, AfterSigtermDuringProbesAnotherNodeProbesThoseAddressesAtOnce) {
    start_nodes("100/1m", "", 2, true);
    FakeSmtpServer& t = target(kShutdownIp);
    constexpr int kSlow = 5;
    std::vector<PolicyClient> clients;
    for (int i = 0; i < kSlow; ++i) {
        clients.push_back(PolicyClient::inet("127.0.0.1", port(0)));
        std::string id = "K" + std::to_string(i);
        ASSERT_TRUE(clients.back().send(
            policy_request("slow" + std::to_string(i) + "@shutdown.test", "198.51.100.7", id, id)));
    }
    for (auto& c : clients) {
        auto action = c.read_action(kReplyTimeout + kSlack);
        ASSERT_TRUE(action);
        EXPECT_TRUE(action->starts_with(kInProgress)) << *action;
    }
    auto marker = [](int i) {
        std::string a = "slow" + std::to_string(i) + "@shutdown.test";
        return redis_schema::in_flight_key("shutdown.test", a);
    };
    for (int i = 0; i < kSlow; ++i) {
        ASSERT_EQ(redis_->command({"EXISTS", marker(i)}).as_integer(), 1) << "probe " << i;
    }
    ASSERT_EQ(t.connections_accepted(), static_cast<size_t>(kSlow));

    clients.clear();  // answered: nothing left for the drain to wait for
    auto stopping = Clock::now();
    nodes_[0]->signal(SIGTERM);
    ASSERT_GE(nodes_[0]->wait_exit(10s), 0) << "calloutd did not exit on SIGTERM";
    std::cout
        << "[ figures  ] node 1 exited "
        << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - stopping).count()
        << " ms after SIGTERM with " << kSlow << " probes running\n";
    for (int i = 0; i < kSlow; ++i) {
        EXPECT_EQ(redis_->command({"EXISTS", marker(i)}).as_integer(), 0)
            << "stale in-flight marker for probe " << i;
    }
    EXPECT_EQ(redis_->command({"ZCARD", std::string(redis_schema::kRunningKey)}).as_integer(), 0);

    for (int i = 0; i < kSlow; ++i) {
        clients.push_back(PolicyClient::inet("127.0.0.1", port(1)));
        std::string id = "K2-" + std::to_string(i);
        clients.back().send(
            policy_request("slow" + std::to_string(i) + "@shutdown.test", "198.51.100.7", id, id));
    }
    for (auto deadline = Clock::now() + 3s;
         Clock::now() < deadline && t.connections_accepted() < 2u * kSlow;
         std::this_thread::sleep_for(20ms)) {
    }
    EXPECT_EQ(t.connections_accepted(), 2u * kSlow) << "node 2 waited for markers of a dead node";
    for (auto& c : clients) EXPECT_TRUE(c.read_action(kReplyTimeout + kSlack));
    for (int i = 0; i < kSlow; ++i) {
        EXPECT_EQ(t.count_commands("RCPT TO:<slow" + std::to_string(i) + "@shutdown.test>"), 2u);
    }
}

// --- e. The scripts themselves, through RedisClient as the daemon registers them -------------

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
