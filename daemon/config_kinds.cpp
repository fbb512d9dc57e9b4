// Typed parsing of TOML values for each ValueKind of the schema, with one validator per kind of
// list entry.
#include <algorithm>
#include <cstdio>

#include "daemon/config_schema.hpp"
#include "daemon/config_values.hpp"
#include "policy/domain_list.hpp"
#include "util/host_port.hpp"
#include "util/panic.hpp"

namespace calloutd {

namespace {

using K = ValueKind;

std::string type_name(const toml::node& node) {
    switch (node.type()) {
        case toml::node_type::string:
            return "a string";
        case toml::node_type::integer:
            return "an integer";
        case toml::node_type::floating_point:
            return "a float";
        case toml::node_type::boolean:
            return "a boolean";
        case toml::node_type::array:
            return "an array";
        case toml::node_type::table:
            return "a table";
        default:
            return "a date/time";
    }
}

std::string expected_name(ValueKind kind) {
    switch (kind) {
        case K::boolean:
            return "a boolean (true or false)";
        case K::integer:
            return "an integer";
        case K::duration:
            return "a duration string like \"15s\"";
        case K::rate:
            return "a rate string like \"10/1m\"";
        case K::file_mode:
            return "an octal mode string like \"0660\"";
        case K::string_list:
        case K::state_list:
        case K::domain_list:
        case K::dns_server_list:
            return "an array of strings";
        case K::cidr_list:
            return "an array of networks like \"192.0.2.0/24\"";
        case K::listen_list:
            return "an array of listen addresses like \"inet:127.0.0.1:10023\"";
        default:
            return "a string";
    }
}

std::string range_text(const KeyDef& def) {
    if (def.kind == K::duration) {
        return format_duration(Duration(def.min)) + ".." + format_duration(Duration(def.max));
    }
    return std::to_string(def.min) + ".." + std::to_string(def.max);
}

// "IP", "V4:PORT" or "[V6]:PORT".
bool is_dns_server(std::string_view s) {
    auto hp = parse_host_port(s);
    std::optional<IpAddress> ip;
    if (hp) ip = IpAddress::parse(hp->host);
    if (!ip) return false;
    if (hp->bracketed) return hp->port && !ip->is_v4();
    return !hp->port || ip->is_v4();
}

// A host name as DNS carries it: labels of letters, digits, '-' and '_', at most 63 octets
// each, 253 in all; a trailing dot is allowed.
bool is_dns_name(std::string_view s) {
    if (s.ends_with('.')) s.remove_suffix(1);
    if (s.empty() || s.size() > 253) return false;
    size_t label = 0;
    for (char c : s) {
        if (c == '.') {
            if (label == 0) return false;
            label = 0;
            continue;
        }
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok || ++label > 63) return false;
    }
    return label > 0;
}

// No configuration string has a use for control bytes, and in one that names an address,
// host or path a NUL silently cuts it short where the C APIs read it (inet_pton, bind, open).
bool refuse_control_bytes(std::string_view s, std::string& why) {
    for (char c : s) {
        auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) {
            char hex[8];
            std::snprintf(hex, sizeof hex, "0x%02x", u);
            why = "a control character (" + std::string(hex) + ") is not allowed in a value";
            return true;
        }
    }
    return false;
}

// List entries, one validator per kind of list: each checks one string, appends what it stands
// for to `out`, or says why not in `why`.
using Strings = std::vector<std::string>;

bool any_string(std::string_view s, Strings& out, std::string&) {
    out.emplace_back(s);
    return true;
}

bool protocol_state(std::string_view s, Strings& out, std::string& why) {
    static constexpr std::string_view kStates[] = {"CONNECT", "EHLO", "HELO", "MAIL",
                                                   "RCPT",    "DATA", "BDAT", "END-OF-MESSAGE",
                                                   "VRFY",    "ETRN"};
    if (std::find(std::begin(kStates), std::end(kStates), s) == std::end(kStates)) {
        why = "'" + std::string(s) + "' is not a Postfix protocol_state (RCPT, MAIL, ...)";
        return false;
    }
    out.emplace_back(s);
    return true;
}

// A domain (U-labels and A-labels alike, normalised as the probe would), or a "file:" or
// "builtin:" entry that the loader expands.
bool domain_entry(std::string_view s, Strings& out, std::string& why) {
    std::string v(s);
    if (builtin_list(v) || (v.starts_with("file:") && v.size() > 5)) {
        out.push_back(std::move(v));
        return true;
    }
    auto domain = list_domain(v);
    if (!domain) {
        why = "'" + v + "' is not a domain name, \"file:PATH\", \"" +
              std::string(kBuiltinNeverProbe) + "\" or \"" + std::string(kBuiltinNeverProbeMx) +
              "\"";
        return false;
    }
    out.push_back(std::move(*domain));
    return true;
}

bool dns_server(std::string_view s, Strings& out, std::string& why) {
    if (!is_dns_server(s)) {
        why = "'" + std::string(s) + "' is not IP, IP:PORT or [V6]:PORT";
        return false;
    }
    out.emplace_back(s);
    return true;
}

bool network(std::string_view s, std::vector<Cidr>& out, std::string& why) {
    auto c = Cidr::parse(s, &why);
    if (c) out.push_back(*c);
    return c.has_value();
}

bool listener(std::string_view s, std::vector<ListenAddress>& out, std::string& why) {
    auto a = parse_listen_address(s, &why);
    if (a) out.push_back(*a);
    return a.has_value();
}

