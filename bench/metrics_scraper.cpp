// Scrapes calloutd's /metrics at a fixed interval, as Prometheus does, for bench/run-bench.
//
// Usage: metrics_scraper PORT INTERVAL_MS   (127.0.0.1; a new connection per scrape)
// Runs until SIGTERM/SIGINT, then prints "scrapes=N failures=N bytes=LAST max_us=N" on stdout.
// A scrape counts when the reply is a 200 with calloutd_requests_total in it.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "fd.hpp"

namespace {

volatile std::sig_atomic_t g_stop = 0;

// One GET /metrics; the whole reply, or "" on failure.
std::string scrape(uint16_t port) {
    bench::Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (fd.get() < 0 || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        return {};
    }
    static const std::string kRequest =
        "GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
    if (::send(fd.get(), kRequest.data(), kRequest.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(kRequest.size())) {
        return {};
    }
    std::string reply;
    char buf[16384];
    for (;;) {
        ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
        if (n <= 0) break;
        reply.append(buf, static_cast<size_t>(n));
    }
    return reply;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: metrics_scraper PORT INTERVAL_MS\n");
        return 2;
    }
    auto port = static_cast<uint16_t>(std::atoi(argv[1]));
    std::chrono::milliseconds interval(std::atoi(argv[2]));
    std::signal(SIGTERM, [](int) { g_stop = 1; });
    std::signal(SIGINT, [](int) { g_stop = 1; });
    long scrapes = 0;
    long failures = 0;
    size_t bytes = 0;
    long long max_us = 0;
    auto next = std::chrono::steady_clock::now();
    while (g_stop == 0) {
        auto t0 = std::chrono::steady_clock::now();
        std::string reply = scrape(port);
        auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::steady_clock::now() - t0)
                      .count();
        if (reply.starts_with("HTTP/1.1 200") &&
            reply.find("\ncalloutd_requests_total") != std::string::npos) {
            ++scrapes;
            bytes = reply.size();
            if (us > max_us) max_us = us;
        } else {
            ++failures;
        }
        next += interval;
        std::this_thread::sleep_until(next);
    }
    std::printf("scrapes=%ld failures=%ld bytes=%zu max_us=%lld\n", scrapes, failures, bytes,
                max_us);
    return 0;
}
