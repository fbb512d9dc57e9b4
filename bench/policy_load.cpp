// Closed-loop load generator for policy servers: latency and throughput of persistent connections.
//
// Each of N connections sends a Postfix-like RCPT request, waits for the reply, sends the next
// (or keeps --pipeline requests in flight). Senders are taken round-robin from a list. Prints one
// machine-readable line (requests= seconds= rps= p50_us= p99_us= p999_us= max_us= errors= ...)
// and one human line starting with "# ". With --prime S it instead asks for every sender once,
// re-asking while the answer is the in_progress action, until all have a verdict or S seconds
// pass (used to fill the verdict cache before a measurement). With --requests N it sends exactly N
// requests and stops when all are answered (per-request profiles: instructions, syscalls).
// Over 500 lines as one concept: one load generator (options, connections, latency histogram).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fd.hpp"

namespace {

using bench::Fd;

using Clock = std::chrono::steady_clock;

struct Options {
    std::string host = "127.0.0.1";
    int port = 0;
    size_t connections = 8;
    double duration = 10;
    double warmup = 1;
    std::string senders = "1000";  // a count (generated userN@domain) or a file, one per line
    std::string domain = "bench.test";
    size_t pipeline = 1;
    double timeout = 5;     // a reply slower than this is an error; the connection is replaced
    double prime = 0;       // > 0: prime mode with this deadline in seconds
    uint64_t requests = 0;  // > 0: send exactly this many requests, then stop (profiling runs)
    std::string in_progress = "DEFER_IF_PERMIT";  // action prefix of the in_progress class
    std::string client = "198.51.100.7";
};

void usage() {
    std::fprintf(
        stderr,
        "usage: policy_load --port P [--host IP] [--connections N] [--duration S] [--warmup S]\n"
        "                   [--senders FILE|COUNT] [--domain D] [--pipeline K] [--timeout S]\n"
        "                   [--client IP] [--prime S] [--in-progress PREFIX] [--requests N]\n");
}

bool parse_options(int argc, char** argv, Options& o) {
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "-h" || a == "--help") return false;
        if (i + 1 >= argc) {
            std::fprintf(stderr, "policy_load: %s needs a value\n", argv[i]);
            return false;
        }
        const char* v = argv[++i];
        if (a == "--host") {
            o.host = v;
        } else if (a == "--port") {
            o.port = std::atoi(v);
        } else if (a == "--connections") {
            o.connections = static_cast<size_t>(std::max(1, std::atoi(v)));
        } else if (a == "--duration") {
            o.duration = std::atof(v);
        } else if (a == "--warmup") {
            o.warmup = std::atof(v);
        } else if (a == "--senders") {
            o.senders = v;
        } else if (a == "--domain") {
            o.domain = v;
        } else if (a == "--pipeline") {
            o.pipeline = static_cast<size_t>(std::max(1, std::atoi(v)));
        } else if (a == "--timeout") {
            o.timeout = std::atof(v);
        } else if (a == "--prime") {
            o.prime = std::atof(v);
        } else if (a == "--in-progress") {
            o.in_progress = v;
        } else if (a == "--client") {
            o.client = v;
        } else if (a == "--requests") {
            o.requests = std::strtoull(v, nullptr, 10);
        } else {
            std::fprintf(stderr, "policy_load: unknown option %s\n", argv[i - 1]);
            return false;
        }
    }
    if (o.port <= 0 || o.port > 65535) {
        std::fprintf(stderr, "policy_load: --port is required\n");
        return false;
    }
    return true;
}

std::vector<std::string> load_senders(const Options& o) {
    std::vector<std::string> out;
    size_t count = 0;
    auto [end, ec] = std::from_chars(o.senders.data(), o.senders.data() + o.senders.size(), count);
    if (ec == std::errc() && end == o.senders.data() + o.senders.size()) {
        for (size_t i = 0; i < count; ++i)
            out.push_back("user" + std::to_string(i) + "@" + o.domain);
        return out;
    }
    std::ifstream in(o.senders);
    if (!in) {
        std::fprintf(stderr, "policy_load: cannot read %s\n", o.senders.c_str());
        std::exit(2);
    }
    for (std::string line; std::getline(in, line);) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (!line.empty() && line[0] != '#') out.push_back(line);
    }
    return out;
}

