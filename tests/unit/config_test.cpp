// Configuration: value parsers, schema defaults, error positions, and the sample file.
// Over 500 lines as one concept: the schema's tests, one value kind and one error case at a time.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "daemon/config.hpp"
#include "daemon/config_schema.hpp"
#include "daemon/config_values.hpp"
#include "policy/domain_list.hpp"
#include "support/paths.hpp"

namespace calloutd {
namespace {

using namespace std::chrono_literals;

TEST(ConfigValues, Durations) {
    struct {
        const char* text;
        Duration want;
    } good[] = {{"250ms", 250ms},  {"15s", 15s},     {"5m", 5min}, {"3h", 3h},
                {"31d", 31 * 24h}, {"2w", 14 * 24h}, {"0s", 0ms}};
    for (auto& g : good) EXPECT_EQ(parse_duration(g.text, nullptr), g.want) << g.text;
    for (const char* bad :
         {"", "15", "s", "-5s", "1.5s", "15 s", "15sec", "5M", "1h30m", "99999999999999d", " 5s"}) {
        std::string err;
        EXPECT_FALSE(parse_duration(bad, &err)) << bad;
        EXPECT_FALSE(err.empty()) << bad;
    }
    EXPECT_EQ(format_duration(90s), "90s");
    EXPECT_EQ(format_duration(5min), "5m");
    EXPECT_EQ(format_duration(250ms), "250ms");
    EXPECT_EQ(format_duration(31 * 24h), "31d");
}

TEST(ConfigValues, Rates) {
    EXPECT_EQ(parse_rate("10/1m", nullptr), (Rate{10, 1min, false}));
    EXPECT_EQ(parse_rate("600/1h", nullptr), (Rate{600, 1h, false}));
    EXPECT_EQ(parse_rate("1/250ms", nullptr), (Rate{1, 250ms, false}));
    EXPECT_TRUE(parse_rate("unlimited", nullptr)->unlimited);
    for (const char* bad :
         {"", "10", "10/", "/1m", "0/1m", "10/0s", "10/m", "-1/1m", "x/1m", "10/1m/2", "10 / 1m"}) {
        std::string err;
        EXPECT_FALSE(parse_rate(bad, &err)) << bad;
        EXPECT_FALSE(err.empty()) << bad;
    }
}

TEST(ConfigValues, ListenAddresses) {
    auto a = parse_listen_address("inet:127.0.0.1:10023", nullptr);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->kind, ListenAddress::Kind::inet);
    EXPECT_EQ(a->host, "127.0.0.1");
    EXPECT_EQ(a->port, 10023);
    auto b = parse_listen_address("inet:[::1]:10023", nullptr);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->host, "::1");
    EXPECT_EQ(parse_listen_address("inet:localhost:25", nullptr)->host, "127.0.0.1");
    auto u = parse_listen_address("unix:/run/calloutd/policy.sock", nullptr);
    ASSERT_TRUE(u);
    EXPECT_EQ(u->kind, ListenAddress::Kind::unix_socket);
    EXPECT_EQ(u->path, "/run/calloutd/policy.sock");
    for (const char* bad :
         {"127.0.0.1:10023", "inet:127.0.0.1", "inet:127.0.0.1:70000", "inet:::1:10023",
          "inet:[127.0.0.1]:25", "inet:[::1]10023", "inet:mail.example.org:25",
          "unix:", "tcp:127.0.0.1:1", "inet:127.0.0.1:x"}) {
        std::string err;
        EXPECT_FALSE(parse_listen_address(bad, &err)) << bad;
        EXPECT_FALSE(err.empty()) << bad;
    }
    EXPECT_FALSE(parse_listen_address("unix:/" + std::string(200, 'x'), nullptr));
    // Found by fuzzing: a leading NUL names a Linux abstract socket, one inside cuts the path.
    using namespace std::string_literals;
    for (const std::string& bad : {"unix:\0abstract"s, "unix:/run/a\0b.sock"s,
                                   "inet:127.0.0.1\0x:25"s, "unix:/run/a\nb.sock"s}) {
        std::string err;
        EXPECT_FALSE(parse_listen_address(bad, &err)) << bad;
        EXPECT_FALSE(err.empty()) << bad;
    }
}

