// The daemon's configuration as typed values, and loading it from a TOML file.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "policy/settings.hpp"
#include "storage/probe_budget.hpp"
#include "storage/rate.hpp"
#include "util/ip_net.hpp"

namespace calloutd {

using Duration = std::chrono::milliseconds;

// A listener in Postfix notation: inet:HOST:PORT, inet:[V6]:PORT or unix:PATH.
struct ListenAddress {
    enum class Kind { inet, unix_socket };
    Kind kind = Kind::inet;
    std::string host;  // IP literal (inet)
    uint16_t port = 0;
    std::string path;  // unix socket path
    std::string text;  // as written
    friend bool operator==(const ListenAddress&, const ListenAddress&) = default;
};

enum class LogLevel { debug, info, notice, warning, error };

struct ServerSettings {
    std::vector<ListenAddress> listen;
    Duration reply_timeout{};
    int64_t max_connections = 0;
    int64_t max_line_bytes = 0;
    int64_t max_request_bytes = 0;
    Duration idle_timeout{};
    Duration request_timeout{};
    Duration shutdown_timeout{};
    int64_t socket_mode = 0;
    std::string user;
    std::string group;
    std::string control_socket;  // unix socket path for `calloutd status|cache`; "" = none
    std::string io_uring;        // "auto" | "on" | "off": policy sockets' I/O batched (IoBatch)
};

struct LogSettings {
    std::string target;  // "stderr" | "syslog" | "journald"
    LogLevel level = LogLevel::info;
    std::string syslog_facility;
    std::string syslog_ident;
    std::string socket;  // datagram socket of syslog/journald; "" = the target's usual one
    Duration flush_interval{};
    bool write_behind = true;  // a regular file's pages: written out per MiB, dropped 4 MiB back
};

struct DnsSettings {
    std::vector<std::string> servers;
    Duration timeout{};
    int64_t tries = 0;
    std::string canary;  // "." = the root zone's NS set, "" = none
};

struct CalloutSettings {
    int64_t port = 25;
    std::string helo_name;
    CidrSet allow_networks;
    std::string source_address;
    Duration connect_timeout{};
    Duration command_timeout{};
    Duration probe_timeout{};
    int64_t max_mx = 0;
    bool random_check = true;
    std::string tls;  // "may" | "encrypt" | "none"
    Duration tls_timeout{};
};

struct CacheSettings {
    Duration positive_ttl{};
    Duration negative_ttl{};
    Duration tempfail_ttl{};
    Duration domain_ttl{};
    Duration positive_refresh{};
    int64_t memory_entries = 0;
};

struct LimitSettings {
    BudgetLimits budgets;  // rates and concurrency, as the budget backends take them
    Duration backoff_ttl{};
    int64_t client_ipv6_prefix = 64;  // IPv6 clients share a client budget per such network
};

struct RedisSettings {
    std::string url;
    std::vector<std::string> sentinels;  // IP:PORT or [V6]:PORT
    std::string master_name;
    Duration timeout{};
    Duration near_cache_ttl{};
    int64_t nodes = 1;  // nodes sharing the Redis: each one's share of the budgets when degraded
};

struct MetricsSettings {
    std::string listen;  // "inet:HOST:PORT" or "unix:PATH"; "" = no metrics listener
};

struct Config {
    std::string path;  // file it was loaded from
    ServerSettings server;
    LogSettings log;
    PolicySettings policy;
    DnsSettings dns;
    CalloutSettings callout;
    CacheSettings cache;
    LimitSettings limits;
    RedisSettings redis;
    MetricsSettings metrics;
};

// Either a complete configuration or the errors, each "FILE:LINE:COL: message".
using ConfigResult = std::variant<Config, std::vector<std::string>>;

ConfigResult load_config_file(const std::string& path);
// Parses TOML text; `path` is used in messages only.
ConfigResult load_config_text(std::string_view toml_text, const std::string& path);

}  // namespace calloutd
