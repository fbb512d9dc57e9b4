// Chaos under load: 60 s of steady mixed policy traffic (valid, invalid, forged, tarpit and
// hostile targets; 20 connections, some pipelined, some half-closing like Exim) while, on a
// schedule, the DNS server is killed and restarted, target MXes are SIGKILLed and restarted,
// Redis is killed, SIGSTOPped and restarted, and SIGHUP arrives every 2 s with a valid and a
// broken configuration in turn. Every request must be answered exactly once within
// server.reply_timeout + 1 s, a valid sender never rejected, the daemon alive, its RSS bounded
// and its file descriptors back to the baseline once the load stops.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "support/callout_world.hpp"
#include "support/daemon_process.hpp"
#include "support/dnsmasq.hpp"
#include "support/fake_smtp.hpp"
#include "support/policy_client.hpp"
#include "support/redis_server.hpp"

namespace calloutd::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kReplyTimeout = 3s;
constexpr auto kAnswerBound = kReplyTimeout + 1s;  // what the issue asks of every request

// One target MX per kind of sender, each on its own loopback address and all on one port.
struct TargetSpec {
    const char* ip;
    const char* domain;
    const char* scenario;
};
constexpr TargetSpec kTargets[] = {
    {"127.0.0.81", "valid.chaos", "valid"},      // user0..49 exist; others are unknown
    {"127.0.0.82", "forged.chaos", "reject"},    // every address unknown
    {"127.0.0.83", "tarpit.chaos", "tarpit"},    // never says a word
    {"127.0.0.84", "huge.chaos", "huge"},        // a 1 MB banner
    {"127.0.0.85", "garbage.chaos", "garbage"},  // NUL and CR LF injection at RCPT
};

// A fake SMTP target in a process of its own (tests/tools/fake_smtp_target), so that it can
// die by SIGKILL like a crashed MX and come back on the same address and port.
class TargetProcess {
  public:
    TargetProcess(const TargetSpec& spec, uint16_t port) : spec_(spec), port_(port) { start(); }
    ~TargetProcess() { stop(); }
    TargetProcess(const TargetProcess&) = delete;
    TargetProcess& operator=(const TargetProcess&) = delete;

    bool ok() const { return pid_ > 0; }
    uint16_t port() const { return port_; }
    void kill() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }
    bool restart() {
        kill();
        // The port was ours a moment ago; a few tries in case the kernel is slow to let go.
        for (int i = 0; i < 20 && pid_ <= 0; ++i) {
            start();
            if (pid_ <= 0) std::this_thread::sleep_for(100ms);
        }
        return pid_ > 0;
    }
    void stop() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGTERM);
        waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

  private:
    void start() {
        int out[2];
        if (pipe2(out, O_CLOEXEC) != 0) return;
        std::string port = std::to_string(port_);
        pid_t pid = fork();
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
            dup2(out[1], STDOUT_FILENO);
            execl(CALLOUTD_FAKE_SMTP_TARGET, "fake_smtp_target", "--scenario", spec_.scenario,
                  "--ip", spec_.ip, "--port", port.c_str(), "--domain", spec_.domain,
                  static_cast<char*>(nullptr));
            _exit(127);
        }
        ::close(out[1]);
        std::string line;
        char c;
        while (pid > 0 && ::read(out[0], &c, 1) == 1 && c != '\n') line += c;
        ::close(out[0]);
        if (pid > 0 && line.starts_with("port=")) {
            port_ = static_cast<uint16_t>(std::stoi(line.substr(5)));
            pid_ = pid;
        } else if (pid > 0) {
            waitpid(pid, nullptr, 0);
        }
    }

    TargetSpec spec_;
    uint16_t port_;
    pid_t pid_ = -1;
};

DnsmasqZones chaos_zones() {
    DnsmasqZones z;
    z.local_domains = {"chaos"};
    for (const auto& t : kTargets) {
        std::string mx = "mx." + std::string(t.domain);
        z.mx.push_back({t.domain, mx, 10});
        z.hosts.push_back({mx, {t.ip}});
    }
    return z;  // nx.chaos does not exist
}