TEST(ConfigValues, Actions) {
    for (const char* good :
         {"DUNNO", "OK", "REJECT", "REJECT 5.1.7 no such user", "DEFER_IF_PERMIT 4.1.7 in progress",
          "450 4.1.7 try later", "550 5.1.7 no", "WARN suspicious sender", "HOLD"}) {
        EXPECT_TRUE(validate_action(good, nullptr)) << good;
    }
    for (const char* bad :
         {"", "450", "550 ", "dunno", "ACCEPT", "WARN", "250 ok", "REJECT bad\r\nx", "REJECT\tx"}) {
        std::string err;
        EXPECT_FALSE(validate_action(bad, &err)) << bad;
        EXPECT_FALSE(err.empty()) << bad;
    }
}

TEST(ConfigSchema, EveryDefaultParsesAndKeysAreUnique) {
    std::set<std::string_view> seen;
    for (const auto& def : config_schema()) {
        EXPECT_TRUE(seen.insert(def.key).second) << def.key;
        EXPECT_FALSE(def.doc.empty()) << def.key;
        (void)default_value(def);  // aborts on a broken default
    }
    // One action key per verdict class.
    for (auto c : kAllVerdictClasses) {
        EXPECT_NE(find_key("actions." + std::string(to_string(c))), nullptr) << to_string(c);
    }
}

// Another value of the same type, for the comparator test below.
ConfigValue changed(ConfigValue v) {
    struct Change {
        ConfigValue operator()(bool b) const { return !b; }
        ConfigValue operator()(int64_t i) const { return i + 1; }
        ConfigValue operator()(const std::string& s) const { return s + "x"; }
        ConfigValue operator()(Duration d) const { return d + 1ms; }
        ConfigValue operator()(Rate r) const { return Rate{r.count + 1, r.period, false}; }
        ConfigValue operator()(LogLevel l) const {
            return l == LogLevel::debug ? LogLevel::error : LogLevel::debug;
        }
        ConfigValue operator()(std::vector<std::string> list) const {
            list.push_back("changed.example");
            return list;
        }
        ConfigValue operator()(const CidrSet& set) const {
            auto nets = set.networks();
            nets.push_back(*Cidr::parse("192.0.2.0/24"));
            return CidrSet(nets);
        }
        ConfigValue operator()(std::vector<ListenAddress> list) const {
            list.push_back(*parse_listen_address("inet:127.0.0.1:1", nullptr));
            return list;
        }
    };
    return std::visit(Change{}, std::move(v));
}

// Each key's comparator sees a change of that key, and a reload reports exactly the changed
// keys that need a restart.
TEST(ConfigSchema, ReloadSeesEveryChangedKeyAndReportsThoseNeedingARestart) {
    Config running;
    for (const auto& def : config_schema()) def.apply(running, default_value(def));
    EXPECT_TRUE(restart_keys_changed(running, running).empty());
    for (const auto& def : config_schema()) {
        Config next = running;
        def.apply(next, changed(default_value(def)));
        EXPECT_FALSE(def.same(running, next)) << def.key;
        auto keys = restart_keys_changed(running, next);
        if (def.reload == Reload::restart) {
            EXPECT_EQ(keys, std::vector<std::string_view>{def.key});
        } else {
            EXPECT_TRUE(keys.empty()) << def.key;
        }
    }
}

