// Replays a list-washing attack against the real daemon and reports what the targets saw.
//
// Usage: attack_replay CALLOUTD [--requests N] [--connections C] [--window W] [--domains M]
//          [--spread MS] [--domain-rate R] [--client-rate R] [--global-rate R] [--mx-rate R]
//          [--mx-concurrency K] [--provider-rate R] [--mx-ips P] [--clients K]
//          [--reply-delay MS] [--reply-timeout D] [--log-level L]
// Starts dnsmasq (zones a0..a{M-1}.attack.test, all with MX mx.target.test -> 127.0.0.71, or,
// with --mx-ips P > 1, domain I with MX mx{I%P}.target.test, P hosts of one provider on
// 127.0.0.71 and 127.0.0.81..; and legit.test -> 127.0.0.72), a counting fake SMTP target on each
// address (one port: callout.port is one port for every MX; nobody exists at the attack
// targets, alice exists at legit.test), and CALLOUTD with those limits. Then fires N distinct
// forged senders (forgedI@a{I%M}...) from K client IPs over C pipelined connections (W in flight
// each, spread over MS if given), while one bystander (alice@legit.test, another client) asks every
// 200 ms. Prints one machine line
// (`requests=... rps=... p50_us=... p99_us=... target_connections=...`), a human summary, and
// the daemon's shutdown `stats` line. Every process it starts is stopped. Loopback only.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "support/callout_world.hpp"
#include "support/daemon_process.hpp"
#include "support/dnsmasq.hpp"
#include "support/fake_smtp.hpp"
#include "support/policy_burst.hpp"
#include "support/policy_client.hpp"

namespace {

using namespace calloutd::test;
using namespace std::chrono_literals;

struct Options {
    std::string daemon;
    size_t requests = 10'000;
    size_t connections = 8;
    size_t window = 32;
    size_t domains = 1;
    size_t clients = 1;
    long spread_ms = 0;
    long reply_delay_ms = 0;
    std::string domain_rate = "10/1m";
    std::string client_rate = "unlimited";
    std::string global_rate = "unlimited";
    std::string mx_rate = "unlimited";
    long mx_concurrency = 100;
    std::string provider_rate = "unlimited";
    size_t mx_ips = 1;
    std::string reply_timeout = "10s";
    std::string log_level = "info";
};

constexpr const char* kTargetIp = "127.0.0.71";
constexpr const char* kBystanderIp = "127.0.0.72";
constexpr const char* kRateLimited = "WARN rate limited";

bool parse(int argc, char** argv, Options& o) {
    if (argc < 2 || argv[1][0] == '-') return false;
    o.daemon = argv[1];
    for (int i = 2; i + 1 < argc; i += 2) {
        std::string_view a = argv[i];
        std::string v = argv[i + 1];
        auto num = [&] { return std::strtol(v.c_str(), nullptr, 10); };
        if (a == "--requests") {
            o.requests = static_cast<size_t>(num());
        } else if (a == "--connections") {
            o.connections = static_cast<size_t>(num());
        } else if (a == "--window") {
            o.window = static_cast<size_t>(num());
        } else if (a == "--domains") {
            o.domains = static_cast<size_t>(num());
        } else if (a == "--clients") {
            o.clients = static_cast<size_t>(num());
        } else if (a == "--spread") {
            o.spread_ms = num();
        } else if (a == "--reply-delay") {
            o.reply_delay_ms = num();
        } else if (a == "--domain-rate") {
            o.domain_rate = v;
        } else if (a == "--client-rate") {
            o.client_rate = v;
        } else if (a == "--global-rate") {
            o.global_rate = v;
        } else if (a == "--mx-rate") {
            o.mx_rate = v;
        } else if (a == "--mx-concurrency") {
            o.mx_concurrency = num();
        } else if (a == "--provider-rate") {
            o.provider_rate = v;
        } else if (a == "--mx-ips") {
            o.mx_ips = static_cast<size_t>(num());
        } else if (a == "--reply-timeout") {
            o.reply_timeout = v;
        } else if (a == "--log-level") {
            o.log_level = v;
        } else {
            std::fprintf(stderr, "attack_replay: unknown option %s\n", argv[i]);
            return false;
        }
    }
    if ((argc - 2) % 2 != 0) return false;
    o.domains = std::max<size_t>(1, o.domains);
    o.clients = std::max<size_t>(1, o.clients);
    o.mx_ips = std::clamp<size_t>(o.mx_ips, 1, 20);
    return o.requests > 0;
}

std::string attack_domain(size_t k) {
    return "a" + std::to_string(k) + ".attack.test";
}

// 203.0.113.0/24 and onwards, one address per attacking client.
std::string client_ip(size_t k) {
    return "203." + std::to_string(k / 62500 % 256) + "." + std::to_string(k / 250 % 250) + "." +
           std::to_string(k % 250 + 1);
}

size_t occurrences(const std::string& text, const std::string& needle) {
    size_t n = 0;
    for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1))
        ++n;
    return n;
}