// An array of strings, each passed through `entry`; the first bad element ends it.
template <class Out>
std::optional<Out> parse_list(const toml::node& node, std::string& why,
                              bool (*entry)(std::string_view, Out&, std::string&)) {
    const auto* arr = node.as_array();
    if (arr == nullptr) return std::nullopt;
    Out out;
    for (const auto& el : *arr) {
        const auto* s = el.as_string();
        if (s == nullptr) {
            why = "array elements must be strings, found " + type_name(el);
            return std::nullopt;
        }
        if (refuse_control_bytes(s->get(), why)) return std::nullopt;
        if (!entry(std::string_view(s->get()), out, why)) return std::nullopt;
    }
    return out;
}

template <class Out>
std::optional<ConfigValue> list_value(const toml::node& node, std::string& why,
                                      bool (*entry)(std::string_view, Out&, std::string&)) {
    auto list = parse_list(node, why, entry);
    if (!list) return std::nullopt;
    return ConfigValue(std::move(*list));
}

// The value of `node` for `def`, or nullopt with `why` set when the value is wrong; nullopt
// with `why` empty when it is of the wrong TOML type.
std::optional<ConfigValue> parse_kind(const KeyDef& def, const toml::node& node, std::string& why) {
    if (def.kind == K::boolean) {
        if (const auto* b = node.as_boolean()) return ConfigValue(b->get());
        return std::nullopt;
    }
    if (def.kind == K::integer) {
        const auto* i = node.as_integer();
        if (i == nullptr) return std::nullopt;
        if (i->get() < def.min || i->get() > def.max) {
            why = "value " + std::to_string(i->get()) + " is out of range " + range_text(def);
            return std::nullopt;
        }
        return ConfigValue(static_cast<int64_t>(i->get()));
    }
    switch (def.kind) {
        case K::string_list:
            return list_value(node, why, &any_string);
        case K::state_list:
            return list_value(node, why, &protocol_state);
        case K::domain_list:
            return list_value(node, why, &domain_entry);
        case K::dns_server_list:
            return list_value(node, why, &dns_server);
        case K::cidr_list: {
            auto nets = parse_list(node, why, &network);
            if (!nets) return std::nullopt;
            return ConfigValue(CidrSet(std::move(*nets)));
        }
        case K::listen_list: {
            auto addresses = parse_list(node, why, &listener);
            if (!addresses) return std::nullopt;
            if (addresses->empty()) {
                why = "at least one listener is needed";
                return std::nullopt;
            }
            return ConfigValue(std::move(*addresses));
        }
        default:
            break;
    }
    // The rest are strings.
    const auto* str = node.as_string();
    if (str == nullptr) return std::nullopt;
    const std::string& s = str->get();
    switch (def.kind) {
        case K::string:
            return ConfigValue(s);
        case K::ip_or_empty:
            if (!s.empty() && !IpAddress::parse(s)) {
                why = "'" + s + "' is not an IP address";
                return std::nullopt;
            }
            return ConfigValue(s);
        case K::dns_name_or_empty:
            if (!s.empty() && s != "." && !is_dns_name(s)) {
                why = "'" + s + "' is not a DNS name (letters, digits, '-', '_', dots)";
                return std::nullopt;
            }
            return ConfigValue(s);
        case K::duration: {
            auto d = parse_duration(s, &why);
            if (!d) return std::nullopt;
            if (d->count() < def.min || d->count() > def.max) {
                why = "duration " + s + " is out of range " + range_text(def);
                return std::nullopt;
            }
            return ConfigValue(*d);
        }
        case K::rate: {
            auto r = parse_rate(s, &why);
            if (!r) return std::nullopt;
            return ConfigValue(*r);
        }
        case K::choice: {
            std::string_view choices = def.choices;
            while (!choices.empty()) {
                auto bar = choices.find('|');
                if (choices.substr(0, bar) == s) return ConfigValue(s);
                choices = bar == std::string_view::npos ? "" : choices.substr(bar + 1);
            }
            why = "'" + s + "' is not one of " + std::string(def.choices);
            return std::nullopt;
        }
        case K::log_level:
            if (auto l = parse_log_level(s)) return ConfigValue(*l);
            why = "'" + s + "' is not a log level (debug, info, notice, warning, error)";
            return std::nullopt;
        case K::file_mode: {
            auto m = parse_file_mode(s, &why);
            if (!m) return std::nullopt;
            return ConfigValue(*m);
        }
        case K::action:
            if (!validate_action(s, &why)) return std::nullopt;
            return ConfigValue(s);
        default:
            return std::nullopt;
    }
}

}  // namespace

std::optional<ConfigValue> parse_value(const KeyDef& def, const toml::node& node,
                                       std::string* error) {
    std::string why;
    std::optional<ConfigValue> value;
    if (const auto* str = node.as_string();
        str == nullptr || !refuse_control_bytes(str->get(), why)) {
        value = parse_kind(def, node, why);
    }
    if (!value) {
        // A value of the wrong TOML type says what was expected; a wrong value says why.
        if (why.empty()) why = "expected " + expected_name(def.kind) + ", got " + type_name(node);
        *error = std::string(def.key) + ": " + why;
    }
    return value;
}

ConfigValue default_value(const KeyDef& def) {
    // Defaults are TOML text so the sample file and the schema are compared in one language.
    std::string doc = "v = " + std::string(def.default_toml);
    std::string error;
    std::optional<ConfigValue> v;
    try {
        toml::table parsed = toml::parse(doc);
        if (const auto* node = parsed.get("v")) v = parse_value(def, *node, &error);
    } catch (const toml::parse_error& e) {
        error = std::string(e.description());
    }
    if (!v) {
        // A broken default is a programming error, caught by the schema unit test.
        panic(__func__, "bad default for " + std::string(def.key) + ": " + error);
    }
    return std::move(*v);
}

}  // namespace calloutd