// A reload keeps the running value of every restart key and takes every live key's new value.
TEST(ConfigSchema, ReloadKeepsTheRunningValueOfEveryRestartKey) {
    Config running;
    for (const auto& def : config_schema()) def.apply(running, default_value(def));
    for (const auto& def : config_schema()) {
        Config next = running;
        def.apply(next, changed(default_value(def)));
        keep_restart_keys(running, next);
        EXPECT_EQ(def.same(running, next), def.reload == Reload::restart) << def.key;
        EXPECT_TRUE(restart_keys_changed(running, next).empty()) << def.key;
    }
}

// What SIGHUP cannot apply: the sockets and identity set up at start, and the parts of the
// engine built once (resolver, probe settings, cache size, Redis).
TEST(ConfigSchema, RestartKeys) {
    std::set<std::string> restart;
    for (const auto& def : config_schema()) {
        if (def.reload == Reload::restart) restart.insert(std::string(def.key));
    }
    for (const char* key :
         {"server.listen", "server.socket_mode", "server.user", "server.group",
          "server.control_socket", "server.io_uring", "dns.servers", "dns.canary", "callout.port",
          "callout.tls", "cache.memory_entries", "redis.url", "redis.nodes", "metrics.listen"}) {
        EXPECT_TRUE(restart.contains(key)) << key;
    }
    for (const char* key : {"server.reply_timeout", "server.max_connections", "log.level",
                            "policy.dry_run", "policy.skip_domains", "cache.positive_ttl",
                            "limits.domain_rate", "limits.backoff_ttl", "actions.invalid"}) {
        EXPECT_FALSE(restart.contains(key)) << key;
    }
}

TEST(ConfigSchema, StableKeysFromDesignExist) {
    for (const char* key : {"server.listen",
                            "server.reply_timeout",
                            "dns.servers",
                            "callout.port",
                            "callout.helo_name",
                            "callout.allow_networks",
                            "cache.positive_ttl",
                            "cache.negative_ttl",
                            "cache.tempfail_ttl",
                            "limits.domain_rate",
                            "limits.client_rate",
                            "limits.global_rate",
                            "limits.mx_rate",
                            "limits.mx_concurrency",
                            "redis.url",
                            "policy.dry_run",
                            "policy.skip_mx_hosts",
                            "limits.provider_rate",
                            "limits.client_ipv6_prefix",
                            "redis.nodes",
                            "callout.tls"}) {
        EXPECT_NE(find_key(key), nullptr) << key;
    }
}

Config load_ok(const std::string& text) {
    auto r = load_config_text(text, "test.toml");
    if (auto* errs = std::get_if<std::vector<std::string>>(&r)) {
        ADD_FAILURE() << "unexpected errors: " << (errs->empty() ? "" : errs->front());
        return {};
    }
    return std::get<Config>(std::move(r));
}

std::vector<std::string> load_errors(const std::string& text) {
    auto r = load_config_text(text, "test.toml");
    if (auto* errs = std::get_if<std::vector<std::string>>(&r)) return *errs;
    return {};
}

TEST(Config, EmptyFileGivesDefaults) {
    Config c = load_ok("");
    ASSERT_EQ(c.server.listen.size(), 1u);
    EXPECT_EQ(c.server.listen[0].port, 10023);
    EXPECT_EQ(c.server.reply_timeout, 10s);
    EXPECT_EQ(c.policy.protocol_states, std::vector<std::string>{"RCPT"});
    EXPECT_EQ(c.limits.budgets.domain_rate, (Rate{10, 1min, false}));
    EXPECT_EQ(c.policy.actions[static_cast<size_t>(VerdictClass::valid)], "DUNNO");
    EXPECT_TRUE(
        c.policy.actions[static_cast<size_t>(VerdictClass::invalid)].starts_with("REJECT 5.1.7 "));
}