long vm_hwm_kb(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);) {
        if (line.starts_with("VmHWM:")) return std::stol(line.substr(6));
    }
    return -1;
}

// The attacked provider's MX host K (of --mx-ips): one name and one address each.
std::string target_host(size_t k, size_t mx_ips) {
    return mx_ips == 1 ? "mx.target.test" : "mx" + std::to_string(k) + ".target.test";
}
std::string target_ip(size_t k) {
    return k == 0 ? kTargetIp : "127.0.0." + std::to_string(80 + k);
}

int replay(const Options& o) {
    DnsmasqZones zones;
    zones.local_domains = {"test"};
    for (size_t k = 0; k < o.domains; ++k)
        zones.mx.push_back({attack_domain(k), target_host(k % o.mx_ips, o.mx_ips), 10});
    zones.mx.push_back({"legit.test", "mx.legit.test", 10});
    zones.hosts = {{"mx.legit.test", {kBystanderIp}}};
    for (size_t k = 0; k < o.mx_ips; ++k) {
        zones.hosts.push_back({target_host(k, o.mx_ips), {target_ip(k)}});
    }
    Dnsmasq dns(zones);

    FakeSmtpScript attacked;  // nobody exists there
    attacked.reply_delay = std::chrono::milliseconds(o.reply_delay_ms);
    FakeSmtpScript bystander;
    bystander.recipients["alice"] = "250 2.1.5 ok";
    std::vector<std::pair<std::string, FakeSmtpScript>> scripts = {{kBystanderIp, bystander}};
    for (size_t k = 0; k < o.mx_ips; ++k) scripts.push_back({target_ip(k), attacked});
    FakeSmtpFleet fleet(scripts);
    if (!fleet.ok()) {
        std::fprintf(stderr, "attack_replay: cannot bind the fake SMTP targets\n");
        return 1;
    }
    FakeSmtpServer* legit = &fleet.at(0);
    std::vector<FakeSmtpServer*> targets;
    for (size_t k = 0; k < o.mx_ips; ++k) targets.push_back(&fleet.at(k + 1));

    CalloutConfig c;
    c.dns_server = dns.server();
    c.smtp_port = legit->port();
    c.reply_timeout = o.reply_timeout;
    c.log_level = o.log_level;
    c.sections = "[limits]\ndomain_rate = \"" + o.domain_rate + "\"\nclient_rate = \"" +
                 o.client_rate + "\"\nglobal_rate = \"" + o.global_rate +
                 "\"\nglobal_concurrency = 10000\nmx_rate = \"" + o.mx_rate +
                 "\"\nmx_concurrency = " + std::to_string(o.mx_concurrency) +
                 "\nprovider_rate = \"" + o.provider_rate + "\"" +
                 "\n[actions]\nrate_limited = \"" + kRateLimited + "\"\nvalid = \"OK verified\"\n";
    DaemonProcess daemon("attack-replay", callout_config(c), o.daemon);
    if (!daemon.started() || daemon.tcp_port() == 0) {
        std::fprintf(stderr, "attack_replay: calloutd did not start:\n%s\n", daemon.log().c_str());
        return 1;
    }
    std::printf(
        "-- calloutd pid %d on 127.0.0.1:%u, dnsmasq on %s, %zu attacked MX IP(s) from %s, "
        "bystander %s, port %u\n",
        static_cast<int>(daemon.pid()), daemon.tcp_port(), dns.server().c_str(), o.mx_ips,
        kTargetIp, kBystanderIp, legit->port());

    std::vector<std::string> requests;
    requests.reserve(o.requests);
    for (size_t i = 0; i < o.requests; ++i) {
        std::string id = "R" + std::to_string(i);
        requests.push_back(
            policy_request("forged" + std::to_string(i) + "@" + attack_domain(i % o.domains),
                           client_ip(i % o.clients), id, id));
    }
    BurstOptions b;
    b.port = daemon.tcp_port();
    b.connections = o.connections;
    b.window = o.window;
    b.spread = std::chrono::milliseconds(o.spread_ms);
    b.timeout = std::chrono::seconds(120);

    // The bystander asks on its own connection every 200 ms while the attack runs.
    std::atomic<bool> attacking{true};
    size_t bystander_asked = 0;
    size_t bystander_ok = 0;
    long bystander_max_us = 0;
    std::thread by([&] {
        for (int i = 0; attacking.load(); ++i) {
            PolicyClient pc = PolicyClient::inet("127.0.0.1", daemon.tcp_port());
            auto t0 = std::chrono::steady_clock::now();
            std::string id = "L" + std::to_string(i);
            pc.send(policy_request("alice@legit.test", "198.51.100.20", id, id));
            auto action = pc.read_action(30s);
            long us = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::steady_clock::now() - t0)
                          .count();
            ++bystander_asked;
            if (action && action->starts_with("OK")) ++bystander_ok;
            bystander_max_us = std::max(bystander_max_us, us);
            std::this_thread::sleep_for(200ms);
        }
    });
    BurstResult r = run_burst(requests, b);
    attacking = false;
    by.join();

    long hwm_kb = vm_hwm_kb(daemon.pid());
    daemon.signal(SIGTERM);
    daemon.wait_exit(10s);
    std::string log = daemon.log();
    auto stats_pos = log.rfind(" stats ");
    std::string stats;
    if (stats_pos != std::string::npos) {
        stats = log.substr(stats_pos + 7, log.find('\n', stats_pos) - stats_pos - 7);
    }
    size_t target_connections = 0;
    size_t target_max_concurrent = 0;  // per IP: the most any one attacked IP had at once
    size_t target_ips_used = 0;
    for (FakeSmtpServer* t : targets) {
        t->stop();
        target_connections += t->connections_accepted();
        target_max_concurrent = std::max(target_max_concurrent, t->max_concurrent_connections());
        if (t->connections_accepted() > 0) ++target_ips_used;
    }
    legit->stop();
    size_t mx_queries = occurrences(dns.log(), "query[MX] ");

    double seconds = static_cast<double>(r.elapsed.count()) / 1e6;
    double rps = static_cast<double>(r.answered) / seconds;
    size_t limited = r.count(kRateLimited);
    std::printf(
        "requests=%zu answered=%zu seconds=%.3f rps=%.0f p50_us=%lld p99_us=%lld max_us=%lld "
        "rate_limited=%zu lost_connections=%zu target_connections=%zu target_max_concurrent=%zu "
        "target_ips=%zu/%zu bystander_connections=%zu bystander_ok=%zu/%zu bystander_max_us=%ld "
        "mx_queries=%zu vmhwm_kb=%ld domains=%zu clients=%zu connections=%zu window=%zu\n",
        o.requests, r.answered, seconds, rps, static_cast<long long>(r.percentile(50).count()),
        static_cast<long long>(r.percentile(99).count()),
        static_cast<long long>(r.max_latency().count()), limited, r.lost_connections,
        target_connections, target_max_concurrent, target_ips_used, o.mx_ips,
        legit->connections_accepted(), bystander_ok, bystander_asked, bystander_max_us, mx_queries,
        hwm_kb, o.domains, o.clients, o.connections, o.window);
    std::printf(
        "# %zu forged senders at %zu domain(s) from %zu client(s) over %zu connections: %.0f "
        "requests/s, p50 %.2f ms, p99 %.2f ms; the attacked MX IP(s) saw %zu connections (at "
        "most %zu at once per IP, %zu of %zu IPs used); the bystander MX %zu; %zu replies "
        "rate_limited\n",
        o.requests, o.domains, o.clients, o.connections, rps,
        static_cast<double>(r.percentile(50).count()) / 1000.0,
        static_cast<double>(r.percentile(99).count()) / 1000.0, target_connections,
        target_max_concurrent, target_ips_used, o.mx_ips, legit->connections_accepted(), limited);
    std::printf("# calloutd stats:%s\n", stats.c_str());
    return r.answered == o.requests ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    if (!parse(argc, argv, o)) {
        std::fprintf(stderr,
                     "usage: attack_replay CALLOUTD [--requests N] [--connections C] [--window W] "
                     "[--domains M] [--clients K] [--spread MS] [--domain-rate R] "
                     "[--client-rate R] [--global-rate R] [--mx-rate R] [--mx-concurrency K] "
                     "[--provider-rate R] [--mx-ips P] [--reply-delay MS] [--reply-timeout D] "
                     "[--log-level L]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);  // the fake targets write to probes that may have hung up
    return replay(o);
}
