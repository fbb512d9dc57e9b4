// Pipelined policy requests over several connections from one thread, timing every request from
// its send to its reply: the load of the attack tests and of bench/attack_replay.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace calloutd::test {

struct BurstOptions {
    std::string ip = "127.0.0.1";
    std::uint16_t port = 0;
    std::size_t connections = 4;  // request i goes over connection i % connections
    std::size_t window = 32;      // unanswered requests allowed per connection
    // Request i is not sent before start + i * spread / n (0 = as fast as the window allows).
    std::chrono::milliseconds spread{0};
    std::chrono::milliseconds timeout{std::chrono::seconds(60)};  // for the whole burst
};

struct BurstResult {
    std::vector<std::optional<std::string>> actions;  // by request; nullopt = never answered
    std::vector<std::chrono::microseconds> latency;   // by request, send -> end of reply
    std::size_t answered = 0;
    std::size_t lost_connections = 0;  // failed to connect, or closed with requests pending
    std::chrono::microseconds elapsed{0};

    std::chrono::microseconds max_latency() const;
    // Exact percentile (0..100) over the answered requests.
    std::chrono::microseconds percentile(double p) const;
    // Answered requests whose action starts with `prefix`.
    std::size_t count(std::string_view prefix) const;
};

// Sends every request and waits for every reply (or the timeout, or every connection lost).
BurstResult run_burst(const std::vector<std::string>& requests, const BurstOptions& options);

}  // namespace calloutd::test