TEST(Config, ValuesAreApplied) {
    Config c = load_ok(R"(
[server]
listen = ["inet:[::1]:9999", "unix:/tmp/x.sock"]
reply_timeout = "250ms"
[policy]
trusted_networks = ["192.0.2.0/24", "2001:db8::/32"]
own_domains = ["Example.ORG"]
[limits]
domain_rate = "5/1h"
[actions]
invalid = "550 5.1.1 no"
)");
    EXPECT_EQ(c.server.listen.size(), 2u);
    EXPECT_EQ(c.server.reply_timeout, 250ms);
    EXPECT_TRUE(c.policy.trusted_networks.contains(*IpAddress::parse("192.0.2.77")));
    EXPECT_TRUE(c.policy.own_domains.matches("example.org"));
    EXPECT_TRUE(c.policy.own_domains.matches("lists.example.org"));
    EXPECT_EQ(c.policy.own_domains.size(), 1u);
    EXPECT_EQ(c.limits.budgets.domain_rate, (Rate{5, 1h, false}));
    EXPECT_EQ(c.policy.actions[static_cast<size_t>(VerdictClass::invalid)], "550 5.1.1 no");
}

struct ErrorCase {
    const char* name;
    const char* text;
    const char* where;    // "LINE:COL"
    const char* message;  // substring
};

class ConfigErrors : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(ConfigErrors, ReportsFileLineAndReason) {
    const auto& c = GetParam();
    auto errs = load_errors(c.text);
    ASSERT_EQ(errs.size(), 1u) << (errs.empty() ? "no error" : errs.back());
    EXPECT_TRUE(errs[0].starts_with(std::string("test.toml:") + c.where + ": ")) << errs[0];
    EXPECT_NE(errs[0].find(c.message), std::string::npos) << errs[0];
}

