// The configuration schema: one row per key, made by a builder per value kind.
#include "daemon/config_schema.hpp"

#include <chrono>

#include "policy/domain_list.hpp"

namespace calloutd {

namespace {

using namespace std::chrono_literals;
using std::chrono::days;

// How a key reaches its Config member: store a parsed value, compare two configurations.
struct Field {
    void (*apply)(Config&, ConfigValue&&);
    bool (*same)(const Config&, const Config&);
    void (*keep)(Config& next, const Config& running);
};

template <class T>
void assign(T& dst, ConfigValue&& v) {
    dst = std::get<T>(std::move(v));
}

template <VerdictClass C>
void assign_action(Config& c, ConfigValue&& v) {
    c.policy.actions[static_cast<size_t>(C)] = std::get<std::string>(std::move(v));
}

template <VerdictClass C>
bool same_action(const Config& a, const Config& b) {
    return a.policy.actions[static_cast<size_t>(C)] == b.policy.actions[static_cast<size_t>(C)];
}

template <VerdictClass C>
void keep_action(Config& next, const Config& running) {
    next.policy.actions[static_cast<size_t>(C)] = running.policy.actions[static_cast<size_t>(C)];
}

// Domain lists arrive expanded (the loader reads "file:" and "builtin:" entries).
template <DomainSet PolicySettings::*Member>
void assign_domains(Config& c, ConfigValue&& v) {
    c.policy.*Member = DomainSet(std::get<std::vector<std::string>>(v));
}

// clang-format off
#define FIELD(member)                                                                      \
    Field{[](Config& c, ConfigValue&& v) { assign(c.member, std::move(v)); },              \
          [](const Config& a, const Config& b) { return a.member == b.member; },           \
          [](Config& n, const Config& r) { n.member = r.member; }}
#define DOMAINS(member)                                                                    \
    Field{&assign_domains<&PolicySettings::member>,                                        \
          [](const Config& a, const Config& b) { return a.policy.member == b.policy.member; }, \
          [](Config& n, const Config& r) { n.policy.member = r.policy.member; }}
#define ACTION(cls)                                                                        \
    Field{&assign_action<VerdictClass::cls>, &same_action<VerdictClass::cls>,              \
          &keep_action<VerdictClass::cls>}
// clang-format on

constexpr KeyDef row(std::string_view key, ValueKind kind, Reload reload,
                     std::string_view default_toml, std::string_view doc, Field field) {
    KeyDef def;
    def.key = key;
    def.kind = kind;
    def.reload = reload;
    def.default_toml = default_toml;
    def.doc = doc;
    def.apply = field.apply;
    def.same = field.same;
    def.keep = field.keep;
    return def;
}

// One builder per kind: only the arguments that kind has.
constexpr KeyDef integer_key(std::string_view key, Reload reload, std::string_view default_toml,
                             int64_t min, int64_t max, std::string_view doc, Field field) {
    KeyDef def = row(key, ValueKind::integer, reload, default_toml, doc, field);
    def.min = min;
    def.max = max;
    return def;
}

constexpr KeyDef duration_key(std::string_view key, Reload reload, std::string_view default_toml,
                              Duration min, Duration max, std::string_view doc, Field field) {
    KeyDef def = row(key, ValueKind::duration, reload, default_toml, doc, field);
    def.min = min.count();
    def.max = max.count();
    return def;
}

constexpr KeyDef choice_key(std::string_view key, Reload reload, std::string_view default_toml,
                            std::string_view choices, std::string_view doc, Field field) {
    KeyDef def = row(key, ValueKind::choice, reload, default_toml, doc, field);
    def.choices = choices;
    return def;
}

// The kinds that take nothing but key, reload, default, doc and field.
template <ValueKind Kind>
constexpr KeyDef plain_key(std::string_view key, Reload reload, std::string_view default_toml,
                           std::string_view doc, Field field) {
    return row(key, Kind, reload, default_toml, doc, field);
}
constexpr auto boolean_key = &plain_key<ValueKind::boolean>;
constexpr auto string_key = &plain_key<ValueKind::string>;
constexpr auto ip_key = &plain_key<ValueKind::ip_or_empty>;
constexpr auto dns_name_key = &plain_key<ValueKind::dns_name_or_empty>;
constexpr auto rate_key = &plain_key<ValueKind::rate>;
constexpr auto log_level_key = &plain_key<ValueKind::log_level>;
constexpr auto file_mode_key = &plain_key<ValueKind::file_mode>;
constexpr auto action_key = &plain_key<ValueKind::action>;
constexpr auto string_list_key = &plain_key<ValueKind::string_list>;
constexpr auto state_list_key = &plain_key<ValueKind::state_list>;
constexpr auto domain_list_key = &plain_key<ValueKind::domain_list>;
constexpr auto dns_server_list_key = &plain_key<ValueKind::dns_server_list>;
constexpr auto cidr_list_key = &plain_key<ValueKind::cidr_list>;
constexpr auto listen_list_key = &plain_key<ValueKind::listen_list>;

// Reload::restart marks what the running daemon cannot change: listeners and sockets, the
// identity it dropped to, the resolver and probe settings the callout was built with, the cache
// size, and the Redis connection.
constexpr KeyDef kSchema[] = {
    // [server]
    listen_list_key("server.listen", Reload::restart, R"(["inet:127.0.0.1:10023"])",
                    "policy listeners: inet:HOST:PORT, inet:[V6]:PORT, unix:PATH",
                    FIELD(server.listen)),
    duration_key("server.reply_timeout", Reload::live, R"("10s")", 100ms, 1h,
                 "answer budget per request; a probe still running then gets actions.in_progress",
                 FIELD(server.reply_timeout)),
    integer_key("server.max_connections", Reload::live, "1024", 1, 1'000'000,
                "concurrent policy connections; more are closed at once",
                FIELD(server.max_connections)),
    integer_key("server.max_line_bytes", Reload::live, "4096", 64, 1 << 20,
                "longest attribute line accepted", FIELD(server.max_line_bytes)),
    integer_key("server.max_request_bytes", Reload::live, "16384", 256, 16 << 20,
                "largest request accepted", FIELD(server.max_request_bytes)),
    duration_key(
        "server.idle_timeout", Reload::live, R"("10m")", 1s, days(1),
        "close a connection idle this long (longer than Postfix's smtpd_policy_service_max_idle)",
        FIELD(server.idle_timeout)),
    duration_key("server.request_timeout", Reload::live, R"("10s")", 1s, 1h,
                 "a request must be complete this long after its first bytes arrived; slower "
                 "clients (slowloris) are closed",
                 FIELD(server.request_timeout)),
    duration_key("server.shutdown_timeout", Reload::live, R"("10s")", 0ms, 10min,
                 "on SIGTERM, how long in-flight requests may still be answered",
                 FIELD(server.shutdown_timeout)),
    file_mode_key("server.socket_mode", Reload::restart, R"("0666")",
                  "permissions of unix listener sockets", FIELD(server.socket_mode)),
    string_key("server.user", Reload::restart, R"("")",
               "user to run as after binding listeners (empty = do not change)",
               FIELD(server.user)),
    string_key("server.group", Reload::restart, R"("")",
               "group to run as after binding listeners (empty = the user's group)",
               FIELD(server.group)),
    string_key(
        "server.control_socket", Reload::restart, R"("/run/calloutd/control.sock")",
        "unix socket (mode 0660) where `calloutd status` and `calloutd cache` reach the running "
        "daemon (empty = none)",
        FIELD(server.control_socket)),
    choice_key("server.io_uring", Reload::restart, R"("auto")", "auto|on|off",
               "policy connections' receives and sends, batched into one io_uring system call "
               "per loop iteration; auto = when the kernel allows it, on = refuse to start "
               "without it, off = one recv/send system call each",
               FIELD(server.io_uring)),
    // [log]
    choice_key("log.target", Reload::live, R"("stderr")", "stderr|syslog|journald",
               "where log lines go", FIELD(log.target)),
    log_level_key("log.level", Reload::live, R"("info")", "debug, info, notice, warning or error",
                  FIELD(log.level)),
    choice_key("log.syslog_facility", Reload::live, R"("mail")",
               "mail|daemon|user|local0|local1|local2|local3|local4|local5|local6|local7",
               "syslog facility", FIELD(log.syslog_facility)),
    string_key("log.syslog_ident", Reload::live, R"("calloutd")", "syslog program name",
               FIELD(log.syslog_ident)),
    duration_key(
        "log.flush_interval", Reload::live, R"("1ms")", 0ms, 1h,
        "longest a log line waits to be written together with later ones (also written at 64 KiB "
        "queued, on SIGHUP and at shutdown)",
        FIELD(log.flush_interval)),
    boolean_key(
        "log.write_behind", Reload::live, "true",
        "log to a regular file: start the disk write of each MiB once written and drop the cached "
        "pages of lines more than 4 MiB back (false = leave them to the kernel)",
        FIELD(log.write_behind)),
    string_key(
        "log.socket", Reload::live, R"("")",
        "socket of the syslog or journald target (empty = /dev/log, /run/systemd/journal/socket)",
        FIELD(log.socket)),
    // [policy]
    state_list_key("policy.protocol_states", Reload::live, R"(["RCPT"])",
                   "Postfix protocol_state values that are verified; others are skipped",
                   FIELD(policy.protocol_states)),
    cidr_list_key("policy.trusted_networks", Reload::live, "[]",
                  "client networks whose mail is never verified", FIELD(policy.trusted_networks)),
    domain_list_key("policy.own_domains", Reload::live, "[]",
                    "our own domains (and subdomains): never probed; entries as for skip_domains",
                    DOMAINS(own_domains)),
    domain_list_key(
        "policy.skip_domains", Reload::live, R"(["builtin:never-probe"])",
        "sender domains (and subdomains) never probed: a domain, \"file:PATH\" (one domain per "
        "line, relative to this file) or \"builtin:never-probe\" (etc/never-probe.list)",
        DOMAINS(skip_domains)),
    domain_list_key(
        "policy.skip_mx_hosts", Reload::live, R"(["builtin:never-probe-mx"])",
        "MX host names (and names below them) never connected to; a domain with such an MX is "
        "answered skipped (skip-mx): entries as for skip_domains, \"builtin:never-probe-mx\" is "
        "etc/never-probe-mx.list",
        DOMAINS(skip_mx_hosts)),
    boolean_key("policy.dry_run", Reload::live, "false", "log verdicts but always answer DUNNO",
                FIELD(policy.dry_run)),
    // [dns]
    dns_server_list_key("dns.servers", Reload::restart, "[]",
                        "resolvers as IP, IP:PORT or [V6]:PORT; empty = /etc/resolv.conf",
                        FIELD(dns.servers)),
    duration_key("dns.timeout", Reload::restart, R"("5s")", 100ms, 1min,
                 "timeout of one DNS query try", FIELD(dns.timeout)),
    integer_key("dns.tries", Reload::restart, "2", 1, 10, "tries per DNS query", FIELD(dns.tries)),
    dns_name_key(
        "dns.canary", Reload::restart, R"(".")",
        "a name that must resolve (\".\" = the root zone's NS set, \"\" = none) before an NXDOMAIN "
        "or "
        "MX-less, address-less domain is answered no_mail_domain; while it fails: tempfail",
        FIELD(dns.canary)),
    // [callout]
    integer_key("callout.port", Reload::restart, "25", 1, 65535, "SMTP port probed",
                FIELD(callout.port)),
    string_key("callout.helo_name", Reload::restart, R"("")",
               "name sent in EHLO/HELO (empty = this host's name)", FIELD(callout.helo_name)),
    cidr_list_key("callout.allow_networks", Reload::restart, "[]",
                  "private/loopback/reserved networks that may be probed anyway",
                  FIELD(callout.allow_networks)),
    ip_key("callout.source_address", Reload::restart, R"("")",
           "local IP to probe from (empty = chosen by the kernel)", FIELD(callout.source_address)),
    duration_key("callout.connect_timeout", Reload::restart, R"("10s")", 100ms, 5min,
                 "TCP connect timeout per MX address", FIELD(callout.connect_timeout)),
    duration_key("callout.command_timeout", Reload::restart, R"("30s")", 100ms, 10min,
                 "timeout for the banner and each reply", FIELD(callout.command_timeout)),
    duration_key("callout.probe_timeout", Reload::restart, R"("60s")", 1s, 30min,
                 "overall deadline of one probe across all MX hosts", FIELD(callout.probe_timeout)),
    integer_key("callout.max_mx", Reload::restart, "3", 1, 10, "MX hosts tried per probe",
                FIELD(callout.max_mx)),
    boolean_key(
        "callout.random_check", Reload::restart, "true",
        "ask a random local part first to detect accept-all domains (a 2xx is valid only after the "
        "random local part was refused as unknown)",
        FIELD(callout.random_check)),
    choice_key(
        "callout.tls", Reload::restart, R"("may")", "may|encrypt|none",
        "STARTTLS: may = when offered (a failed handshake is retried once in plaintext), encrypt = "
        "never MAIL FROM without TLS (no STARTTLS offered: tempfail tls-unavailable), none = never",
        FIELD(callout.tls)),
    duration_key(
        "callout.tls_timeout", Reload::restart, R"("10s")", 100ms, 10min,
        "timeout of the TLS handshake after the server's 220 to STARTTLS (a few round trips; the "
        "probe deadline bounds it too)",
        FIELD(callout.tls_timeout)),
    // [cache]
    duration_key("cache.positive_ttl", Reload::live, R"("31d")", 1min, days(365),
                 "how long valid and accept_all address verdicts are kept",
                 FIELD(cache.positive_ttl)),
    duration_key("cache.negative_ttl", Reload::live, R"("3d")", 1min, days(365),
                 "how long invalid verdicts are kept", FIELD(cache.negative_ttl)),
    duration_key(
        "cache.tempfail_ttl", Reload::live, R"("10m")", 10s, days(7),
        "how long tempfail verdicts are kept (and a UTF-8 address skipped for want of SMTPUTF8)",
        FIELD(cache.tempfail_ttl)),
    duration_key("cache.domain_ttl", Reload::live, R"("1d")", 1min, days(90),
                 "how long accept_all, null_sender_rejected, policy_blocked, no_mail_domain "
                 "verdicts (domain "
                 "facts or one address's) and the not-accept-all fact are kept",
                 FIELD(cache.domain_ttl)),
    duration_key("cache.positive_refresh", Reload::live, R"("7d")", 1min, days(365),
                 "a valid verdict older than this is served and re-probed in the background",
                 FIELD(cache.positive_refresh)),
    integer_key("cache.memory_entries", Reload::restart, "100000", 100, 100'000'000,
                "entries kept in the in-memory cache (LRU)", FIELD(cache.memory_entries)),
    // [limits]
    rate_key("limits.domain_rate", Reload::live, R"("10/1m")", "probes per sender domain",
             FIELD(limits.budgets.domain_rate)),
    rate_key("limits.client_rate", Reload::live, R"("60/1m")", "probes caused by one client IP",
             FIELD(limits.budgets.client_rate)),
    rate_key("limits.global_rate", Reload::live, R"("600/1m")", "probes in total",
             FIELD(limits.budgets.global_rate)),
    integer_key("limits.global_concurrency", Reload::live, "200", 1, 100'000,
                "probes running at once", FIELD(limits.budgets.global_concurrency)),
    rate_key("limits.mx_rate", Reload::live, R"("30/1m")", "connections per target MX IP",
             FIELD(limits.budgets.mx_rate)),
    integer_key("limits.mx_concurrency", Reload::live, "2", 1, 1000,
                "concurrent connections per target MX IP", FIELD(limits.budgets.mx_concurrency)),
    rate_key("limits.provider_rate", Reload::live, R"("60/1m")",
             "connections per provider: the registrable domain of the MX host name, whatever its "
             "number of MX IPs",
             FIELD(limits.budgets.provider_rate)),
    integer_key("limits.client_ipv6_prefix", Reload::live, "64", 1, 128,
                "IPv6 clients share one client budget per network of this prefix length (IPv4: per "
                "address)",
                FIELD(limits.client_ipv6_prefix)),
    duration_key("limits.backoff_ttl", Reload::live, R"("1h")", 1min, days(7),
                 "after connection-level push-back (421, banner reject, \"too many connections\"), "
                 "leave that "
                 "MX IP (and the domain, when it decided the probe) alone this long",
                 FIELD(limits.backoff_ttl)),
    // [redis]
    string_key("redis.url", Reload::restart, R"("")",
               "shared cache and budgets: redis://[:PASSWORD@]HOST:PORT/DB or unix:PATH; empty = "
               "in-memory",
               FIELD(redis.url)),
    string_list_key(
        "redis.sentinels", Reload::restart, "[]",
        "Redis Sentinels as IP:PORT or [V6]:PORT, asked for the master before every connect; "
        "redis.url then gives only password and db",
        FIELD(redis.sentinels)),
    string_key("redis.master_name", Reload::restart, R"("")",
               "the master's name as the sentinels know it (sentinel monitor NAME ...)",
               FIELD(redis.master_name)),
    duration_key("redis.timeout", Reload::restart, R"("250ms")", 10ms, 1min,
                 "deadline of one Redis command", FIELD(redis.timeout)),
    duration_key("redis.near_cache_ttl", Reload::restart, R"("10s")", 0ms, 1h,
                 "how long Redis answers are reused locally", FIELD(redis.near_cache_ttl)),
    integer_key("redis.nodes", Reload::restart, "1", 1, 1000,
                "nodes sharing this Redis; while Redis is out of reach each node spends at most "
                "ceil(limit / nodes) of every budget",
                FIELD(redis.nodes)),
    // [metrics]
    string_key(
        "metrics.listen", Reload::restart, R"("")",
        "Prometheus metrics over HTTP (GET /metrics): \"inet:HOST:PORT\", \"inet:[V6]:PORT\" or "
        "\"unix:PATH\" (empty = off)",
        FIELD(metrics.listen)),
    // [actions]
    action_key("actions.valid", Reload::live, R"("DUNNO")", "action for valid senders",
               ACTION(valid)),
    action_key("actions.invalid", Reload::live,
               R"("REJECT 5.1.7 The sender's mail server says this address does not exist")",
               "action for senders whose mailbox does not exist", ACTION(invalid)),
    action_key("actions.no_mail_domain", Reload::live,
               R"("REJECT 5.1.8 The sender's domain does not accept mail")",
               "action for sender domains that cannot receive mail", ACTION(no_mail_domain)),
    action_key("actions.accept_all", Reload::live, R"("DUNNO")",
               "action when the sender's domain accepts every address", ACTION(accept_all)),
    action_key("actions.null_sender_rejected", Reload::live, R"("DUNNO")",
               "action when the sender's MX rejects MAIL FROM:<>", ACTION(null_sender_rejected)),
    action_key("actions.policy_blocked", Reload::live, R"("DUNNO")",
               "action when the sender's MX refuses to talk to us", ACTION(policy_blocked)),
    action_key("actions.tempfail", Reload::live, R"("DUNNO")",
               "action when the probe failed temporarily", ACTION(tempfail)),
    action_key("actions.in_progress", Reload::live,
               R"("DEFER_IF_PERMIT 4.1.7 Verifying the sender address, please try again later")",
               "action when the probe is still running at reply time", ACTION(in_progress)),
    action_key("actions.rate_limited", Reload::live, R"("DUNNO")",
               "action when a probe budget is exhausted", ACTION(rate_limited)),
    action_key("actions.skipped", Reload::live, R"("DUNNO")", "action when a skip rule matched",
               ACTION(skipped)),
};

#undef FIELD
#undef DOMAINS
#undef ACTION

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

std::vector<std::string_view> restart_keys_changed(const Config& running, const Config& next) {
    std::vector<std::string_view> changed;
    for (const auto& def : kSchema) {
        if (def.reload == Reload::restart && !def.same(running, next)) changed.push_back(def.key);
    }
    return changed;
}

void keep_restart_keys(const Config& running, Config& next) {
    for (const auto& def : kSchema) {
        if (def.reload == Reload::restart) def.keep(next, running);
    }
}

}  // namespace calloutd
