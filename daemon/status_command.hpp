// `calloutd status`: a human summary of the running daemon, asked over server.control_socket.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "daemon/config.hpp"
#include "daemon/metrics.hpp"

namespace calloutd {

// What the daemon reports; format_status() turns it into the lines the command prints.
struct StatusInfo {
    std::string version;
    std::chrono::seconds uptime{};
    long long pid = 0;
    std::string config_path;
    bool dry_run = false;
    std::array<uint64_t, kVerdictClasses> last_minute{};  // requests per class in the window
    size_t window_seconds = 0;
    uint64_t probes_in_flight = 0;
    std::array<uint64_t, kBudgetLabels> budget_denials{};
    uint64_t cache_entries = 0;
    uint64_t policy_connections = 0;
    bool redis_configured = false;
    std::string redis_endpoint;
    bool redis_up = false;
    std::optional<bool> dns_canary_ok;  // unset: no DNS canary in this daemon
};

std::vector<std::string> format_status(const StatusInfo& info);

// Exit codes of `calloutd status`.
inline constexpr int kStatusOk = 0;
inline constexpr int kStatusUsage = 2;        // no server.control_socket configured
inline constexpr int kStatusUnreachable = 3;  // the daemon did not answer

int run_status_command(const Config& config, std::FILE* out, std::FILE* err);

}  // namespace calloutd