INSTANTIATE_TEST_SUITE_P(
    Table, ConfigErrors,
    ::testing::Values(
        ErrorCase{"empty_listen", "[server]\nlisten = []\n", "2:10", "at least one listener"},
        ErrorCase{"unknown_key_in_section", "[server]\n\n  bogus = 1\n", "3:3",
                  "unknown key 'server.bogus'"},
        ErrorCase{"unknown_section", "# c\n[nosuch]\nx = 1\n", "2:2", "unknown key 'nosuch'"},
        ErrorCase{"unknown_top_level", "speed = 3\n", "1:1", "unknown key 'speed'"},
        ErrorCase{"wrong_type_duration", "[server]\nreply_timeout = 15\n", "2:17",
                  "expected a duration string"},
        ErrorCase{"bad_duration", "[server]\nreply_timeout = \"15 seconds\"\n", "2:17",
                  "is not a duration"},
        ErrorCase{"duration_out_of_range", "[server]\nreply_timeout = \"2h\"\n", "2:17",
                  "out of range 100ms..1h"},
        ErrorCase{"integer_out_of_range", "[callout]\nport = 70000\n", "2:8",
                  "out of range 1..65535"},
        ErrorCase{"wrong_type_bool", "[policy]\ndry_run = \"yes\"\n", "2:11", "expected a boolean"},
        ErrorCase{"bad_rate", "[limits]\ndomain_rate = \"ten per minute\"\n", "2:15",
                  "is not a rate"},
        ErrorCase{"bad_cidr", "[policy]\ntrusted_networks = [\"10.0.0.0/8\", \"10.1.2.3/8\"]\n",
                  "2:20", "host bits"},
        ErrorCase{"cidr_not_string", "[callout]\nallow_networks = [10]\n", "2:18",
                  "must be strings"},
        ErrorCase{"bad_listen", "[server]\nlisten = [\"tcp:1.2.3.4:5\"]\n", "2:10",
                  "not a listen address"},
        ErrorCase{"bad_action", "[actions]\ninvalid = \"550\"\n", "2:11", "needs text"},
        ErrorCase{"bad_state", "[policy]\nprotocol_states = [\"RCPT\", \"rcpt\"]\n", "2:19",
                  "protocol_state"},
        ErrorCase{"bad_log_level", "[log]\nlevel = \"loud\"\n", "2:9", "not a log level"},
        ErrorCase{"bad_dns_server", "[dns]\nservers = [\"1.2.3.4:99999\"]\n", "2:11", "IP:PORT"},
        ErrorCase{"toml_syntax", "[server]\nreply_timeout = \"15s\n", "2:21",
                  "Error while parsing"},
        ErrorCase{"section_not_table", "server = 5\n", "1:1", "must be a table"},
        ErrorCase{"relation", "[server]\nmax_request_bytes = 1000\nmax_line_bytes = 2000\n", "3:18",
                  "must not exceed"},
        ErrorCase{"bad_sentinel",
                  "[redis]\nurl = \"redis://s/0\"\nmaster_name = \"m\"\n"
                  "sentinels = [\"sentinel.example:26379\"]\n",
                  "4:13", "IP:PORT or [V6]:PORT"},
        ErrorCase{"bad_dns_canary", "[dns]\ncanary = \"not a name\"\n", "2:10",
                  "is not a DNS name"},
        ErrorCase{"bad_tls_mode", "[callout]\ntls = \"required\"\n", "2:7",
                  "'required' is not one of may|encrypt|none"},
        ErrorCase{"tls_timeout_too_short", "[callout]\ntls_timeout = \"10ms\"\n", "2:15",
                  "out of range"},
        ErrorCase{"sentinels_without_master_name",
                  "[redis]\nurl = \"redis://s/0\"\nsentinels = [\"127.0.0.1:26379\"]\n", "3:13",
                  "needs redis.master_name"},
        // Found by fuzzing: a quoted dotted key is one TOML key, and it used to be accepted
        // and ignored (the check joined names as text, the value was read with at_path()).
        ErrorCase{"quoted_dotted_key", "\"server.listen\" = [\"inet:0.0.0.0:10023\"]\n", "1:1",
                  "unknown key '\"server.listen\"'"},
        ErrorCase{"quoted_dotted_key_in_section", "[server]\n\"reply_timeout.x\" = \"5s\"\n", "2:1",
                  "unknown key 'server.\"reply_timeout.x\"'"},
        ErrorCase{"quoted_dotted_section", "[\"server.x\"]\nlisten = []\n", "1:2",
                  "unknown key '\"server.x\"'"},
        // Found by fuzzing: a NUL cut addresses, hosts and paths short where C APIs read them.
        ErrorCase{"nul_in_network", "[policy]\ntrusted_networks = [\"10.0.0.0\\u0000junk/8\"]\n",
                  "2:20", "control character (0x00)"},
        ErrorCase{"nul_in_listen", "[server]\nlisten = [\"unix:\\u0000abstract\"]\n", "2:10",
                  "control character (0x00)"},
        ErrorCase{"nul_in_redis_host", "[redis]\nurl = \"redis://127.0.0.1\\u0000x:6379/0\"\n",
                  "2:7", "control character (0x00)"},
        ErrorCase{"nul_in_sentinel",
                  "[redis]\nurl = \"redis://s/0\"\nmaster_name = \"m\"\n"
                  "sentinels = [\"127.0.0.1\\u0000x:26379\"]\n",
                  "4:13", "control character (0x00)"},
        ErrorCase{"nul_in_source_address", "[callout]\nsource_address = \"192.0.2.1\\u0000\"\n",
                  "2:18", "control character (0x00)"},
        ErrorCase{"newline_in_helo_name", "[callout]\nhelo_name = \"a.example\\r\\nRSET\"\n",
                  "2:13", "control character (0x0d)"},
        ErrorCase{"sentinels_without_url",
                  "[redis]\nmaster_name = \"m\"\nsentinels = [\"127.0.0.1:26379\"]\n", "3:13",
                  "needs redis.url"}),
    [](const auto& info) { return std::string(info.param.name); });