// About 420 bytes: the attributes Postfix 3.x sends at RCPT, minus the empty TLS/cert ones.
// `instance` differs per request: the daemon answers later requests of the same message from its
// memo.
void append_request(std::string& out, const Options& o, const std::string& sender, uint64_t seq) {
    out += "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n";
    out += "client_address=";
    out += o.client;
    out += "\nclient_name=mail.example.net\nreverse_client_name=mail.example.net\n";
    out += "helo_name=mail.example.net\nsender=";
    out += sender;
    out += "\nrecipient=postmaster@example.com\nrecipient_count=0\nqueue_id=\ninstance=b";
    out += std::to_string(seq);
    out += ".65f1c2a3.4b5c6.0\nsize=12345\nsasl_method=\nsasl_username=\nsasl_sender=\n";
    out += "encryption_protocol=TLSv1.3\n";
    out += "compatibility_level=3.6\nmail_version=3.7.11\n\n";
}

struct Pending {
    Clock::time_point sent;
    size_t sender;
};

struct Conn {
    enum class State { down, connecting, ready };
    State state = State::down;
    Fd fd;
    std::string out;
    size_t out_off = 0;
    bool want_write = false;
    std::string in;
    size_t scanned = 0;  // bytes of `in` already searched for the end of a reply
    std::deque<Pending> pending;
    Clock::time_point retry_at{};
};

struct Stats {
    std::vector<uint32_t> latency_ns;
    uint64_t errors = 0;
    uint64_t in_progress = 0;
    std::map<std::string, uint64_t> actions;  // first word of the action -> count
};

class Load {
  public:
    Load(Options o, std::vector<std::string> senders)
        : o_(std::move(o)), senders_(std::move(senders)), conns_(o_.connections) {
        stats_.latency_ns.reserve(1 << 20);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<uint16_t>(o_.port));
        if (inet_pton(AF_INET, o_.host.c_str(), &a.sin_addr) != 1) {
            std::fprintf(stderr, "policy_load: '%s' is not an IPv4 address\n", o_.host.c_str());
            std::exit(2);
        }
        addr_ = a;
        ep_.reset(::epoll_create1(EPOLL_CLOEXEC));
        if (o_.prime > 0)
            for (size_t i = 0; i < senders_.size(); ++i) todo_.push_back(i);
    }

    int run();

  private:
    bool measuring_window(Clock::time_point t) const { return t >= warm_end_ && t < end_; }
    void connect(Conn& c, Clock::time_point now);
    void fail(Conn& c, Clock::time_point now, const char* why);
    void pump(Conn& c, Clock::time_point now);
    bool flush(Conn& c);
    void set_write_interest(Conn& c, bool want);
    void on_readable(Conn& c, Clock::time_point now);
    void on_reply(Conn& c, std::string_view reply, Clock::time_point now);
    std::optional<size_t> next_sender(Clock::time_point now);
    int report_load(double seconds);
    int report_prime(double seconds);

    Options o_;
    std::vector<std::string> senders_;
    std::vector<Conn> conns_;
    sockaddr_in addr_{};
    Fd ep_;
    Stats stats_;
    uint64_t seq_ = 0;
    size_t rr_ = 0;
    Clock::time_point start_, warm_end_, end_;
    bool stopping_ = false;
    std::string last_error_;
    // Prime mode: senders still to ask, and those to ask again after an in_progress answer.
    std::deque<size_t> todo_;
    std::deque<std::pair<Clock::time_point, size_t>> again_;
    size_t primed_ = 0;
    uint64_t retries_ = 0;
    uint64_t answered_ = 0;  // replies received (any window), for --requests
};

