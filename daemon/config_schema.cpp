// The configuration schema table and typed parsing of TOML values against it.
#include "daemon/config_schema.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "daemon/config_values.hpp"
#include "policy/domain_list.hpp"

namespace calloutd {

namespace {

template <class T>
void assign(T& dst, ConfigValue&& v) {
    dst = std::get<T>(std::move(v));
}

template <VerdictClass C>
void assign_action(Config& c, ConfigValue&& v) {
    c.policy.actions[static_cast<size_t>(C)] = std::get<std::string>(std::move(v));
}

// Domain lists arrive expanded (the loader reads "file:" and "builtin:" entries).
template <DomainSet PolicySettings::*Field>
void assign_domains(Config& c, ConfigValue&& v) {
    c.policy.*Field = DomainSet(std::get<std::vector<std::string>>(v));
}

#define FIELD(member) [](Config& c, ConfigValue&& v) { assign(c.member, std::move(v)); }
#define ACTION(cls) &assign_action<VerdictClass::cls>

constexpr int64_t kMs = 1;
constexpr int64_t kSec = 1000;
constexpr int64_t kMin = 60 * kSec;
constexpr int64_t kHour = 60 * kMin;
constexpr int64_t kDay = 24 * kHour;

using K = ValueKind;

const KeyDef kSchema[] = {
    // [server]
    {"server.listen", K::listen_list, R"(["inet:127.0.0.1:10023"])", 0, 0, "",
     "policy listeners: inet:HOST:PORT, inet:[V6]:PORT, unix:PATH", FIELD(server.listen)},
    {"server.reply_timeout", K::duration, R"("10s")", 100 * kMs, kHour, "",
     "answer budget per request; a probe still running then gets actions.in_progress",
     FIELD(server.reply_timeout)},
    {"server.max_connections", K::integer, "1024", 1, 1'000'000, "",
     "concurrent policy connections; more are closed at once", FIELD(server.max_connections)},
    {"server.max_line_bytes", K::integer, "4096", 64, 1 << 20, "",
     "longest attribute line accepted", FIELD(server.max_line_bytes)},
    {"server.max_request_bytes", K::integer, "16384", 256, 16 << 20, "", "largest request accepted",
     FIELD(server.max_request_bytes)},
    {"server.idle_timeout", K::duration, R"("10m")", kSec, kDay, "",
     "close a connection idle this long (longer than Postfix's smtpd_policy_service_max_idle)",
     FIELD(server.idle_timeout)},
    {"server.request_timeout", K::duration, R"("10s")", kSec, kHour, "",
     "a request must be complete this long after its first bytes arrived; slower clients "
     "(slowloris) are closed",
     FIELD(server.request_timeout)},
    {"server.shutdown_timeout", K::duration, R"("10s")", 0, 10 * kMin, "",
     "on SIGTERM, how long in-flight requests may still be answered",
     FIELD(server.shutdown_timeout)},
    {"server.socket_mode", K::file_mode, R"("0666")", 0, 0, "",
     "permissions of unix listener sockets", FIELD(server.socket_mode)},
    {"server.user", K::string, R"("")", 0, 0, "",
     "user to run as after binding listeners (empty = do not change)", FIELD(server.user)},
    {"server.group", K::string, R"("")", 0, 0, "",
     "group to run as after binding listeners (empty = the user's group)", FIELD(server.group)},
    {"server.control_socket", K::string, R"("/run/calloutd/control.sock")", 0, 0, "",
     "unix socket (mode 0660) where `calloutd status` and `calloutd cache` reach the running "
     "daemon (empty = none)",
     FIELD(server.control_socket)},
    // [log]
    {"log.target", K::choice, R"("stderr")", 0, 0, "stderr|syslog|journald", "where log lines go",
     FIELD(log.target)},
    {"log.level", K::log_level, R"("info")", 0, 0, "", "debug, info, notice, warning or error",
     FIELD(log.level)},
    {"log.syslog_facility", K::choice, R"("mail")", 0, 0,
     "mail|daemon|user|local0|local1|local2|local3|local4|local5|local6|local7", "syslog facility",
     FIELD(log.syslog_facility)},
    {"log.syslog_ident", K::string, R"("calloutd")", 0, 0, "", "syslog program name",
     FIELD(log.syslog_ident)},
    {"log.flush_interval", K::duration, R"("1ms")", 0, kHour, "",
     "longest a log line waits to be written together with later ones (also written at 64 KiB "
     "queued, on SIGHUP and at shutdown)",
     FIELD(log.flush_interval)},
    {"log.socket", K::string, R"("")", 0, 0, "",
     "socket of the syslog or journald target (empty = /dev/log, /run/systemd/journal/socket)",
     FIELD(log.socket)},
    // [policy]
    {"policy.protocol_states", K::state_list, R"(["RCPT"])", 0, 0, "",
     "Postfix protocol_state values that are verified; others are skipped",
     FIELD(policy.protocol_states)},
    {"policy.trusted_networks", K::cidr_list, "[]", 0, 0, "",
     "client networks whose mail is never verified", FIELD(policy.trusted_networks)},
    {"policy.own_domains", K::domain_list, "[]", 0, 0, "",
     "our own domains (and subdomains): never probed; entries as for skip_domains",
     &assign_domains<&PolicySettings::own_domains>},
    {"policy.skip_domains", K::domain_list, R"(["builtin:never-probe"])", 0, 0, "",
     "sender domains (and subdomains) never probed: a domain, \"file:PATH\" (one domain per "
     "line, relative to this file) or \"builtin:never-probe\" (etc/never-probe.list)",
     &assign_domains<&PolicySettings::skip_domains>},
    {"policy.skip_mx_hosts", K::domain_list, R"(["builtin:never-probe-mx"])", 0, 0, "",
     "MX host names (and names below them) never connected to; a domain with such an MX is "
     "answered skipped (skip-mx): entries as for skip_domains, \"builtin:never-probe-mx\" is "
     "etc/never-probe-mx.list",
     &assign_domains<&PolicySettings::skip_mx_hosts>},
    {"policy.dry_run", K::boolean, "false", 0, 0, "", "log verdicts but always answer DUNNO",
     FIELD(policy.dry_run)},
    // [dns]
    {"dns.servers", K::dns_server_list, "[]", 0, 0, "",
     "resolvers as IP, IP:PORT or [V6]:PORT; empty = /etc/resolv.conf", FIELD(dns.servers)},
    {"dns.timeout", K::duration, R"("5s")", 100 * kMs, kMin, "", "timeout of one DNS query try",
     FIELD(dns.timeout)},
    {"dns.tries", K::integer, "2", 1, 10, "", "tries per DNS query", FIELD(dns.tries)},
    {"dns.canary", K::dns_name_or_empty, R"(".")", 0, 0, "",
     "a name that must resolve (\".\" = the root zone's NS set, \"\" = none) before an NXDOMAIN or "
     "MX-less, address-less domain is answered no_mail_domain; while it fails: tempfail",
     FIELD(dns.canary)},
    // [callout]
    {"callout.port", K::integer, "25", 1, 65535, "", "SMTP port probed", FIELD(callout.port)},
    {"callout.helo_name", K::string, R"("")", 0, 0, "",
     "name sent in EHLO/HELO (empty = this host's name)", FIELD(callout.helo_name)},
    {"callout.allow_networks", K::cidr_list, "[]", 0, 0, "",
     "private/loopback/reserved networks that may be probed anyway", FIELD(callout.allow_networks)},
    {"callout.source_address", K::ip_or_empty, R"("")", 0, 0, "",
     "local IP to probe from (empty = chosen by the kernel)", FIELD(callout.source_address)},
    {"callout.connect_timeout", K::duration, R"("10s")", 100 * kMs, 5 * kMin, "",
     "TCP connect timeout per MX address", FIELD(callout.connect_timeout)},
    {"callout.command_timeout", K::duration, R"("30s")", 100 * kMs, 10 * kMin, "",
     "timeout for the banner and each reply", FIELD(callout.command_timeout)},
    {"callout.probe_timeout", K::duration, R"("60s")", kSec, 30 * kMin, "",
     "overall deadline of one probe across all MX hosts", FIELD(callout.probe_timeout)},
    {"callout.max_mx", K::integer, "3", 1, 10, "", "MX hosts tried per probe",
     FIELD(callout.max_mx)},
    {"callout.random_check", K::boolean, "true", 0, 0, "",
     "ask a random local part first to detect accept-all domains (a 2xx is valid only after the "
     "random local part was refused as unknown)",
     FIELD(callout.random_check)},
    {"callout.tls", K::choice, R"("may")", 0, 0, "may|encrypt|none",
     "STARTTLS: may = when offered (a failed handshake is retried once in plaintext), encrypt = "
     "never MAIL FROM without TLS (no STARTTLS offered: tempfail tls-unavailable), none = never",
     FIELD(callout.tls)},
    {"callout.tls_timeout", K::duration, R"("10s")", 100 * kMs, 10 * kMin, "",
     "timeout of the TLS handshake after the server's 220 to STARTTLS (a few round trips; the "
     "probe deadline bounds it too)",
     FIELD(callout.tls_timeout)},
    // [cache]
    {"cache.positive_ttl", K::duration, R"("31d")", kMin, 365 * kDay, "",
     "how long valid and accept_all address verdicts are kept", FIELD(cache.positive_ttl)},
    {"cache.negative_ttl", K::duration, R"("3d")", kMin, 365 * kDay, "",
     "how long invalid verdicts are kept", FIELD(cache.negative_ttl)},
    {"cache.tempfail_ttl", K::duration, R"("10m")", 10 * kSec, 7 * kDay, "",
     "how long tempfail verdicts are kept (and a UTF-8 address skipped for want of SMTPUTF8)",
     FIELD(cache.tempfail_ttl)},
    {"cache.domain_ttl", K::duration, R"("1d")", kMin, 90 * kDay, "",
     "how long accept_all, null_sender_rejected, policy_blocked, no_mail_domain verdicts (domain "
     "facts or one address's) and the not-accept-all fact are kept",
     FIELD(cache.domain_ttl)},
    {"cache.positive_refresh", K::duration, R"("7d")", kMin, 365 * kDay, "",
     "a valid verdict older than this is served and re-probed in the background",
     FIELD(cache.positive_refresh)},
    {"cache.memory_entries", K::integer, "100000", 100, 100'000'000, "",
     "entries kept in the in-memory cache (LRU)", FIELD(cache.memory_entries)},
    // [limits]
    {"limits.domain_rate", K::rate, R"("10/1m")", 0, 0, "", "probes per sender domain",
     FIELD(limits.budgets.domain_rate)},
    {"limits.client_rate", K::rate, R"("60/1m")", 0, 0, "", "probes caused by one client IP",
     FIELD(limits.budgets.client_rate)},
    {"limits.global_rate", K::rate, R"("600/1m")", 0, 0, "", "probes in total",
     FIELD(limits.budgets.global_rate)},
    {"limits.global_concurrency", K::integer, "200", 1, 100'000, "", "probes running at once",
     FIELD(limits.budgets.global_concurrency)},
    {"limits.mx_rate", K::rate, R"("30/1m")", 0, 0, "", "connections per target MX IP",
     FIELD(limits.budgets.mx_rate)},
    {"limits.mx_concurrency", K::integer, "2", 1, 1000, "",
     "concurrent connections per target MX IP", FIELD(limits.budgets.mx_concurrency)},
    {"limits.provider_rate", K::rate, R"("60/1m")", 0, 0, "",
     "connections per provider: the registrable domain of the MX host name, whatever its "
     "number of MX IPs",
     FIELD(limits.budgets.provider_rate)},
    {"limits.client_ipv6_prefix", K::integer, "64", 1, 128, "",
     "IPv6 clients share one client budget per network of this prefix length (IPv4: per "
     "address)",
     FIELD(limits.client_ipv6_prefix)},
    {"limits.backoff_ttl", K::duration, R"("1h")", kMin, 7 * kDay, "",
     "after connection-level push-back (421, banner reject, \"too many connections\"), leave that "
     "MX IP (and the domain, when it decided the probe) alone this long",
     FIELD(limits.backoff_ttl)},
    // [redis]
    {"redis.url", K::string, R"("")", 0, 0, "",
     "shared cache and budgets: redis://[:PASSWORD@]HOST:PORT/DB or unix:PATH; empty = "
     "in-memory",
     FIELD(redis.url)},
    {"redis.sentinels", K::string_list, "[]", 0, 0, "",
     "Redis Sentinels as IP:PORT or [V6]:PORT, asked for the master before every connect; "
     "redis.url then gives only password and db",
     FIELD(redis.sentinels)},
    {"redis.master_name", K::string, R"("")", 0, 0, "",
     "the master's name as the sentinels know it (sentinel monitor NAME ...)",
     FIELD(redis.master_name)},
    {"redis.timeout", K::duration, R"("250ms")", 10 * kMs, kMin, "",
     "deadline of one Redis command", FIELD(redis.timeout)},
    {"redis.near_cache_ttl", K::duration, R"("10s")", 0, kHour, "",
     "how long Redis answers are reused locally", FIELD(redis.near_cache_ttl)},
    {"redis.nodes", K::integer, "1", 1, 1000, "",
     "nodes sharing this Redis; while Redis is out of reach each node spends at most "
     "ceil(limit / nodes) of every budget",
     FIELD(redis.nodes)},
    // [metrics]
    {"metrics.listen", K::string, R"("")", 0, 0, "",
     "Prometheus metrics over HTTP (GET /metrics): \"inet:HOST:PORT\", \"inet:[V6]:PORT\" or "
     "\"unix:PATH\" (empty = off)",
     FIELD(metrics.listen)},
    // [actions]
    {"actions.valid", K::action, R"("DUNNO")", 0, 0, "", "action for valid senders", ACTION(valid)},
    {"actions.invalid", K::action,
     R"("REJECT 5.1.7 The sender's mail server says this address does not exist")", 0, 0, "",
     "action for senders whose mailbox does not exist", ACTION(invalid)},
    {"actions.no_mail_domain", K::action,
     R"("REJECT 5.1.8 The sender's domain does not accept mail")", 0, 0, "",
     "action for sender domains that cannot receive mail", ACTION(no_mail_domain)},
    {"actions.accept_all", K::action, R"("DUNNO")", 0, 0, "",
     "action when the sender's domain accepts every address", ACTION(accept_all)},
    {"actions.null_sender_rejected", K::action, R"("DUNNO")", 0, 0, "",
     "action when the sender's MX rejects MAIL FROM:<>", ACTION(null_sender_rejected)},
    {"actions.policy_blocked", K::action, R"("DUNNO")", 0, 0, "",
     "action when the sender's MX refuses to talk to us", ACTION(policy_blocked)},
    {"actions.tempfail", K::action, R"("DUNNO")", 0, 0, "",
     "action when the probe failed temporarily", ACTION(tempfail)},
    {"actions.in_progress", K::action,
     R"("DEFER_IF_PERMIT 4.1.7 Verifying the sender address, please try again later")", 0, 0, "",
     "action when the probe is still running at reply time", ACTION(in_progress)},
    {"actions.rate_limited", K::action, R"("DUNNO")", 0, 0, "",
     "action when a probe budget is exhausted", ACTION(rate_limited)},
    {"actions.skipped", K::action, R"("DUNNO")", 0, 0, "", "action when a skip rule matched",
     ACTION(skipped)},
};

#undef FIELD
#undef ACTION

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

bool is_protocol_state(std::string_view s) {
    static constexpr std::string_view kStates[] = {"CONNECT", "EHLO", "HELO", "MAIL",
                                                   "RCPT",    "DATA", "BDAT", "END-OF-MESSAGE",
                                                   "VRFY",    "ETRN"};
    return std::find(std::begin(kStates), std::end(kStates), s) != std::end(kStates);
}

bool is_dns_server(std::string_view s) {
    if (IpAddress::parse(s)) return true;
    std::string_view host;
    std::string_view port;
    if (s.starts_with("[")) {
        auto close = s.find("]:");
        if (close == std::string_view::npos) return false;
        host = s.substr(1, close - 1);
        port = s.substr(close + 2);
    } else {
        auto colon = s.find(':');
        if (colon == std::string_view::npos) return false;
        host = s.substr(0, colon);
        port = s.substr(colon + 1);
    }
    auto ip = IpAddress::parse(host);
    if (!ip || ip->is_v4() == s.starts_with("[")) return false;
    if (port.empty() || port.size() > 5) return false;
    int p = 0;
    for (char c : port) {
        if (c < '0' || c > '9') return false;
        p = p * 10 + (c - '0');
    }
    return p >= 1 && p <= 65535;
}

// No configuration string has a use for control bytes, and in one that names an address,
// host or path a NUL silently cuts it short where the C APIs read it (inet_pton, bind, open).
bool refuse_control_bytes(std::string_view s, std::string* error) {
    for (char c : s) {
        auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) {
            char hex[8];
            std::snprintf(hex, sizeof hex, "0x%02x", u);
            *error = "a control character (" + std::string(hex) + ") is not allowed in a value";
            return true;
        }
    }
    return false;
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

std::string range_text(const KeyDef& def) {
    if (def.kind == K::duration) {
        return format_duration(Duration(def.min)) + ".." + format_duration(Duration(def.max));
    }
    return std::to_string(def.min) + ".." + std::to_string(def.max);
}

// Parses each string of an array with `one`, reporting the first bad element.
template <class Out, class Fn>
std::optional<Out> parse_string_array(const toml::node& node, std::string* error, Fn one) {
    const auto* arr = node.as_array();
    if (arr == nullptr) return std::nullopt;
    Out out;
    for (const auto& el : *arr) {
        const auto* s = el.as_string();
        if (s == nullptr) {
            *error = "array elements must be strings, found " + type_name(el);
            return std::nullopt;
        }
        if (refuse_control_bytes(s->get(), error)) return std::nullopt;
        if (!one(out, std::string_view(s->get()), error)) return std::nullopt;
    }
    return out;
}

}  // namespace

std::span<const KeyDef> config_schema() {
    return kSchema;
}

const KeyDef* find_key(std::string_view key) {
    for (const auto& def : kSchema) {
        if (def.key == key) return &def;
    }
    return nullptr;
}

std::optional<ConfigValue> parse_value(const KeyDef& def, const toml::node& node,
                                       std::string* error) {
    std::string why;
    auto wrong_type = [&]() -> std::optional<ConfigValue> {
        if (why.empty()) why = "expected " + expected_name(def.kind) + ", got " + type_name(node);
        *error = std::string(def.key) + ": " + why;
        return std::nullopt;
    };
    const auto* str = node.as_string();
    if (str != nullptr && refuse_control_bytes(str->get(), &why)) return wrong_type();
    switch (def.kind) {
        case K::boolean:
            if (const auto* b = node.as_boolean()) return ConfigValue(b->get());
            return wrong_type();
        case K::integer: {
            const auto* i = node.as_integer();
            if (i == nullptr) return wrong_type();
            if (i->get() < def.min || i->get() > def.max) {
                why = "value " + std::to_string(i->get()) + " is out of range " + range_text(def);
                return wrong_type();
            }
            return ConfigValue(static_cast<int64_t>(i->get()));
        }
        case K::string:
            if (str == nullptr) return wrong_type();
            return ConfigValue(str->get());
        case K::ip_or_empty:
            if (str == nullptr) return wrong_type();
            if (!str->get().empty() && !IpAddress::parse(str->get())) {
                why = "'" + str->get() + "' is not an IP address";
                return wrong_type();
            }
            return ConfigValue(str->get());
        case K::dns_name_or_empty:
            if (str == nullptr) return wrong_type();
            if (!str->get().empty() && str->get() != "." && !is_dns_name(str->get())) {
                why = "'" + str->get() + "' is not a DNS name (letters, digits, '-', '_', dots)";
                return wrong_type();
            }
            return ConfigValue(str->get());
        case K::duration: {
            if (str == nullptr) return wrong_type();
            auto d = parse_duration(str->get(), &why);
            if (!d) return wrong_type();
            if (d->count() < def.min || d->count() > def.max) {
                why = "duration " + str->get() + " is out of range " + range_text(def);
                return wrong_type();
            }
            return ConfigValue(*d);
        }
        case K::rate: {
            if (str == nullptr) return wrong_type();
            auto r = parse_rate(str->get(), &why);
            if (!r) return wrong_type();
            return ConfigValue(*r);
        }
        case K::choice: {
            if (str == nullptr) return wrong_type();
            std::string_view choices = def.choices;
            while (!choices.empty()) {
                auto bar = choices.find('|');
                if (choices.substr(0, bar) == str->get()) return ConfigValue(str->get());
                choices = bar == std::string_view::npos ? "" : choices.substr(bar + 1);
            }
            why = "'" + str->get() + "' is not one of " + std::string(def.choices);
            return wrong_type();
        }
        case K::log_level: {
            if (str == nullptr) return wrong_type();
            if (auto l = parse_log_level(str->get())) return ConfigValue(*l);
            why = "'" + str->get() + "' is not a log level (debug, info, notice, warning, error)";
            return wrong_type();
        }
        case K::file_mode: {
            if (str == nullptr) return wrong_type();
            auto m = parse_file_mode(str->get(), &why);
            if (!m) return wrong_type();
            return ConfigValue(*m);
        }
        case K::action:
            if (str == nullptr) return wrong_type();
            if (!validate_action(str->get(), &why)) return wrong_type();
            return ConfigValue(str->get());
        case K::string_list:
        case K::state_list:
        case K::domain_list:
        case K::dns_server_list: {
            if (node.as_array() == nullptr) return wrong_type();
            auto list = parse_string_array<std::vector<std::string>>(
                node, &why, [&](auto& out, std::string_view s, std::string* err) {
                    std::string v(s);
                    if (def.kind == K::state_list) {
                        if (!is_protocol_state(v)) {
                            *err = "'" + v + "' is not a Postfix protocol_state (RCPT, MAIL, ...)";
                            return false;
                        }
                    } else if (def.kind == K::domain_list) {
                        if (builtin_list(v) || (v.starts_with("file:") && v.size() > 5)) {
                            out.push_back(std::move(v));
                            return true;
                        }
                        // U-labels and A-labels alike, normalised as the probe would.
                        auto domain = list_domain(v);
                        if (!domain) {
                            *err = "'" + v + "' is not a domain name, \"file:PATH\", \"" +
                                   std::string(kBuiltinNeverProbe) + "\" or \"" +
                                   std::string(kBuiltinNeverProbeMx) + "\"";
                            return false;
                        }
                        v = std::move(*domain);
                    } else if (def.kind == K::dns_server_list && !is_dns_server(v)) {
                        *err = "'" + v + "' is not IP, IP:PORT or [V6]:PORT";
                        return false;
                    }
                    out.push_back(std::move(v));
                    return true;
                });
            if (!list) return wrong_type();
            return ConfigValue(std::move(*list));
        }
        case K::cidr_list: {
            if (node.as_array() == nullptr) return wrong_type();
            auto nets = parse_string_array<std::vector<Cidr>>(
                node, &why, [](auto& out, std::string_view s, std::string* err) {
                    auto c = Cidr::parse(s, err);
                    if (c) out.push_back(*c);
                    return c.has_value();
                });
            if (!nets) return wrong_type();
            return ConfigValue(CidrSet(std::move(*nets)));
        }
        case K::listen_list: {
            if (node.as_array() == nullptr) return wrong_type();
            auto addrs = parse_string_array<std::vector<ListenAddress>>(
                node, &why, [](auto& out, std::string_view s, std::string* err) {
                    auto a = parse_listen_address(s, err);
                    if (a) out.push_back(*a);
                    return a.has_value();
                });
            if (!addrs) return wrong_type();
            if (addrs->empty()) {
                why = "at least one listener is needed";
                return wrong_type();
            }
            return ConfigValue(std::move(*addrs));
        }
    }
    return wrong_type();
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
        std::fprintf(stderr, "default_value: bad default for %s: %s\n",
                     std::string(def.key).c_str(), error.c_str());
        std::abort();
    }
    return std::move(*v);
}

}  // namespace calloutd