// Dotted keys written unquoted are the section's keys: honoured like [section] name = ...
TEST(Config, UnquotedDottedKeysAreHonoured) {
    Config c =
        load_ok("server.reply_timeout = \"3s\"\nserver.listen = [\"inet:127.0.0.1:10099\"]\n");
    EXPECT_EQ(c.server.reply_timeout, 3s);
    ASSERT_EQ(c.server.listen.size(), 1u);
    EXPECT_EQ(c.server.listen[0].port, 10099);
}

TEST(Config, CalloutTlsModes) {
    Config d = load_ok("");
    EXPECT_EQ(d.callout.tls, "may");
    EXPECT_EQ(d.callout.tls_timeout, 10s);
    for (const char* mode : {"may", "encrypt", "none"}) {
        Config c =
            load_ok(std::string("[callout]\ntls = \"") + mode + "\"\ntls_timeout = \"3s\"\n");
        EXPECT_EQ(c.callout.tls, mode);
        EXPECT_EQ(c.callout.tls_timeout, 3s);
    }
}

TEST(Config, SkipDomainsDefaultToTheShippedNeverProbeList) {
    Config c = load_ok("");
    EXPECT_TRUE(c.policy.skip_domains.matches("gmail.com"));
    EXPECT_TRUE(c.policy.skip_domains.matches("hotmail.co.uk"));
    EXPECT_FALSE(c.policy.skip_domains.matches("example.org"));
    Config none = load_ok("[policy]\nskip_domains = []\n");
    EXPECT_FALSE(none.policy.skip_domains.matches("gmail.com"));
}

TEST(Config, SkipDomainsFromAFileRelativeToTheConfig) {
    std::string dir = test::make_temp_dir("domains");
    std::ofstream(dir + "/mine.list")
        << "# comment\nExample.NET  # trailing comment\n\n  corp.test\n";
    std::ofstream(dir + "/bad.list") << "ok.test\nnot a domain\n";
    auto r = load_config_text(
        "[policy]\nskip_domains = [\"file:mine.list\", \"builtin:never-probe\", \"x.test\"]\n",
        dir + "/calloutd.toml");
    ASSERT_TRUE(std::holds_alternative<Config>(r));
    const auto& skip = std::get<Config>(r).policy.skip_domains;
    for (const char* d : {"example.net", "sub.example.net", "corp.test", "gmail.com", "x.test"}) {
        EXPECT_TRUE(skip.matches(d)) << d;
    }
    auto bad = load_config_text("[policy]\nskip_domains = [\"a.test\", \"file:bad.list\"]\n",
                                dir + "/calloutd.toml");
    auto* errs = std::get_if<std::vector<std::string>>(&bad);
    ASSERT_TRUE(errs);
    EXPECT_NE(errs->at(0).find("calloutd.toml:2:27: "), std::string::npos) << errs->at(0);
    EXPECT_NE(errs->at(0).find("line 2: 'not a domain' is not a domain"), std::string::npos);
    auto missing =
        load_config_text("[policy]\nskip_domains = [\"file:nope.list\"]\n", dir + "/calloutd.toml");
    ASSERT_TRUE(std::holds_alternative<std::vector<std::string>>(missing));
    std::filesystem::remove_all(dir);
}

// A device or a directory is refused at once: "file:/dev/zero" used to read forever.
TEST(Config, DomainListMustBeARegularFile) {
    for (const char* path : {"/dev/zero", "/tmp"}) {
        auto errs = load_errors("[policy]\nskip_domains = [\"file:" + std::string(path) + "\"]\n");
        ASSERT_EQ(errs.size(), 1u) << path;
        EXPECT_NE(errs[0].find("is not a regular file"), std::string::npos) << errs[0];
    }
}

TEST(DomainSet, MatchesDomainAndSubdomainsOnly) {
    DomainSet s({"example.com", "co.uk.test"});
    EXPECT_TRUE(s.matches("example.com"));
    EXPECT_TRUE(s.matches("a.b.example.com"));
    EXPECT_FALSE(s.matches("notexample.com"));
    EXPECT_FALSE(s.matches("com"));
    EXPECT_FALSE(s.matches("example.com.evil.test"));
    EXPECT_TRUE(s.matches("x.co.uk.test"));
}

