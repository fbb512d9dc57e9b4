// Cluster mode acceptance: three real calloutd processes sharing one real redis-server, dnsmasq
// zones and counting fake SMTP targets (single flight, shared budgets, Redis killed, restarted
// and paused under load). The Lua scripts themselves: cluster_scripts_test.cpp.
// Over 500 lines as one concept: one three-node cluster fixture and its scenarios.
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

}  // namespace
}  // namespace calloutd::test