std::string read_text(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// VmRSS of a process in kB (0 if unknown).
long rss_kb(pid_t pid) {
    std::istringstream in(read_text("/proc/" + std::to_string(pid) + "/status"));
    for (std::string line; std::getline(in, line);) {
        if (line.starts_with("VmRSS:")) return std::atol(line.c_str() + 6);
    }
    return 0;
}

int open_fds(pid_t pid) {
    std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) return -1;
    int n = 0;
    while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

std::string fd_list(pid_t pid) {
    std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    std::string out;
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) return out;
    while (dirent* e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        char target[256] = {};
        ssize_t n = readlink((dir + "/" + e->d_name).c_str(), target, sizeof target - 1);
        out += std::string(e->d_name) + " -> " + (n > 0 ? target : "?") + "\n";
    }
    closedir(d);
    return out;
}

size_t count_of(const std::string& text, const std::string& needle) {
    size_t n = 0;
    for (size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
    return n;
}

enum class Kind { valid, invalid, forged, tarpit, hostile };
constexpr const char* kKindNames[] = {"valid", "invalid", "forged", "tarpit", "hostile"};

// What the load saw; shared by the worker threads.
struct Tally {
    std::mutex mu;
    std::map<std::string, int> answers;  // "kind action-verb" -> count
    int requests = 0;
    std::vector<std::string> violations;
    std::chrono::milliseconds slowest{0};

    void violation(std::string what) {
        std::lock_guard lock(mu);
        if (violations.size() < 50) violations.push_back(std::move(what));
    }
};

class Load {
  public:
    Load(uint16_t port, Tally& tally) : port_(port), tally_(tally) {}

    std::pair<Kind, std::string> pick(std::mt19937& rng) {
        int r = static_cast<int>(rng() % 100);
        int n = static_cast<int>(rng() % 1000);
        if (r < 40) return {Kind::valid, "user" + std::to_string(n % 50) + "@valid.chaos"};
        if (r < 55) return {Kind::invalid, "nobody" + std::to_string(n) + "@valid.chaos"};
        if (r < 60) return {Kind::invalid, "someone" + std::to_string(n) + "@nx.chaos"};
        if (r < 80) return {Kind::forged, "f" + std::to_string(rng()) + "@forged.chaos"};
        if (r < 90) return {Kind::tarpit, "user" + std::to_string(n) + "@tarpit.chaos"};
        return {Kind::hostile,
                "user" + std::to_string(n) + (n % 2 ? "@huge.chaos" : "@garbage.chaos")};
    }

    std::string request(const std::string& sender, std::mt19937& rng) {
        // A distinct instance per request: each one is its own message.
        return policy_request(sender, "198.51.100." + std::to_string(rng() % 250 + 1),
                              std::to_string(rng()), "");
    }

    // Checks one answer; false when the connection is no longer usable.
    bool record(Kind kind, const std::string& sender, const std::optional<std::string>& action,
                Clock::time_point sent) {
        auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - sent);
        std::lock_guard lock(tally_.mu);
        ++tally_.requests;
        tally_.slowest = std::max(tally_.slowest, took);
        if (!action) {
            if (tally_.violations.size() < 50)
                tally_.violations.push_back("no answer for " + sender + " after " +
                                            std::to_string(took.count()) + " ms");
            return false;
        }
        if (took > kAnswerBound && tally_.violations.size() < 50) {
            tally_.violations.push_back("answer for " + sender + " took " +
                                        std::to_string(took.count()) + " ms");
        }
        std::string verb = action->substr(0, action->find(' '));
        ++tally_.answers[std::string(kKindNames[static_cast<int>(kind)]) + " " + verb];
        bool rejects = verb == "REJECT" || verb.starts_with("5");
        if (kind == Kind::valid && rejects && tally_.violations.size() < 50)
            tally_.violations.push_back("valid sender " + sender + " got " + *action);
        return true;
    }

    // One request at a time on a persistent connection (Postfix).
    void persistent(int seed, const std::atomic<bool>& stop) {
        std::mt19937 rng(static_cast<unsigned>(seed));
        auto c = PolicyClient::inet("127.0.0.1", port_);
        while (!stop) {
            auto [kind, sender] = pick(rng);
            auto sent = Clock::now();
            if (!c.send(request(sender, rng))) {
                tally_.violation("persistent connection refused a send");
                return;
            }
            if (!record(kind, sender, c.read_action(kAnswerBound + 2s), sent)) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 30));
        }
        std::string extra = c.unread(300ms);
        if (!extra.empty()) tally_.violation("unrequested bytes on a persistent connection");
    }

    // Batches of requests written at once, answered in order (pipelining).
    void pipelined(int seed, const std::atomic<bool>& stop) {
        std::mt19937 rng(static_cast<unsigned>(seed));
        auto c = PolicyClient::inet("127.0.0.1", port_);
        while (!stop) {
            std::vector<std::pair<Kind, std::string>> batch;
            std::string bytes;
            for (int i = 0; i < 4; ++i) {
                batch.push_back(pick(rng));
                bytes += request(batch.back().second, rng);
            }
            auto sent = Clock::now();
            if (!c.send(bytes)) {
                tally_.violation("pipelined connection refused a send");
                return;
            }
            for (const auto& [kind, sender] : batch) {
                if (!record(kind, sender, c.read_action(kAnswerBound + 2s), sent)) return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 50));
        }
        std::string extra = c.unread(300ms);
        if (!extra.empty()) tally_.violation("unrequested bytes on a pipelined connection");
    }

    // Exim ${readsocket}: connect, write one request, half-close, read until the server closes.
    void half_closing(int seed, const std::atomic<bool>& stop) {
        std::mt19937 rng(static_cast<unsigned>(seed));
        while (!stop) {
            auto [kind, sender] = pick(rng);
            auto c = PolicyClient::inet("127.0.0.1", port_);
            auto sent = Clock::now();
            if (!c.connected() || !c.send(request(sender, rng))) {
                tally_.violation("half-closing client could not connect or send");
                std::this_thread::sleep_for(100ms);
                continue;
            }
            c.shutdown_write();
            auto action = c.read_action(kAnswerBound + 2s);
            record(kind, sender, action, sent);
            if (action) {
                auto rest = c.rest_until_closed(2s);
                if (!rest) tally_.violation("half-closed connection not closed after its answer");
                if (rest && !rest->empty()) tally_.violation("more than one answer: " + *rest);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 50));
        }
    }

  private:
    uint16_t port_;
    Tally& tally_;
};