TEST(DomainList, ShippedListParses) {
    std::string err;
    auto list = parse_domain_list(builtin_never_probe_list(), &err);
    ASSERT_TRUE(list) << err;
    EXPECT_GE(list->size(), 20u);
    auto mx = parse_domain_list(builtin_never_probe_mx_list(), &err);
    ASSERT_TRUE(mx) << err;
    EXPECT_GE(mx->size(), 10u);
}

// Entries are normalised when loaded, as the probe normalises a sender's domain.
TEST(DomainList, EntriesAreNormalisedLikeTheProbesDomain) {
    EXPECT_EQ(list_domain("Example.ORG"), "example.org");
    EXPECT_EQ(list_domain("example.org."), "example.org");
    EXPECT_EQ(list_domain("B\u00fccher.example"), "xn--bcher-kva.example");
    EXPECT_EQ(list_domain("XN--BCHER-KVA.example"), "xn--bcher-kva.example");
    EXPECT_EQ(list_domain("\uff47\uff4d\uff41\uff49\uff4c.com"), "gmail.com");
    EXPECT_EQ(list_domain("gmail\u3002com"), "gmail.com");
    EXPECT_EQ(list_domain("_dmarc.example.org"), "_dmarc.example.org");  // tolerated as before
    EXPECT_FALSE(list_domain("\u2603.example"));
    EXPECT_FALSE(list_domain("xn--zz.example"));
    EXPECT_FALSE(list_domain("a..example"));
    std::string err;
    auto list = parse_domain_list("# c\nB\u00fccher.example\nxn--mnchen-3ya.example\n", &err);
    ASSERT_TRUE(list) << err;
    EXPECT_EQ(*list, (std::vector<std::string>{"xn--bcher-kva.example", "xn--mnchen-3ya.example"}));
    EXPECT_FALSE(parse_domain_list("ok.example\n\u2603.example\n", &err));
    EXPECT_NE(err.find("line 2"), std::string::npos) << err;
}

TEST(Config, ProbeEconomyKeys) {
    Config d = load_ok("");
    EXPECT_TRUE(d.policy.skip_mx_hosts.matches("aspmx.l.google.com"));
    EXPECT_TRUE(d.policy.skip_mx_hosts.matches("example-com.mail.protection.outlook.com"));
    EXPECT_FALSE(d.policy.skip_mx_hosts.matches("mx.example.org"));
    EXPECT_EQ(d.limits.budgets.provider_rate, (Rate{60, std::chrono::minutes(1), false}));
    EXPECT_EQ(d.limits.client_ipv6_prefix, 64);
    EXPECT_EQ(d.redis.nodes, 1);

    Config c = load_ok(
        "[policy]\nown_domains = [\"B\u00fccher.example\"]\n"
        "skip_mx_hosts = [\"mx.provider.example\", \"builtin:never-probe-mx\"]\n"
        "[limits]\nprovider_rate = \"10/1m\"\nclient_ipv6_prefix = 56\n[redis]\nnodes = 3\n");
    EXPECT_TRUE(c.policy.own_domains.matches("xn--bcher-kva.example"));
    EXPECT_TRUE(c.policy.skip_mx_hosts.matches("in1.mx.provider.example"));
    EXPECT_TRUE(c.policy.skip_mx_hosts.matches("aspmx.l.google.com"));
    EXPECT_EQ(c.limits.budgets.provider_rate.count, 10u);
    EXPECT_EQ(c.limits.client_ipv6_prefix, 56);
    EXPECT_EQ(c.redis.nodes, 3);
    Config none = load_ok("[policy]\nskip_mx_hosts = []\n");
    EXPECT_FALSE(none.policy.skip_mx_hosts.matches("aspmx.l.google.com"));

    auto errs = load_errors("[policy]\nskip_domains = [\"\u2603.example\"]\n");
    ASSERT_EQ(errs.size(), 1u);
    EXPECT_NE(errs[0].find("is not a domain name"), std::string::npos) << errs[0];
    EXPECT_EQ(load_errors("[limits]\nclient_ipv6_prefix = 129\n").size(), 1u);
    EXPECT_EQ(load_errors("[redis]\nnodes = 0\n").size(), 1u);
}

