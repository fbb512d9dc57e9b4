// How fast calloutd starts probes (DNS + connect) to many distinct domains against silent
// targets, and whether cached answers stay fast meanwhile.
//
// Usage: probe_scale CALLOUTD [--probes N] [--connections C] [--window W] [--cached K]
//          [--reply-timeout D] [--log-level L] [--mx implicit|explicit] [--hold S]
// Starts dnsmasq with N domains dI.scale.test, each at its own loopback address (127.1.x.y): by
// default the domain's own A record (no MX: RFC 5321's implicit MX; the probe still asks MX, A
// and AAAA), with --mx explicit an MX record naming mx.dI.scale.test (dnsmasq keeps MX records
// in a list it searches linearly, so at 10,000 of them dnsmasq itself becomes the bottleneck),
// and one "silent" SMTP target: a listener on every loopback
// address that accepts connections and never says a word, except on 127.0.0.73 (cached.test's
// MX), where it plays a minimal SMTP server on which alice@cached.test exists. Starts CALLOUTD
// with budgets that let every probe run at once (global_concurrency 100000, rates unlimited),
// primes the verdict of alice@cached.test, then, while K closed-loop connections keep asking for
// that cached verdict, sends one request for each of the N domains over C pipelined connections
// (W in flight each; each is answered in_progress after the reply budget, the probe runs on).
// Reports how fast the silent target saw the N connections arrive (probes started: DNS answered
// and TCP connected), the cached answers' latency while that happened and then for S seconds
// with all N probes in flight, the daemon's VmHWM and CPU time, and the DNS queries. Every process
// it starts is stopped. Loopback only.
// Over 500 lines as one concept: one benchmark (zones, silent targets, probe and cached clients).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "support/callout_world.hpp"
#include "support/daemon_process.hpp"
#include "support/dnsmasq.hpp"
#include "support/policy_burst.hpp"
#include "support/policy_client.hpp"

namespace {

using namespace calloutd::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kCachedIp = "127.0.0.73";
constexpr const char* kCachedSender = "alice@cached.test";

struct Options {
    std::string daemon;
    size_t probes = 10'000;
    size_t connections = 8;
    size_t window = 64;
    size_t cached = 1;
    std::string reply_timeout = "100ms";
    std::string log_level = "info";
    bool explicit_mx = false;
    long hold_s = 3;  // seconds of cached asking once every probe is in flight
};

bool parse(int argc, char** argv, Options& o) {
    if (argc < 2 || argv[1][0] == '-' || (argc - 2) % 2 != 0) return false;
    o.daemon = argv[1];
    for (int i = 2; i + 1 < argc; i += 2) {
        std::string_view a = argv[i];
        std::string v = argv[i + 1];
        auto num = [&] { return static_cast<size_t>(std::strtoul(v.c_str(), nullptr, 10)); };
        if (a == "--probes") {
            o.probes = num();
        } else if (a == "--connections") {
            o.connections = std::max<size_t>(1, num());
        } else if (a == "--window") {
            o.window = std::max<size_t>(1, num());
        } else if (a == "--cached") {
            o.cached = num();
        } else if (a == "--reply-timeout") {
            o.reply_timeout = v;
        } else if (a == "--log-level") {
            o.log_level = v;
        } else if (a == "--hold") {
            o.hold_s = static_cast<long>(num());
        } else if (a == "--mx") {
            if (v != "implicit" && v != "explicit") return false;
            o.explicit_mx = v == "explicit";
        } else {
            std::fprintf(stderr, "probe_scale: unknown option %s\n", argv[i]);
            return false;
        }
    }
    return o.probes > 0 && o.probes <= 62'500;
}

std::string scale_domain(size_t i) {
    return "d" + std::to_string(i) + ".scale.test";
}

// 127.1.0.1 .. 127.1.249.250: one target address per domain.
std::string target_ip(size_t i) {
    return "127.1." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1);
}

