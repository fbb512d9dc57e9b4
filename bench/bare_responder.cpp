// Reference "bare responder" of DESIGN.md: epoll policy server answering every request DUNNO.
//
// Usage: bare_responder [IP [PORT]]   (defaults 127.0.0.1 0; port 0 = a free port)
// Prints "port=N" on stdout once listening; on SIGTERM/SIGINT prints "served=N" on stderr.
// Single-threaded, level-triggered, non-blocking. It parses only what a policy server must:
// a request ends at an empty line; pipelined requests get their replies in order.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "fd.hpp"

namespace {

using bench::Fd;

constexpr std::string_view kReply = "action=DUNNO\n\n";

struct Conn {
    Fd fd;
    bool at_line_start = true;  // the previous byte was '\n' (or nothing was read yet)
    std::string out;            // replies not yet accepted by the kernel
    size_t out_off = 0;
    bool want_write = false;
};

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) {
    g_stop = 1;
}

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "bare_responder: %s: %s\n", what, std::strerror(errno));
    std::exit(1);
}

// Counts the requests that end inside `data`; a request ends at an empty line.
size_t count_requests(Conn& c, const char* data, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; ++i) {
        const char* nl = static_cast<const char*>(std::memchr(data + i, '\n', len - i));
        if (nl == nullptr) {
            c.at_line_start = false;
            break;
        }
        size_t pos = static_cast<size_t>(nl - data);
        if (pos == i && c.at_line_start) ++n;
        c.at_line_start = true;
        i = pos;
    }
    return n;
}

// Writes what is queued; false when the connection is dead.
bool flush(Conn& c) {
    while (c.out_off < c.out.size()) {
        ssize_t w =
            ::send(c.fd.get(), c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
        if (w > 0) {
            c.out_off += static_cast<size_t>(w);
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return true;
        } else {
            return false;
        }
    }
    c.out.clear();
    c.out_off = 0;
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    const char* ip = argc > 1 ? argv[1] : "127.0.0.1";
    int port = argc > 2 ? std::atoi(argv[2]) : 0;

    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!listener.valid()) die("socket");
    int one = 1;
    setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, ip, &addr.sin_addr) != 1) {
        std::fprintf(stderr, "bare_responder: '%s' is not an IPv4 address\n", ip);
        return 2;
    }
    if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) die("bind");
    if (::listen(listener.get(), 1024) != 0) die("listen");
    socklen_t alen = sizeof addr;
    getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &alen);
    std::printf("port=%u\n", ntohs(addr.sin_port));
    std::fflush(stdout);

    Fd ep(::epoll_create1(EPOLL_CLOEXEC));
    if (!ep.valid()) die("epoll_create1");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = listener.get();
    epoll_ctl(ep.get(), EPOLL_CTL_ADD, listener.get(), &ev);

    std::unordered_map<int, std::unique_ptr<Conn>> conns;
    std::array<epoll_event, 256> events;
    std::array<char, 64 * 1024> buf;
    uint64_t served = 0;

    auto drop = [&](int fd) { conns.erase(fd); };  // closing the fd removes it from epoll
    auto set_write_interest = [&](Conn& c, bool want) {
        if (c.want_write == want) return;
        c.want_write = want;
        epoll_event e{};
        e.events = EPOLLIN | (want ? EPOLLOUT : 0u);
        e.data.fd = c.fd.get();
        epoll_ctl(ep.get(), EPOLL_CTL_MOD, c.fd.get(), &e);
    };

    while (!g_stop) {
        int n = ::epoll_wait(ep.get(), events.data(), static_cast<int>(events.size()), -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; ++i) {
            int fd = events[static_cast<size_t>(i)].data.fd;
            if (fd == listener.get()) {
                for (;;) {
                    int cfd =
                        ::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (cfd < 0) break;
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    auto c = std::make_unique<Conn>();
                    c->fd.reset(cfd);
                    epoll_event e{};
                    e.events = EPOLLIN;
                    e.data.fd = cfd;
                    epoll_ctl(ep.get(), EPOLL_CTL_ADD, cfd, &e);
                    conns[cfd] = std::move(c);
                }
                continue;
            }
            auto it = conns.find(fd);
            if (it == conns.end()) continue;
            Conn& c = *it->second;
            uint32_t what = events[static_cast<size_t>(i)].events;
            if (what & EPOLLOUT) {
                if (!flush(c)) {
                    drop(fd);
                    continue;
                }
                set_write_interest(c, c.out_off < c.out.size());
            }
            if (what & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                if (r <= 0) {
                    // EOF: a half-closed client still gets the replies already owed.
                    if (r == 0) flush(c);
                    drop(fd);
                    continue;
                }
                size_t requests = count_requests(c, buf.data(), static_cast<size_t>(r));
                served += requests;
                for (size_t k = 0; k < requests; ++k) c.out.append(kReply);
                if (!flush(c)) {
                    drop(fd);
                    continue;
                }
                set_write_interest(c, c.out_off < c.out.size());
            }
        }
    }
    std::fprintf(stderr, "served=%llu\n", static_cast<unsigned long long>(served));
    return 0;
}