TEST(Config, CollectsSeveralErrors) {
    auto errs = load_errors("[server]\nbogus = 1\n[callout]\nport = 0\n");
    ASSERT_EQ(errs.size(), 2u);
    EXPECT_TRUE(errs[0].starts_with("test.toml:2:1: ")) << errs[0];
    EXPECT_TRUE(errs[1].starts_with("test.toml:4:8: ")) << errs[1];
}

TEST(Config, MetricsListenAndControlSocket) {
    auto r = load_config_text(
        "[server]\ncontrol_socket = \"/run/x/c.sock\"\n[metrics]\nlisten = \"inet:[::1]:9427\"\n",
        "test.toml");
    ASSERT_TRUE(std::holds_alternative<Config>(r));
    EXPECT_EQ(std::get<Config>(r).server.control_socket, "/run/x/c.sock");
    EXPECT_EQ(std::get<Config>(r).metrics.listen, "inet:[::1]:9427");
    auto errs = load_errors("[metrics]\nlisten = \"tcp:9427\"\n");
    ASSERT_EQ(errs.size(), 1u);
    EXPECT_TRUE(errs[0].starts_with("test.toml:2:10: metrics.listen: ")) << errs[0];
    errs = load_errors("[server]\ncontrol_socket = \"inet:127.0.0.1:1\"\n");
    ASSERT_EQ(errs.size(), 1u);
    EXPECT_NE(errs[0].find("server.control_socket must be an absolute path"), std::string::npos)
        << errs[0];
    errs = load_errors("[server]\ncontrol_socket = \"/" + std::string(120, 'x') + "\"\n");
    EXPECT_EQ(errs.size(), 1u);
    EXPECT_TRUE(load_errors("[server]\ncontrol_socket = \"\"\n").empty());
}

TEST(Config, MissingFileIsAnError) {
    auto r = load_config_file("/nonexistent/calloutd.toml");
    ASSERT_TRUE(std::holds_alternative<std::vector<std::string>>(r));
}

// The shipped sample must show every key with exactly the schema's default, and document it.
TEST(SampleConfig, MatchesSchemaAndDocumentsEveryKey) {
    std::string path = test::source_dir() + "/etc/calloutd.toml";
    toml::table sample = toml::parse_file(path);
    for (const auto& def : config_schema()) {
        const toml::node* node = sample.at_path(def.key).node();
        ASSERT_NE(node, nullptr) << "etc/calloutd.toml lacks " << def.key;
        std::string err;
        auto v = parse_value(def, *node, &err);
        ASSERT_TRUE(v) << err;
        EXPECT_TRUE(*v == default_value(def))
            << def.key << ": sample differs from schema default " << def.default_toml;
    }
    auto r = load_config_file(path);
    ASSERT_TRUE(std::holds_alternative<Config>(r));

    // Each key line has a comment line right above it.
    std::ifstream in(path);
    std::string line;
    std::string prev;
    std::regex key_line(R"(^([a-z0-9_]+)\s*=)");
    int keys = 0;
    while (std::getline(in, line)) {
        std::smatch m;
        if (std::regex_search(line, m, key_line)) {
            ++keys;
            EXPECT_TRUE(prev.starts_with("#")) << "undocumented key: " << line;
        }
        prev = line;
    }
    EXPECT_EQ(keys, static_cast<int>(config_schema().size()));
}

}  // namespace
}  // namespace calloutd