void Load::connect(Conn& c, Clock::time_point now) {
    c = Conn{};
    c.fd.reset(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!c.fd.valid()) {
        fail(c, now, "socket");
        return;
    }
    int one = 1;
    setsockopt(c.fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int r = ::connect(c.fd.get(), reinterpret_cast<const sockaddr*>(&addr_), sizeof addr_);
    if (r != 0 && errno != EINPROGRESS) {
        fail(c, now, "connect");
        return;
    }
    c.state = Conn::State::connecting;
    epoll_event ev{};
    ev.events = EPOLLOUT | EPOLLIN;
    ev.data.ptr = &c;
    c.want_write = true;
    epoll_ctl(ep_.get(), EPOLL_CTL_ADD, c.fd.get(), &ev);
}

// A lost connection costs its unanswered requests (at least one error) and a reconnect.
void Load::fail(Conn& c, Clock::time_point now, const char* why) {
    int err = errno;
    if (!stopping_) {
        stats_.errors += std::max<size_t>(1, c.pending.size());
        last_error_ = why;
        if (err != 0) last_error_ += std::string(": ") + std::strerror(err);
    }
    if (o_.prime > 0)
        for (const auto& p : c.pending) todo_.push_front(p.sender);
    c.pending.clear();
    c.fd.reset();
    c.state = Conn::State::down;
    c.retry_at = now + std::chrono::milliseconds(20);
}

std::optional<size_t> Load::next_sender(Clock::time_point now) {
    if (o_.prime <= 0) {
        if (now >= end_ || senders_.empty()) return std::nullopt;
        if (o_.requests > 0 && seq_ >= o_.requests) return std::nullopt;
        size_t i = rr_;
        rr_ = (rr_ + 1) % senders_.size();
        return i;
    }
    if (!again_.empty() && again_.front().first <= now) {
        size_t i = again_.front().second;
        again_.pop_front();
        return i;
    }
    if (todo_.empty()) return std::nullopt;
    size_t i = todo_.front();
    todo_.pop_front();
    return i;
}

void Load::set_write_interest(Conn& c, bool want) {
    if (c.want_write == want) return;
    c.want_write = want;
    epoll_event ev{};
    ev.events = EPOLLIN | (want ? EPOLLOUT : 0u);
    ev.data.ptr = &c;
    epoll_ctl(ep_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
}

bool Load::flush(Conn& c) {
    while (c.out_off < c.out.size()) {
        ssize_t w =
            ::send(c.fd.get(), c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
        if (w > 0) {
            c.out_off += static_cast<size_t>(w);
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            return false;
        }
    }
    if (c.out_off == c.out.size()) {
        c.out.clear();
        c.out_off = 0;
    }
    set_write_interest(c, !c.out.empty());
    return true;
}

// Keeps `pipeline` requests in flight on a ready connection.
void Load::pump(Conn& c, Clock::time_point now) {
    if (c.state != Conn::State::ready) return;
    bool added = false;
    while (c.pending.size() < o_.pipeline) {
        auto s = next_sender(now);
        if (!s) break;
        append_request(c.out, o_, senders_[*s], seq_++);
        c.pending.push_back(Pending{now, *s});
        added = true;
    }
    if (added && !flush(c)) fail(c, now, "send");
}

void Load::on_reply(Conn& c, std::string_view reply, Clock::time_point now) {
    if (c.pending.empty()) {
        errno = 0;
        fail(c, now, "reply without a request");
        return;
    }
    Pending p = c.pending.front();
    c.pending.pop_front();
    ++answered_;
    std::string_view action;
    size_t pos = reply.find("action=");
    if (pos == 0 || (pos != std::string_view::npos && reply[pos - 1] == '\n')) {
        action = reply.substr(pos + 7);
        action = action.substr(0, action.find('\n'));
    }
    bool in_progress = !action.empty() && action.starts_with(o_.in_progress);
    if (o_.prime > 0) {
        if (in_progress) {
            ++retries_;
            again_.emplace_back(now + std::chrono::milliseconds(100), p.sender);
        } else {
            ++primed_;
            ++stats_.actions[std::string(action.substr(0, action.find(' ')))];
        }
        return;
    }
    if (!measuring_window(p.sent) || now >= end_) return;
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now - p.sent).count();
    stats_.latency_ns.push_back(static_cast<uint32_t>(std::min<int64_t>(ns, UINT32_MAX)));
    if (action.empty()) {
        ++stats_.errors;
        last_error_ = "reply without action=";
        return;
    }
    if (in_progress) ++stats_.in_progress;
    ++stats_.actions[std::string(action.substr(0, action.find(' ')))];
}

void Load::on_readable(Conn& c, Clock::time_point now) {
    std::array<char, 64 * 1024> buf;
    for (;;) {
        ssize_t r = ::recv(c.fd.get(), buf.data(), buf.size(), 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (r <= 0) {
            if (r == 0) errno = 0;
            fail(c, now, r == 0 ? "connection closed by the server" : "recv");
            return;
        }
        c.in.append(buf.data(), static_cast<size_t>(r));
        if (static_cast<size_t>(r) < buf.size()) break;
    }
    // A reply ends at an empty line.
    size_t begin = 0;
    for (;;) {
        size_t from = c.scanned > begin ? c.scanned - 1 : begin;  // "\n\n" may span two reads
        size_t end = c.in.find("\n\n", from);
        if (end == std::string::npos) {
            c.scanned = c.in.size();
            break;
        }
        on_reply(c, std::string_view(c.in).substr(begin, end + 1 - begin), now);
        if (c.state != Conn::State::ready) return;
        begin = end + 2;
        c.scanned = begin;
    }
    c.in.erase(0, begin);
    c.scanned -= std::min(c.scanned, begin);
}

int Load::run() {
    start_ = Clock::now();
    auto secs = [](double s) {
        return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
    };
    warm_end_ = start_ + secs(o_.prime > 0 ? 0 : o_.warmup);
    end_ = o_.prime > 0 ? start_ + secs(o_.prime) : warm_end_ + secs(o_.duration);
    const auto timeout = secs(o_.timeout);

    for (auto& c : conns_) connect(c, start_);
    std::array<epoll_event, 256> events;
    auto last_sweep = start_;
    for (;;) {
        int n = ::epoll_wait(ep_.get(), events.data(), static_cast<int>(events.size()), 5);
        auto now = Clock::now();
        if (now >= end_) break;
        if (o_.prime > 0 && primed_ == senders_.size()) break;
        if (o_.requests > 0 && answered_ + stats_.errors >= o_.requests) break;
        for (int i = 0; i < n; ++i) {
            auto& ev = events[static_cast<size_t>(i)];
            Conn& c = *static_cast<Conn*>(ev.data.ptr);
            if (!c.fd.valid()) continue;
            if (c.state == Conn::State::connecting) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
                if (err != 0) {
                    errno = err;
                    fail(c, now, "connect");
                    continue;
                }
                c.state = Conn::State::ready;
                set_write_interest(c, false);
                pump(c, now);
                continue;
            }
            if ((ev.events & EPOLLOUT) && !flush(c)) {
                fail(c, now, "send");
                continue;
            }
            if (ev.events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c, now);
            pump(c, now);
        }
        // Reconnects, reply timeouts, and prime-mode retries that came due.
        if (n == 0 || now - last_sweep > std::chrono::milliseconds(5)) {
            last_sweep = now;
            for (auto& c : conns_) {
                if (c.state == Conn::State::down && now >= c.retry_at) connect(c, now);
                if (!c.pending.empty() && now - c.pending.front().sent > timeout) {
                    errno = 0;
                    fail(c, now, "reply timeout");
                }
                pump(c, now);
            }
        }
    }
    stopping_ = true;
    double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    if (o_.prime > 0) return report_prime(seconds);
    return report_load(o_.requests > 0 ? seconds : o_.duration);
}

std::string actions_text(const Stats& s) {
    std::string t;
    for (const auto& [name, count] : s.actions)
        t += (t.empty() ? "" : ",") + name + "=" + std::to_string(count);
    return t.empty() ? "none" : t;
}

int Load::report_load(double seconds) {
    auto& v = stats_.latency_ns;
    std::sort(v.begin(), v.end());
    auto pct = [&](double q) -> double {
        if (v.empty()) return 0;
        size_t i = static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
        return v[std::min(i, v.size() - 1)] / 1000.0;
    };
    double rps = static_cast<double>(v.size()) / seconds;
    std::printf(
        "requests=%zu seconds=%.2f rps=%.0f p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f "
        "errors=%llu in_progress=%llu connections=%zu pipeline=%zu\n",
        v.size(), seconds, rps, pct(0.5), pct(0.99), pct(0.999), v.empty() ? 0 : v.back() / 1000.0,
        static_cast<unsigned long long>(stats_.errors),
        static_cast<unsigned long long>(stats_.in_progress), o_.connections, o_.pipeline);
    std::printf(
        "# %zu connections x %zu in flight, %.1f s after %.1f s warm-up: %zu requests, %.0f/s; "
        "latency p50 %.0f us, p99 %.0f us, p99.9 %.0f us, max %.0f us; %llu errors%s%s; "
        "actions %s\n",
        o_.connections, o_.pipeline, seconds, o_.warmup, v.size(), rps, pct(0.5), pct(0.99),
        pct(0.999), v.empty() ? 0 : v.back() / 1000.0,
        static_cast<unsigned long long>(stats_.errors), last_error_.empty() ? "" : " (last: ",
        last_error_.empty() ? "" : (last_error_ + ")").c_str(), actions_text(stats_).c_str());
    return v.empty() ? 1 : 0;
}

int Load::report_prime(double seconds) {
    size_t left = senders_.size() - primed_;
    std::printf(
        "primed=%zu senders=%zu in_progress_left=%zu retries=%llu errors=%llu seconds=%.2f\n",
        primed_, senders_.size(), left, static_cast<unsigned long long>(retries_),
        static_cast<unsigned long long>(stats_.errors), seconds);
    std::printf(
        "# primed %zu of %zu senders in %.1f s (%llu in_progress answers re-asked); "
        "final actions %s\n",
        primed_, senders_.size(), seconds, static_cast<unsigned long long>(retries_),
        actions_text(stats_).c_str());
    return left == 0 ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    Options o;
    if (!parse_options(argc, argv, o)) {
        usage();
        return 2;
    }
    auto senders = load_senders(o);
    if (senders.empty()) {
        std::fprintf(stderr, "policy_load: no senders\n");
        return 2;
    }
    Load load(std::move(o), std::move(senders));
    return load.run();
}