// One listener on every loopback address: silent, except towards kCachedIp, where a scripted
// SMTP dialogue makes alice@cached.test exist and anything else (the random local part) not.
class SilentTarget {
  public:
    SilentTarget() {
        listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_ANY);
        if (::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
            ::listen(listener_, 4096) != 0)
            return;
        socklen_t len = sizeof a;
        getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
        inet_pton(AF_INET, kCachedIp, &cached_addr_);
        ep_ = ::epoll_create1(EPOLL_CLOEXEC);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = listener_;
        epoll_ctl(ep_, EPOLL_CTL_ADD, listener_, &ev);
        thread_ = std::thread([this] { run(); });
    }
    ~SilentTarget() {
        stop_ = true;
        if (thread_.joinable()) thread_.join();
        for (auto& [fd, c] : conns_) ::close(fd);
        if (ep_ >= 0) ::close(ep_);
        if (listener_ >= 0) ::close(listener_);
    }
    uint16_t port() const { return port_; }
    size_t silent_accepted() const { return silent_.load(); }
    Clock::time_point first_at() const {
        std::lock_guard<std::mutex> g(mu_);
        return first_;
    }
    Clock::time_point last_at() const {
        std::lock_guard<std::mutex> g(mu_);
        return last_;
    }

  private:
    struct Conn {
        bool talking = false;
        std::string in;
    };

    void run() {
        std::vector<epoll_event> events(1024);
        while (!stop_) {
            int n = ::epoll_wait(ep_, events.data(), static_cast<int>(events.size()), 20);
            for (int i = 0; i < n; ++i) {
                int fd = events[static_cast<size_t>(i)].data.fd;
                if (fd == listener_) {
                    accept_all();
                } else {
                    on_readable(fd);
                }
            }
        }
    }

    void accept_all() {
        for (;;) {
            sockaddr_in local{};
            int fd = ::accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) return;
            socklen_t len = sizeof local;
            getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
            Conn& c = conns_[fd];
            c.talking = local.sin_addr.s_addr == cached_addr_.s_addr;
            epoll_event ev{};
            ev.events = EPOLLIN;
            ev.data.fd = fd;
            epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
            if (c.talking) {
                say(fd, "220 mx.cached.test ESMTP\r\n");
                continue;
            }
            auto now = Clock::now();
            std::lock_guard<std::mutex> g(mu_);
            if (silent_.load() == 0) first_ = now;
            last_ = now;
            silent_.fetch_add(1);
        }
    }

    static void say(int fd, std::string_view text) {
        (void)::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
    }

    void on_readable(int fd) {
        char buf[4096];
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        auto it = conns_.find(fd);
        if (n <= 0 || it == conns_.end()) {
            ::close(fd);  // also leaves the epoll set
            conns_.erase(fd);
            return;
        }
        Conn& c = it->second;
        if (!c.talking) return;  // silent: read and ignore
        c.in.append(buf, static_cast<size_t>(n));
        for (auto eol = c.in.find("\r\n"); eol != std::string::npos; eol = c.in.find("\r\n")) {
            std::string line = c.in.substr(0, eol);
            c.in.erase(0, eol + 2);
            for (auto& ch : line)
                ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
            if (line.starts_with("EHLO") || line.starts_with("HELO")) {
                say(fd, "250 mx.cached.test\r\n");
            } else if (line.starts_with("MAIL") || line.starts_with("RSET")) {
                say(fd, "250 2.0.0 ok\r\n");
            } else if (line.starts_with("RCPT")) {
                say(fd, line.find("<ALICE@CACHED.TEST>") != std::string::npos
                            ? "250 2.1.5 ok\r\n"
                            : "550 5.1.1 no such user\r\n");
            } else if (line.starts_with("QUIT")) {
                say(fd, "221 2.0.0 bye\r\n");
            } else {
                say(fd, "502 5.5.2 not here\r\n");
            }
        }
    }

    int listener_ = -1;
    int ep_ = -1;
    uint16_t port_ = 0;
    in_addr cached_addr_{};
    std::atomic<bool> stop_{false};
    std::atomic<size_t> silent_{0};
    mutable std::mutex mu_;
    Clock::time_point first_{};
    Clock::time_point last_{};
    std::unordered_map<int, Conn> conns_;
    std::thread thread_;
};

long vm_hwm_kb(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);) {
        if (line.starts_with("VmHWM:")) return std::stol(line.substr(6));
    }
    return -1;
}

// CPU time (user + system) a process has used so far, in milliseconds.
long cpu_ms(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto close = stat.rfind(')');
    if (close == std::string::npos) return -1;
    std::istringstream fields(stat.substr(close + 2));
    std::string f;
    long utime = 0, stime = 0;
    for (int i = 3; fields >> f; ++i) {
        if (i == 14) utime = std::stol(f);
        if (i == 15) {
            stime = std::stol(f);
            break;
        }
    }
    return (utime + stime) * 1000 / sysconf(_SC_CLK_TCK);
}

size_t occurrences(const std::string& text, const std::string& needle) {
    size_t n = 0;
    for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1))
        ++n;
    return n;
}

double load_average() {
    double one = 0;
    std::ifstream in("/proc/loadavg");
    in >> one;
    return one;
}

double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

