// TOML configuration loader and schema validation (daemon/config.hpp). Any text: every error
// says file:line:col, and a configuration that loads has only values the daemon can use (no
// control bytes in addresses, hosts or paths; relations between keys hold).
#include <regex>
#include <string>
#include <variant>

#include "daemon/config.hpp"
#include "daemon/config_schema.hpp"
#include "daemon/config_values.hpp"
#include "fuzz/fuzz_target.hpp"
#include "storage/redis_url.hpp"

namespace {

bool has_control(const std::string& s) {
    for (unsigned char c : s) {
        if (c < 0x20 || c == 0x7f) return true;
    }
    return false;
}

// A configuration that loads honours every key in the file: each value sits at the place of a
// schema key, table by table (a quoted "server.listen" is one key named so, not server.listen).
void check_every_key_is_a_schema_key(const toml::table& table, const std::string& prefix) {
    for (const auto& [name, node] : table) {
        std::string segment(name.str());
        FUZZ_CHECK(segment.find('.') == std::string::npos, "key '" + segment + "' was accepted");
        std::string key = prefix + segment;
        if (const auto* sub = node.as_table();
            sub != nullptr && calloutd::find_key(key) == nullptr) {
            check_every_key_is_a_schema_key(*sub, key + ".");
            continue;
        }
        FUZZ_CHECK(calloutd::find_key(key) != nullptr, "unknown key '" + key + "' was accepted");
    }
}

}  // namespace

CALLOUTD_FUZZ_TARGET(config) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    // A directory that has no domain lists: relative "file:" entries find nothing.
    auto result = calloutd::load_config_text(text, "/nonexistent/fuzz.toml");
    if (auto* errors = std::get_if<std::vector<std::string>>(&result)) {
        static const std::regex kWhere("^/nonexistent/fuzz\\.toml:[0-9]+:[0-9]+: .+");
        FUZZ_CHECK(!errors->empty(), "an error result without errors");
        for (const auto& e : *errors) FUZZ_CHECK(std::regex_search(e, kWhere), e);
        return 0;
    }
    const auto& cfg = std::get<calloutd::Config>(result);
    check_every_key_is_a_schema_key(toml::parse(text), "");
    FUZZ_CHECK(!cfg.server.listen.empty(), "no listener");
    for (const auto& l : cfg.server.listen) {
        FUZZ_CHECK(!has_control(l.text) && !has_control(l.path) && !has_control(l.host), l.text);
        FUZZ_CHECK(calloutd::parse_listen_address(l.text, nullptr).has_value(), l.text);
    }
    FUZZ_CHECK(cfg.server.max_line_bytes <= cfg.server.max_request_bytes, "line > request");
    FUZZ_CHECK(cfg.server.reply_timeout.count() > 0, "reply_timeout");
    std::string error;
    if (!cfg.redis.url.empty()) {
        FUZZ_CHECK(calloutd::parse_redis_url(cfg.redis.url, error).has_value(), cfg.redis.url);
    }
    FUZZ_CHECK(!has_control(cfg.redis.url), cfg.redis.url);
    for (const auto& s : cfg.redis.sentinels) {
        FUZZ_CHECK(!has_control(s), s);
        FUZZ_CHECK(calloutd::parse_sentinel_address(s, error).has_value(), s);
    }
    for (const auto& s : cfg.dns.servers) FUZZ_CHECK(!has_control(s), s);
    for (const std::string* s :
         {&cfg.callout.helo_name, &cfg.callout.source_address, &cfg.server.control_socket,
          &cfg.metrics.listen, &cfg.server.user, &cfg.server.group, &cfg.log.syslog_ident,
          &cfg.redis.master_name}) {
        FUZZ_CHECK(!has_control(*s), *s);
    }
    for (const auto& a : cfg.policy.actions) {
        FUZZ_CHECK(calloutd::validate_action(a, &error), a + ": " + error);
    }
    return 0;
}
