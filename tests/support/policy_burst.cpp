// One poll() loop over N non-blocking policy connections, each keeping a window of requests
// in flight; replies arrive in request order per connection (the protocol guarantees it).
#include "support/policy_burst.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <deque>

namespace calloutd::test {

namespace {

using Clock = std::chrono::steady_clock;

int connect_to(const std::string& ip, std::uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    if (inet_pton(AF_INET, ip.c_str(), &sa.sin_addr) != 1 ||
        ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        ::close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

struct Conn {
    int fd = -1;
    std::vector<std::size_t> mine;  // request indexes, in send order
    std::size_t next = 0;           // next of `mine` to send
    std::deque<std::pair<std::size_t, Clock::time_point>> pending;  // sent, unanswered
    std::string out;
    std::size_t out_off = 0;
    std::string in;

    bool done() const { return next == mine.size() && pending.empty(); }
    void drop() {
        if (fd >= 0) ::close(fd);
        fd = -1;
    }
};

// The action of one reply block ("action=...\n" lines up to an empty line).
std::optional<std::string> action_of(std::string_view block) {
    auto pos = block.find("action=");
    if (pos == std::string_view::npos) return std::nullopt;
    pos += 7;
    return std::string(block.substr(pos, block.find('\n', pos) - pos));
}

}  // namespace

std::chrono::microseconds BurstResult::max_latency() const {
    std::chrono::microseconds m{0};
    for (std::size_t i = 0; i < latency.size(); ++i) {
        if (actions[i]) m = std::max(m, latency[i]);
    }
    return m;
}

std::chrono::microseconds BurstResult::percentile(double p) const {
    std::vector<std::chrono::microseconds> v;
    for (std::size_t i = 0; i < latency.size(); ++i) {
        if (actions[i]) v.push_back(latency[i]);
    }
    if (v.empty()) return std::chrono::microseconds(0);
    std::sort(v.begin(), v.end());
    auto rank = static_cast<std::size_t>(p / 100.0 * static_cast<double>(v.size()));
    return v[std::min(rank, v.size() - 1)];
}

std::size_t BurstResult::count(std::string_view prefix) const {
    return static_cast<std::size_t>(std::count_if(actions.begin(), actions.end(), [&](auto& a) {
        return a && std::string_view(*a).starts_with(prefix);
    }));
}

BurstResult run_burst(const std::vector<std::string>& requests, const BurstOptions& o) {
    BurstResult r;
    r.actions.resize(requests.size());
    r.latency.resize(requests.size());
    const std::size_t n_conn = std::max<std::size_t>(1, o.connections);
    std::vector<Conn> conns(n_conn);
    for (std::size_t i = 0; i < requests.size(); ++i) conns[i % n_conn].mine.push_back(i);
    for (auto& c : conns) {
        if (c.mine.empty()) continue;
        c.fd = connect_to(o.ip, o.port);
        if (c.fd < 0) ++r.lost_connections;
    }

    const auto start = Clock::now();
    const auto deadline = start + o.timeout;
    auto due = [&](std::size_t index) {
        if (o.spread.count() == 0 || requests.empty()) return start;
        return start +
               std::chrono::duration_cast<Clock::duration>(o.spread * static_cast<double>(index) /
                                                           static_cast<double>(requests.size()));
    };

    std::vector<pollfd> fds;
    std::vector<Conn*> polled;
    for (;;) {
        auto now = Clock::now();
        if (now >= deadline) break;
        // Queue what the window and the pacing allow.
        Clock::time_point next_due = deadline;
        for (auto& c : conns) {
            if (c.fd < 0) continue;
            while (c.next < c.mine.size() &&
                   c.pending.size() < std::max<std::size_t>(1, o.window)) {
                std::size_t index = c.mine[c.next];
                if (due(index) > now) {
                    next_due = std::min(next_due, due(index));
                    break;
                }
                if (c.out_off == c.out.size()) {
                    c.out.clear();
                    c.out_off = 0;
                }
                c.out += requests[index];
                c.pending.emplace_back(index, now);
                ++c.next;
            }
        }
        fds.clear();
        polled.clear();
        for (auto& c : conns) {
            if (c.fd < 0 || c.done()) continue;
            short events = POLLIN;
            if (c.out_off < c.out.size()) events |= POLLOUT;
            fds.push_back({c.fd, events, 0});
            polled.push_back(&c);
        }
        if (fds.empty()) break;
        auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::min(next_due, deadline) - now)
                        .count();
        int n = ::poll(fds.data(), fds.size(), static_cast<int>(std::clamp<long>(wait, 0, 100)));
        if (n < 0 && errno != EINTR) break;
        if (n <= 0) continue;
        for (std::size_t k = 0; k < fds.size(); ++k) {
            Conn& c = *polled[k];
            if (fds[k].revents & POLLOUT) {
                ssize_t w =
                    ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
                if (w > 0) {
                    c.out_off += static_cast<std::size_t>(w);
                } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                    c.drop();
                    ++r.lost_connections;
                    continue;
                }
            }
            if (fds[k].revents & (POLLIN | POLLHUP | POLLERR)) {
                char buf[65536];
                ssize_t got = ::recv(c.fd, buf, sizeof buf, 0);
                if (got > 0) {
                    c.in.append(buf, static_cast<std::size_t>(got));
                    auto when = Clock::now();
                    std::size_t consumed = 0;
                    for (;;) {
                        auto end = c.in.find("\n\n", consumed);
                        if (end == std::string::npos || c.pending.empty()) break;
                        auto [index, sent] = c.pending.front();
                        c.pending.pop_front();
                        r.actions[index] =
                            action_of(std::string_view(c.in).substr(consumed, end + 1 - consumed));
                        r.latency[index] =
                            std::chrono::duration_cast<std::chrono::microseconds>(when - sent);
                        if (r.actions[index]) ++r.answered;
                        consumed = end + 2;
                    }
                    c.in.erase(0, consumed);
                } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
                    c.drop();
                    ++r.lost_connections;
                }
            }
        }
    }
    for (auto& c : conns) c.drop();
    r.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
    return r;
}

}  // namespace calloutd::test
