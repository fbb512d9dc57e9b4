// The one declaration of every configuration key: name, type, default, bounds, doc.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <toml++/toml.h>

#include "daemon/config.hpp"

namespace calloutd {

enum class ValueKind {
    boolean,
    integer,  // bounded by min/max
    string,
    ip_or_empty,        // an IP literal or ""
    dns_name_or_empty,  // a host name, "." (the root) or ""
    duration,           // bounded by min/max milliseconds
    rate,
    choice,  // one of `choices` ("a|b|c")
    log_level,
    file_mode,
    action,
    string_list,
    state_list,  // Postfix protocol_state names
    domain_list,
    dns_server_list,
    cidr_list,
    listen_list,
};

using ConfigValue = std::variant<bool, int64_t, std::string, Duration, Rate, LogLevel,
                                 std::vector<std::string>, CidrSet, std::vector<ListenAddress>>;

struct KeyDef {
    std::string_view key;  // "section.name"
    ValueKind kind;
    std::string_view default_toml;  // the default, written as a TOML value
    int64_t min;                    // integer bound, or duration bound in ms
    int64_t max;
    std::string_view choices;  // for ValueKind::choice
    std::string_view doc;      // one line
    void (*apply)(Config&, ConfigValue&&);
};

inline constexpr std::string_view kBuiltinNeverProbe = "builtin:never-probe";
inline constexpr std::string_view kBuiltinNeverProbeMx = "builtin:never-probe-mx";

std::span<const KeyDef> config_schema();
const KeyDef* find_key(std::string_view key);
// Converts one TOML value to the key's type, checking bounds; error text in *error.
std::optional<ConfigValue> parse_value(const KeyDef& def, const toml::node& node,
                                       std::string* error);
// The key's default as a typed value (parsed from default_toml).
ConfigValue default_value(const KeyDef& def);

}  // namespace calloutd
