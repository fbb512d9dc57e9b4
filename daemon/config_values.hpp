// Parsers for the value types used in the configuration: durations, rates, listen addresses.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "daemon/config.hpp"

namespace calloutd {

// "250ms", "15s", "5m", "3h", "31d", "2w". Non-negative; error text in *error.
std::optional<Duration> parse_duration(std::string_view text, std::string* error);
// Shortest exact rendering: 90000ms -> "90s", 300000ms -> "5m".
std::string format_duration(Duration d);
// "10/1m", "600/1h", or "unlimited".
std::optional<Rate> parse_rate(std::string_view text, std::string* error);
// "inet:127.0.0.1:10023", "inet:[::1]:10023", "inet:localhost:10023", "unix:/run/x.sock".
std::optional<ListenAddress> parse_listen_address(std::string_view text, std::string* error);
// "0660" -> 0660 (permission bits only).
std::optional<int64_t> parse_file_mode(std::string_view text, std::string* error);
// A Postfix access(5) action that calloutd may return; checks the verb and that codes carry text.
bool validate_action(std::string_view action, std::string* error);
std::optional<LogLevel> parse_log_level(std::string_view text);
std::string_view to_string(LogLevel level);

}  // namespace calloutd