std::chrono::seconds load_duration() {
    // CALLOUTD_CHAOS_SECONDS shortens a local run; the figure is 60 s.
    const char* env = std::getenv("CALLOUTD_CHAOS_SECONDS");
    return std::chrono::seconds(env != nullptr ? std::max(10, std::atoi(env)) : 60);
}

TEST(Chaos, SteadyLoadThroughDnsMxRedisFailuresAndReloads) {
    Dnsmasq dns(chaos_zones());
    RedisServer redis;
    std::vector<std::unique_ptr<TargetProcess>> targets;
    for (int attempt = 0; attempt < 5 && targets.size() < std::size(kTargets); ++attempt) {
        targets.clear();
        uint16_t port = unused_port(kTargets[0].ip);
        for (const auto& spec : kTargets) {
            targets.push_back(std::make_unique<TargetProcess>(spec, port));
            if (!targets.back()->ok()) break;
        }
        if (!targets.back()->ok()) targets.clear();
    }
    ASSERT_EQ(targets.size(), std::size(kTargets)) << "no port free on every target address";

    CalloutConfig c;
    c.dns_server = dns.server();
    c.smtp_port = targets[0]->port();
    c.reply_timeout = "3s";
    c.connect_timeout = "1s";
    c.command_timeout = "1s";
    c.probe_timeout = "5s";
    c.log_level = "info";
    c.sections =
        "[limits]\ndomain_rate = \"600/1m\"\nclient_rate = \"unlimited\"\n"
        "global_rate = \"unlimited\"\nglobal_concurrency = 1000\nmx_rate = \"unlimited\"\n"
        "mx_concurrency = 20\n[cache]\ntempfail_ttl = \"10s\"\n"
        "[redis]\nurl = \"" +
        redis.url() + "\"\ntimeout = \"250ms\"\n";
    const std::string good = callout_config(c);
    const std::string broken = good + "[server]\nbogus = 1\n";
    DaemonProcess daemon("chaos", good);
    ASSERT_TRUE(daemon.started()) << daemon.log();
    const pid_t pid = daemon.pid();
    const uint16_t port = daemon.tcp_port();

    // Warm-up: every kind of sender once, so DNS, Redis and the probe paths have opened what
    // they keep open; then the baseline of file descriptors.
    {
        Tally warm;
        Load load(port, warm);
        auto client = PolicyClient::inet("127.0.0.1", port);
        std::mt19937 rng(1);
        for (const char* s :
             {"user1@valid.chaos", "nobody@valid.chaos", "x@nx.chaos", "f1@forged.chaos"}) {
            ASSERT_TRUE(client.send(load.request(s, rng)));
            ASSERT_TRUE(client.read_action(kAnswerBound)) << s << "\n" << daemon.log();
        }
    }
    std::this_thread::sleep_for(1s);
    const int baseline_fds = open_fds(pid);
    const std::string baseline_list = fd_list(pid);
    ASSERT_GT(baseline_fds, 0);

    Tally tally;
    Load load(port, tally);
    std::atomic<bool> stop{false};
    std::vector<std::thread> workers;
    for (int i = 0; i < 12; ++i) workers.emplace_back([&, i] { load.persistent(100 + i, stop); });
    for (int i = 0; i < 4; ++i) workers.emplace_back([&, i] { load.pipelined(200 + i, stop); });
    for (int i = 0; i < 4; ++i) workers.emplace_back([&, i] { load.half_closing(300 + i, stop); });
    // Whatever ends this scope (a failed step throws) stops and joins the load first.
    struct JoinLoad {
        std::atomic<bool>& stop;
        std::vector<std::thread>& workers;
        ~JoinLoad() {
            stop = true;
            for (auto& w : workers)
                if (w.joinable()) w.join();
        }
    } join_load{stop, workers};

    // The schedule, in tenths of the load duration (60 s: one step = 6 s), plus a SIGHUP every
    // 2 s with the broken and the valid configuration in turn.
    const auto duration = load_duration();
    const auto start = Clock::now();
    auto at = [&](double fraction) {
        return start + std::chrono::duration_cast<Clock::duration>(duration * fraction);
    };
    struct Step {
        double when;
        std::string what;
        std::function<void()> run;
    };
    std::vector<Step> steps = {
        {0.08, "dns killed", [&] { dns.kill(); }},
        {0.15, "dns restarted", [&] { dns.restart(); }},
        {0.20, "valid MX killed", [&] { targets[0]->kill(); }},
        {0.27, "valid MX restarted", [&] { targets[0]->restart(); }},
        {0.33, "redis killed", [&] { redis.kill(); }},
        {0.42, "redis restarted", [&] { redis.restart(); }},
        {0.50, "redis stopped (SIGSTOP)", [&] { redis.pause(); }},
        {0.57, "redis continued", [&] { redis.resume(); }},
        {0.62, "dns killed", [&] { dns.kill(); }},
        {0.68, "dns restarted", [&] { dns.restart(); }},
        {0.72, "every MX killed",
         [&] {
             for (auto& t : targets) t->kill();
         }},
        {0.80, "every MX restarted",
         [&] {
             for (auto& t : targets) t->restart();
         }},
        {0.85, "redis killed", [&] { redis.kill(); }},
        {0.90, "redis restarted", [&] { redis.restart(); }},
    };
    size_t next_step = 0;
    int hups = 0;
    long max_rss_kb = 0;
    auto next_hup = start + 2s;
    auto next_sample = start;
    std::string timeline;
    while (Clock::now() < start + duration) {
        auto now = Clock::now();
        if (next_step < steps.size() && now >= at(steps[next_step].when)) {
            try {
                steps[next_step].run();
            } catch (const std::exception& e) {
                ADD_FAILURE() << "chaos step '" << steps[next_step].what << "': " << e.what();
            }
            timeline +=
                std::to_string(
                    std::chrono::duration_cast<std::chrono::milliseconds>(now - start).count()) +
                " ms: " + steps[next_step].what + "\n";
            ++next_step;
        }
        if (now >= next_hup) {
            daemon.write_config(hups % 2 == 0 ? broken : good);
            daemon.signal(SIGHUP);
            ++hups;
            next_hup += 2s;
        }
        if (now >= next_sample) {
            max_rss_kb = std::max(max_rss_kb, rss_kb(pid));
            next_sample += 500ms;
        }
        std::this_thread::sleep_for(20ms);
    }
    stop = true;
    for (auto& w : workers) w.join();  // (JoinLoad finds them joined)
    // Whatever the schedule left broken is back for the settle phase.
    daemon.write_config(good);
    redis.resume();

    std::cout << "chaos: " << tally.requests << " requests, slowest answer "
              << tally.slowest.count() << " ms, max RSS " << max_rss_kb / 1024 << " MB, " << hups
              << " SIGHUPs\n"
              << timeline;
    for (const auto& [what, n] : tally.answers) std::cout << "  " << what << ": " << n << "\n";

    EXPECT_TRUE(tally.violations.empty()) << [&] {
        std::string all;
        for (const auto& v : tally.violations) all += v + "\n";
        return all + timeline;
    }();
    EXPECT_GT(tally.requests, 1000) << "the load was not steady";
    EXPECT_GT(tally.answers["valid DUNNO"], 0);
    EXPECT_TRUE(daemon.running()) << daemon.log().substr(0, 4000);
    EXPECT_EQ(next_step, steps.size());
#ifndef CALLOUTD_SANITIZED
    EXPECT_LT(max_rss_kb, 200 * 1024) << "RSS bound (DESIGN.md: 10k probes in 200 MB)";
#endif

    // File descriptors back to the baseline once probes and reconnects have settled.
    auto deadline = Clock::now() + 30s;
    int fds = open_fds(pid);
    while (fds > baseline_fds && Clock::now() < deadline) {
        std::this_thread::sleep_for(200ms);
        fds = open_fds(pid);
    }
    EXPECT_LE(fds, baseline_fds) << "baseline:\n" << baseline_list << "now:\n" << fd_list(pid);

    // Still serving, and SIGHUPs were taken (the valid ones) or refused (the broken ones).
    auto after = PolicyClient::inet("127.0.0.1", port);
    std::mt19937 rng(7);
    ASSERT_TRUE(after.send(load.request("user3@valid.chaos", rng)));
    auto action = after.read_action(kAnswerBound);
    EXPECT_TRUE(action && !action->starts_with("REJECT")) << action.value_or("<none>");
    std::string log = daemon.log();
    EXPECT_GE(count_of(log, " reload-failed "), static_cast<size_t>(hups / 2)) << "broken configs";
    EXPECT_GE(count_of(log, " reloaded"), static_cast<size_t>(hups / 2 - 1)) << "valid configs";
    daemon.signal(SIGTERM);
    EXPECT_EQ(daemon.wait_exit(20s), 0) << log.substr(log.size() > 4000 ? log.size() - 4000 : 0);
}

}  // namespace
}  // namespace calloutd::test
