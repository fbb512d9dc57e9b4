// The one declaration of every configuration key: name, type, default, bounds, whether a reload
// applies it, doc. The table is config_schema.cpp; parsing a value of each kind is
// config_kinds.cpp.
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

// Whether SIGHUP applies a key (Redis's config table marks the same as MODIFIABLE/IMMUTABLE).
enum class Reload {
    live,     // a reload applies the new value
    restart,  // the value the daemon started with stays in force; a reload that changes it says so
};

using ConfigValue = std::variant<bool, int64_t, std::string, Duration, Rate, LogLevel,
                                 std::vector<std::string>, CidrSet, std::vector<ListenAddress>>;

// One row of the schema, made by the per-kind builders in config_schema.cpp.
struct KeyDef {
    std::string_view key;  // "section.name"
    ValueKind kind = ValueKind::string;
    Reload reload = Reload::live;
    std::string_view default_toml;  // the default, written as a TOML value
    std::string_view doc;           // one line
    int64_t min = 0;                // integer: bounds; duration: bounds in milliseconds
    int64_t max = 0;
    std::string_view choices;                                     // choice: "a|b|c"
    void (*apply)(Config&, ConfigValue&&) = nullptr;              // stores a parsed value
    bool (*same)(const Config&, const Config&) = nullptr;         // equal in both configurations
    void (*keep)(Config& next, const Config& running) = nullptr;  // running's value into next
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
// The Reload::restart keys whose values differ between the two, in schema order: what a reload
// from `running` to `next` does not apply.
std::vector<std::string_view> restart_keys_changed(const Config& running, const Config& next);
// Gives every Reload::restart key of `next` its value in `running`: what a reload applies, so
// that the daemon's configuration (what `status` shows, what the next reload compares with) is
// the one in force.
void keep_restart_keys(const Config& running, Config& next);

}  // namespace calloutd