int measure(const Options& o) {
    rlimit nofile{};
    getrlimit(RLIMIT_NOFILE, &nofile);
    nofile.rlim_cur = nofile.rlim_max;  // inherited by calloutd: one socket per probe
    setrlimit(RLIMIT_NOFILE, &nofile);
    if (nofile.rlim_cur < o.probes + 1000) {
        std::fprintf(stderr, "probe_scale: RLIMIT_NOFILE %llu is too low for %zu probes\n",
                     static_cast<unsigned long long>(nofile.rlim_cur), o.probes);
        return 2;
    }

    DnsmasqZones zones;
    zones.local_domains = {"test"};
    for (size_t i = 0; i < o.probes; ++i) {
        if (o.explicit_mx) {
            zones.mx.push_back({scale_domain(i), "mx." + scale_domain(i), 10});
            zones.hosts.push_back({"mx." + scale_domain(i), {target_ip(i)}});
        } else {
            zones.hosts.push_back({scale_domain(i), {target_ip(i)}});
        }
    }
    zones.mx.push_back({"cached.test", "mx.cached.test", 10});
    zones.hosts.push_back({"mx.cached.test", {kCachedIp}});
    Dnsmasq dns(zones);
    SilentTarget target;
    if (target.port() == 0) {
        std::fprintf(stderr, "probe_scale: cannot listen for the silent target\n");
        return 1;
    }

    CalloutConfig c;
    c.dns_server = dns.server();
    c.smtp_port = target.port();
    c.reply_timeout = o.reply_timeout;
    c.log_level = o.log_level;
    c.connect_timeout = "60s";
    c.command_timeout = "10m";
    c.probe_timeout = "10m";
    c.control_socket = "";
    c.sections =
        "[limits]\ndomain_rate = \"unlimited\"\nclient_rate = \"unlimited\"\n"
        "global_rate = \"unlimited\"\nglobal_concurrency = 100000\n"
        "mx_rate = \"unlimited\"\nmx_concurrency = 1000\nprovider_rate = \"unlimited\"\n"
        "[actions]\nvalid = \"OK cached\"\n";
    DaemonProcess daemon("probe-scale", callout_config(c), o.daemon);
    if (!daemon.started() || daemon.tcp_port() == 0) {
        std::fprintf(stderr, "probe_scale: calloutd did not start:\n%s\n", daemon.log().c_str());
        return 1;
    }
    uint16_t port = daemon.tcp_port();
    std::printf("-- calloutd pid %d on 127.0.0.1:%u, dnsmasq on %s (%zu domains), target port %u\n",
                static_cast<int>(daemon.pid()), port, dns.server().c_str(), o.probes,
                target.port());

    // The cached verdict the K clients will ask for.
    bool primed = false;
    for (int attempt = 0; attempt < 50 && !primed; ++attempt) {
        PolicyClient pc = PolicyClient::inet("127.0.0.1", port);
        std::string id = "P" + std::to_string(attempt);
        pc.send(policy_request(kCachedSender, "198.51.100.20", id, id));
        auto a = pc.read_action(10s);
        primed = a && a->starts_with("OK");
        if (!primed) std::this_thread::sleep_for(100ms);
    }
    if (!primed) {
        std::fprintf(stderr, "probe_scale: %s never got a verdict\n%s\n", kCachedSender,
                     daemon.log().c_str());
        return 1;
    }

    // K closed-loop clients ask for the cached verdict while the probes start and then while
    // all of them are in flight; each answer is timed and stamped with when it was asked.
    std::atomic<bool> asking{true};
    std::mutex lat_mu;
    std::vector<std::pair<Clock::time_point, long>> cached_us;
    size_t cached_other = 0;
    std::vector<std::thread> askers;
    for (size_t k = 0; k < o.cached; ++k) {
        askers.emplace_back([&, k] {
            PolicyClient pc = PolicyClient::inet("127.0.0.1", port);
            std::vector<std::pair<Clock::time_point, long>> mine;
            size_t other = 0;
            for (size_t i = 0; asking.load(); ++i) {
                std::string id = "C" + std::to_string(k) + "-" + std::to_string(i);
                auto t0 = Clock::now();
                if (!pc.send(policy_request(kCachedSender, "198.51.100.20", id, id))) break;
                auto a = pc.read_action(30s);
                mine.emplace_back(
                    t0, static_cast<long>(
                            std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0)
                                .count()));
                if (!a || !a->starts_with("OK")) ++other;
            }
            std::lock_guard<std::mutex> g(lat_mu);
            cached_us.insert(cached_us.end(), mine.begin(), mine.end());
            cached_other += other;
        });
    }

    std::vector<std::string> requests;
    requests.reserve(o.probes);
    for (size_t i = 0; i < o.probes; ++i) {
        std::string id = "S" + std::to_string(i);
        requests.push_back(policy_request("someone" + std::to_string(i) + "@" + scale_domain(i),
                                          "198.51.100.7", id, id));
    }
    BurstOptions b;
    b.port = port;
    b.connections = o.connections;
    b.window = o.window;
    b.timeout = std::chrono::seconds(300);
    long daemon_cpu_before = cpu_ms(daemon.pid());
    long dns_cpu_before = cpu_ms(dns.pid());
    auto start = Clock::now();
    BurstResult r = run_burst(requests, b);
    auto answered_at = Clock::now();
    // Wait for the probes to connect (or stop arriving).
    size_t seen = 0;
    auto quiet_since = Clock::now();
    while (target.silent_accepted() < o.probes && Clock::now() - quiet_since < 10s) {
        std::this_thread::sleep_for(10ms);
        if (target.silent_accepted() != seen) {
            seen = target.silent_accepted();
            quiet_since = Clock::now();
        }
    }
    auto connected_at = target.last_at();
    // Every probe in flight (waiting for a banner that never comes): keep asking a while.
    std::this_thread::sleep_for(std::chrono::seconds(o.hold_s));
    asking = false;
    for (auto& t : askers) t.join();
    long hwm_kb = vm_hwm_kb(daemon.pid());
    long daemon_cpu = cpu_ms(daemon.pid()) - daemon_cpu_before;
    long dns_cpu = cpu_ms(dns.pid()) - dns_cpu_before;
    std::string dns_log = dns.log();
    daemon.signal(SIGTERM);
    daemon.wait_exit(30s);

    // Latency percentiles of the cached answers asked during the ramp and once all were in flight.
    struct Latency {
        size_t n = 0;
        long p50 = 0, p99 = 0, max = 0;
    };
    auto latency = [&](bool ramp) {
        std::vector<long> v;
        for (const auto& [at, us] : cached_us)
            if ((at <= connected_at) == ramp) v.push_back(us);
        std::sort(v.begin(), v.end());
        Latency l;
        l.n = v.size();
        if (v.empty()) return l;
        auto pct = [&](double q) {
            return v[std::min(v.size() - 1,
                              static_cast<size_t>(q * static_cast<double>(v.size())))];
        };
        l.p50 = pct(0.5);
        l.p99 = pct(0.99);
        l.max = v.back();
        return l;
    };
    Latency ramp = latency(true);
    Latency held = latency(false);
    size_t connected = target.silent_accepted();
    double ramp_ms = ms_between(start, connected_at);
    double rate = ramp_ms > 0 ? static_cast<double>(connected) / (ramp_ms / 1000.0) : 0;
    std::printf(
        "probes=%zu answered=%zu connected=%zu answers_ms=%.0f first_connect_ms=%.0f "
        "all_connected_ms=%.0f start_rate=%.0f ramp_cached=%zu ramp_p50_us=%ld ramp_p99_us=%ld "
        "ramp_max_us=%ld inflight_cached=%zu inflight_p50_us=%ld inflight_p99_us=%ld "
        "inflight_max_us=%ld cached_not_ok=%zu vmhwm_kb=%ld mx_queries=%zu a_queries=%zu "
        "aaaa_queries=%zu calloutd_cpu_ms=%ld dnsmasq_cpu_ms=%ld connections=%zu window=%zu "
        "load=%.2f\n",
        o.probes, r.answered, connected, ms_between(start, answered_at),
        ms_between(start, target.first_at()), ramp_ms, rate, ramp.n, ramp.p50, ramp.p99, ramp.max,
        held.n, held.p50, held.p99, held.max, cached_other, hwm_kb,
        occurrences(dns_log, "query[MX] "), occurrences(dns_log, "query[A] "),
        occurrences(dns_log, "query[AAAA] "), daemon_cpu, dns_cpu, o.connections, o.window,
        load_average());
    std::printf(
        "# %zu probes to %zu distinct domains: %zu connected to the silent targets within %.0f ms "
        "of the first request (first after %.0f ms; %.0f probes started/s). Cached answers while "
        "they started: %zu, p50 %.2f ms, p99 %.2f ms, max %.2f ms; with all %zu in flight: %zu, "
        "p50 %.2f ms, p99 %.2f ms, max %.2f ms. VmHWM %.1f MB; load average %.2f\n",
        o.probes, o.probes, connected, ramp_ms, ms_between(start, target.first_at()), rate, ramp.n,
        static_cast<double>(ramp.p50) / 1000.0, static_cast<double>(ramp.p99) / 1000.0,
        static_cast<double>(ramp.max) / 1000.0, connected, held.n,
        static_cast<double>(held.p50) / 1000.0, static_cast<double>(held.p99) / 1000.0,
        static_cast<double>(held.max) / 1000.0, static_cast<double>(hwm_kb) / 1024.0,
        load_average());
    return r.answered == o.probes && connected == o.probes ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    if (!parse(argc, argv, o)) {
        std::fprintf(stderr,
                     "usage: probe_scale CALLOUTD [--probes N (<= 62500)] [--connections C] "
                     "[--window W] [--cached K] [--reply-timeout D] [--log-level L] "
                     "[--dns-queries Q]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    return measure(o);
}
