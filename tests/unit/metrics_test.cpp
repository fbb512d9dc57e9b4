// The metrics registry: label slots, rendered families, rates for status, cache control.
#include <gtest/gtest.h>

#include <uv.h>

#include "daemon/cache_control.hpp"
#include "daemon/metrics.hpp"
#include "daemon/status_command.hpp"
#include "support/text.hpp"

namespace calloutd {
namespace {

using namespace std::chrono_literals;

TEST(Metrics, ActionLabelIsTheFirstWordWithBoundedSlots) {
    struct Case {
        std::string action;
        std::string label;
    };
    const Case cases[] = {
        {"DUNNO", "DUNNO"},
        {"REJECT 5.1.7 The sender's mail server says this address does not exist", "REJECT"},
        {"DEFER_IF_PERMIT 4.1.7 Verifying", "DEFER_IF_PERMIT"},
        {"DEFER 4.7.1 later", "DEFER"},
        {"DEFER_IF_REJECT x", "DEFER_IF_REJECT"},
        {"450 4.1.7 Try later", "450"},
        {"554 5.1.8 No", "554"},
        {"400 x", "400"},
        {"599 x", "599"},
        {"WARN suspicious", "WARN"},
        {"OK", "OK"},
        {"600 x", "other"},
        {"dunno", "other"},
        {"", "other"},
    };
    for (const auto& c : cases) {
        size_t slot = action_slot(c.action);
        ASSERT_LT(slot, kActionSlots) << c.action;
        EXPECT_EQ(action_label(slot), c.label) << c.action;
    }
}

TEST(Metrics, ProbeConnectionResults) {
    HostAttempt connected;
    connected.last_stage = SmtpStage::rcpt;
    connected.event = StageEvent::reply;
    HostAttempt refused;
    refused.event = StageEvent::connect_failed;
    refused.detail = uv_strerror(UV_ECONNREFUSED);
    HostAttempt unreachable;
    unreachable.event = StageEvent::connect_failed;
    unreachable.detail = uv_strerror(UV_ENETUNREACH);
    HostAttempt timed_out;
    timed_out.event = StageEvent::timeout;
    HostAttempt banner_timeout;  // connected, then silence
    banner_timeout.last_stage = SmtpStage::banner;
    banner_timeout.event = StageEvent::timeout;
    EXPECT_EQ(connection_result(connected), ProbeConnectionResult::connected);
    EXPECT_EQ(connection_result(refused), ProbeConnectionResult::refused);
    EXPECT_EQ(connection_result(unreachable), ProbeConnectionResult::unreachable);
    EXPECT_EQ(connection_result(timed_out), ProbeConnectionResult::timeout);
    EXPECT_EQ(connection_result(banner_timeout), ProbeConnectionResult::connected);
    // Once connected, what STARTTLS did: one result per connection.
    HostAttempt encrypted = connected;
    encrypted.tls = TlsSessionInfo{"TLSv1.3", "TLS_AES_256_GCM_SHA384", "", ""};
    HostAttempt broken;
    broken.last_stage = SmtpStage::tls_handshake;
    broken.event = StageEvent::protocol_error;
    broken.tls_failed = true;
    HostAttempt retry = connected;
    retry.plaintext_retry = true;
    EXPECT_EQ(connection_result(encrypted), ProbeConnectionResult::tls);
    EXPECT_EQ(connection_result(broken), ProbeConnectionResult::tls_failed);
    EXPECT_EQ(connection_result(retry), ProbeConnectionResult::connected);
    EXPECT_EQ(to_string(ProbeConnectionResult::tls), "tls");
    EXPECT_EQ(to_string(ProbeConnectionResult::tls_failed), "tls_failed");
}

TEST(Metrics, RenderedCountersHaveExactlyTheRecordedValues) {
    Metrics m;
    m.request_answered(VerdictClass::valid, DecisionSource::cache, "DUNNO", 50us);
    m.request_answered(VerdictClass::valid, DecisionSource::cache, "DUNNO", 70us);
    m.request_answered(VerdictClass::invalid, DecisionSource::probe, "REJECT 5.1.7 x", 2s);
    m.protocol_error(ProtocolError::binary);
    m.cache_lookup(CacheLookupResult::miss);
    m.config_reload(false);
    CalloutReport report;
    report.verdict.cls = VerdictClass::invalid;
    report.elapsed = 1500ms;
    report.attempts.resize(2);
    report.attempts[0].event = StageEvent::connect_failed;
    report.attempts[0].detail = uv_strerror(UV_ECONNREFUSED);
    report.attempts[1].last_stage = SmtpStage::rcpt;
    report.attempts[1].event = StageEvent::reply;
    m.probe_finished(report);
    MetricsSnapshot s;
    s.budget_denials[static_cast<size_t>(BudgetLabel::domain)] = 4;
    s.redis_configured = true;
    s.redis_degraded = true;
    s.dns_queries[static_cast<size_t>(DnsQueryResult::nxdomain)] = 3;
    std::string out;
    m.render(out, s);
    for (const char* line : {
             "calloutd_requests_total{class=\"valid\",action=\"DUNNO\",source=\"cache\"} 2\n",
             "calloutd_requests_total{class=\"invalid\",action=\"REJECT\",source=\"probe\"} 1\n",
             "calloutd_request_duration_seconds_bucket{le=\"0.0001\"} 2\n",
             "calloutd_request_duration_seconds_bucket{le=\"2.5\"} 3\n",
             "calloutd_request_duration_seconds_count 3\n",
             "calloutd_probes_total{class=\"invalid\"} 1\n",
             "calloutd_probes_total{class=\"valid\"} 0\n",
             "calloutd_probe_duration_seconds_bucket{class=\"invalid\",le=\"1\"} 0\n",
             "calloutd_probe_duration_seconds_bucket{class=\"invalid\",le=\"2.5\"} 1\n",
             "calloutd_probe_connections_total{result=\"connected\"} 1\n",
             "calloutd_probe_connections_total{result=\"refused\"} 1\n",
             "calloutd_probe_connections_total{result=\"tls\"} 0\n",
             "calloutd_probe_connections_total{result=\"tls_failed\"} 0\n",
             "calloutd_probes_total{class=\"skipped\"} 0\n",
             "calloutd_budget_denials_total{budget=\"domain\"} 4\n",
             "calloutd_budget_denials_total{budget=\"provider\"} 0\n",
             "calloutd_cache_lookups_total{result=\"miss\"} 1\n",
             "calloutd_cache_lookups_total{result=\"near_hit\"} 0\n",
             "calloutd_protocol_errors_total{kind=\"binary\"} 1\n",
             "calloutd_redis_up 0\n",
             "calloutd_redis_degraded 1\n",
             "calloutd_dns_queries_total{result=\"nxdomain\"} 3\n",
             "calloutd_config_reloads_total{result=\"failed\"} 1\n",
             "calloutd_build_info{version=\"" CALLOUTD_VERSION "\"} 1\n",
         }) {
        EXPECT_NE(out.find(line), std::string::npos) << line << "\n" << out;
    }
    // Classes a probe never ends with have no probe series; no canary, no canary gauge.
    EXPECT_EQ(out.find("calloutd_probes_total{class=\"in_progress\"}"), std::string::npos);
    EXPECT_EQ(out.find("calloutd_dns_canary_up"), std::string::npos);
    EXPECT_EQ(test::occurrences(out, "# TYPE calloutd_requests_total counter\n"), 1u);
    s.dns_canary_ok = false;
    out.clear();
    m.render(out, s);
    EXPECT_NE(out.find("calloutd_dns_canary_up 0\n"), std::string::npos);
}

TEST(Metrics, RecentRatesCoverTheLastMinute) {
    RecentRates r;
    std::array<uint64_t, kVerdictClasses> totals{};
    EXPECT_EQ(r.window_seconds(), 0u);
    r.tick(totals);
    for (int second = 1; second <= 100; ++second) {
        totals[static_cast<size_t>(VerdictClass::valid)] += 2;
        if (second > 90) totals[static_cast<size_t>(VerdictClass::invalid)] += 1;
        r.tick(totals);
        if (second == 10) {
            EXPECT_EQ(r.window_seconds(), 10u);
            EXPECT_EQ(r.counts()[static_cast<size_t>(VerdictClass::valid)], 20u);
        }
    }
    EXPECT_EQ(r.window_seconds(), 60u);
    EXPECT_EQ(r.counts()[static_cast<size_t>(VerdictClass::valid)], 120u);
    EXPECT_EQ(r.counts()[static_cast<size_t>(VerdictClass::invalid)], 10u);
}

TEST(Metrics, StatusNamesEveryFigure) {
    StatusInfo i;
    i.version = "9.9";
    i.uptime = 3723s;
    i.pid = 42;
    i.config_path = "/etc/calloutd/calloutd.toml";
    i.window_seconds = 60;
    i.last_minute[static_cast<size_t>(VerdictClass::valid)] = 120;
    i.probes_in_flight = 3;
    i.budget_denials[static_cast<size_t>(BudgetLabel::mx)] = 5;
    i.cache_entries = 77;
    i.redis_configured = true;
    i.redis_endpoint = "127.0.0.1:6379";
    i.redis_up = false;
    std::string text;
    for (const auto& l : format_status(i)) text += l + "\n";
    for (const char* want :
         {"calloutd 9.9, pid 42, up 1h02m03s", "mode: redis 127.0.0.1:6379: DOWN",
          "requests over the last 60 s", "valid", "2.00/s", "120", "probes in flight: 3", "mx=5",
          "provider=0", "cache entries (this node): 77", "dns canary: n/a"}) {
        EXPECT_NE(text.find(want), std::string::npos) << want << "\n" << text;
    }
}

TEST(CacheControl, GetDelFlushOnTheMemoryCache) {
    auto now = WallClock::now();
    CacheTtls ttls{24h, 24h, 10min, 24h, 12h, 1h};
    MemoryVerdictCache cache(100, ttls, [&] { return now; });
    cache.store("a.example", "alice@a.example", {VerdictClass::valid, "rcpt-ok", now, "250 ok"});
    cache.store("a.example", "bob@a.example", {VerdictClass::invalid, "user-unknown", now, ""});
    cache.store("b.example", "carol@b.example", {VerdictClass::valid, "rcpt-ok", now, ""});
    cache.store(
        "c.example", "x@c.example",
        {VerdictClass::accept_all, "random-accepted", now, "", false, EvidenceScope::domain});
    auto ask = [&](ControlVerb v, std::string arg) { return cache_control(cache, {v, arg}, now); };

    auto r = ask(ControlVerb::cache_get, "alice@A.Example");
    EXPECT_EQ(r.status, ControlStatus::ok);
    ASSERT_EQ(r.data.size(), 2u);
    EXPECT_TRUE(r.data[0].starts_with("address alice@a.example: class=valid reason=\"rcpt-ok\""))
        << r.data[0];
    EXPECT_NE(r.data[0].find(" ttl=86400s reply=\"250 ok\""), std::string::npos) << r.data[0];
    EXPECT_EQ(r.data[1], "domain a.example: not cached");
    r = ask(ControlVerb::cache_get, "c.example");
    EXPECT_EQ(r.status, ControlStatus::ok);
    EXPECT_TRUE(r.data[0].starts_with("domain c.example: class=accept_all")) << r.data[0];
    EXPECT_EQ(ask(ControlVerb::cache_get, "nobody@a.example").status, ControlStatus::none);
    EXPECT_EQ(ask(ControlVerb::cache_get, "bad address@").status, ControlStatus::error);

    r = ask(ControlVerb::cache_del, "bob@a.example");
    EXPECT_EQ(r.status, ControlStatus::ok);
    EXPECT_EQ(r.data, std::vector<std::string>{"address bob@a.example: deleted"});
    EXPECT_EQ(ask(ControlVerb::cache_del, "bob@a.example").status, ControlStatus::none);
    EXPECT_EQ(ask(ControlVerb::cache_del, "c.example").status, ControlStatus::ok);
    EXPECT_EQ(ask(ControlVerb::cache_get, "c.example").status, ControlStatus::none);

    cache.store("a.example", "dave@a.example", {VerdictClass::valid, "rcpt-ok", now, ""});
    EXPECT_EQ(ask(ControlVerb::cache_flush, "alice@a.example").status, ControlStatus::error);
    r = ask(ControlVerb::cache_flush, "a.example");
    EXPECT_EQ(r.status, ControlStatus::ok);
    EXPECT_EQ(r.data, std::vector<std::string>{
                          "domain a.example: deleted 2 address verdict(s), no domain fact"});
    EXPECT_EQ(cache.size(), 1u);  // carol@b.example is untouched
    EXPECT_EQ(ask(ControlVerb::cache_flush, "a.example").status, ControlStatus::none);
}

}  // namespace
}  // namespace calloutd
