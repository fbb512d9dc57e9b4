// Metric families of calloutd: names, help, label values and the order they are written in.
#include "daemon/metrics.hpp"

#include <uv.h>

namespace calloutd {

namespace {

// Postfix access(5) verbs calloutd may answer with (daemon/config_values.cpp validates them).
// DUNNO first: the common answer is found by the first comparison.
constexpr std::array<std::string_view, 14> kVerbs = {
    "DUNNO", "REJECT", "DEFER_IF_PERMIT", "DEFER",  "DEFER_IF_REJECT", "OK", "HOLD", "DISCARD",
    "INFO",  "WARN",   "PREPEND",         "FILTER", "REDIRECT",        "BCC"};
constexpr size_t kFirstCode = kVerbs.size();
constexpr size_t kOther = kActionSlots - 1;
static_assert(kFirstCode + 200 == kOther);

// Cached answers take ~100 µs, probes seconds; the reply budget can reach minutes.
constexpr double kRequestBuckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                      0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                      1,      2.5,     5,      10,    30,     60};
constexpr double kProbeBuckets[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300};

constexpr std::array<std::string_view, kDecisionSources> kSources = {"skip", "cache", "probe",
                                                                     "limit"};
constexpr std::array<std::string_view, kCacheLookupResults> kCacheResults = {"hit", "miss",
                                                                             "near_hit"};

// Classes a probe can end with; in_progress never comes from one (skipped does: a UTF-8
// address at a server without SMTPUTF8).
bool probe_can_yield(VerdictClass c) {
    return c != VerdictClass::in_progress;
}

template <size_t N>
std::array<Histogram, N> histograms(std::span<const double> bounds) {
    return [&]<size_t... I>(std::index_sequence<I...>) {
        return std::array<Histogram, N>{((void)I, Histogram(bounds))...};
    }
    (std::make_index_sequence<N>());
}

}  // namespace

std::string_view to_string(ProbeConnectionResult r) {
    switch (r) {
        case ProbeConnectionResult::connected:
            return "connected";
        case ProbeConnectionResult::refused:
            return "refused";
        case ProbeConnectionResult::timeout:
            return "timeout";
        case ProbeConnectionResult::unreachable:
            return "unreachable";
        case ProbeConnectionResult::tls:
            return "tls";
        case ProbeConnectionResult::tls_failed:
            return "tls_failed";
    }
    return "unreachable";
}

ProbeConnectionResult connection_result(const HostAttempt& a) {
    if (a.tls) return ProbeConnectionResult::tls;
    if (a.tls_failed) return ProbeConnectionResult::tls_failed;
    if (a.last_stage != SmtpStage::connect) return ProbeConnectionResult::connected;
    switch (a.event) {
        case StageEvent::timeout:
        case StageEvent::deadline:
            return ProbeConnectionResult::timeout;
        case StageEvent::connect_failed:
            // The probe records the OS error as uv_strerror() text; ECONNREFUSED is the one a
            // closed port gives, everything else (unreachable, bind failure...) is lumped.
            return a.detail == uv_strerror(UV_ECONNREFUSED) ? ProbeConnectionResult::refused
                                                            : ProbeConnectionResult::unreachable;
        default:
            return ProbeConnectionResult::connected;
    }
}

std::string_view to_string(BudgetLabel b) {
    switch (b) {
        case BudgetLabel::domain:
            return "domain";
        case BudgetLabel::client:
            return "client";
        case BudgetLabel::global:
            return "global";
        case BudgetLabel::mx:
            return "mx";
        case BudgetLabel::provider:
            return "provider";
    }
    return "global";
}

size_t action_slot(std::string_view action) {
    std::string_view verb = action.substr(0, action.find(' '));
    for (size_t i = 0; i < kVerbs.size(); ++i) {
        if (verb == kVerbs[i]) return i;
    }
    if (verb.size() == 3 && (verb[0] == '4' || verb[0] == '5') && verb[1] >= '0' &&
        verb[1] <= '9' && verb[2] >= '0' && verb[2] <= '9') {
        int code = (verb[0] - '0') * 100 + (verb[1] - '0') * 10 + (verb[2] - '0');
        return kFirstCode + static_cast<size_t>(code - 400);
    }
    return kOther;
}

std::string action_label(size_t slot) {
    if (slot < kFirstCode) return std::string(kVerbs[slot]);
    if (slot < kOther) return std::to_string(400 + (slot - kFirstCode));
    return "other";
}

Metrics::Metrics()
    : request_duration_(kRequestBuckets),
      probe_duration_(histograms<kVerdictClasses>(kProbeBuckets)) {}

void Metrics::probe_finished(const CalloutReport& report) {
    auto c = static_cast<size_t>(report.verdict.cls);
    ++probes_[c];
    probe_duration_[c].observe(std::chrono::duration<double>(report.elapsed).count());
    for (const auto& a : report.attempts) {
        ++probe_connections_[static_cast<size_t>(connection_result(a))];
    }
}

void Metrics::render(std::string& out, const MetricsSnapshot& s) const {
    ExpositionWriter w(out);

    w.family("calloutd_requests_total", "counter",
             "Policy requests answered, by verdict class, first word of the action and source.");
    for (auto cls : kAllVerdictClasses) {
        auto c = static_cast<size_t>(cls);
        for (size_t src = 0; src < kDecisionSources; ++src) {
            for (size_t a = 0; a < kActionSlots; ++a) {
                uint64_t n = requests_[c][src][a];
                if (n == 0) continue;
                std::string action = action_label(a);
                w.sample("calloutd_requests_total",
                         {{"class", to_string(cls)}, {"action", action}, {"source", kSources[src]}},
                         n);
            }
        }
    }
    w.family("calloutd_request_duration_seconds", "histogram",
             "Time from receiving a policy request to its reply being ready.");
    w.histogram("calloutd_request_duration_seconds", {}, request_duration_);

    w.family("calloutd_probes_total", "counter", "Finished SMTP callouts by verdict class.");
    for (auto cls : kAllVerdictClasses) {
        if (probe_can_yield(cls)) {
            w.sample("calloutd_probes_total", {{"class", to_string(cls)}},
                     probes_[static_cast<size_t>(cls)]);
        }
    }
    w.family("calloutd_probe_duration_seconds", "histogram",
             "Duration of finished callouts (DNS and SMTP) by verdict class.");
    for (auto cls : kAllVerdictClasses) {
        if (probe_can_yield(cls)) {
            w.histogram("calloutd_probe_duration_seconds", {{"class", to_string(cls)}},
                        probe_duration_[static_cast<size_t>(cls)]);
        }
    }
    w.family("calloutd_probes_in_flight", "gauge", "Callouts running now.");
    w.sample("calloutd_probes_in_flight", {}, s.probes_in_flight);
    w.family("calloutd_probe_connections_total", "counter",
             "TCP connections to MX addresses by outcome: of the connect, then of STARTTLS.");
    for (size_t r = 0; r < kProbeConnectionResults; ++r) {
        w.sample("calloutd_probe_connections_total",
                 {{"result", to_string(static_cast<ProbeConnectionResult>(r))}},
                 probe_connections_[r]);
    }

    w.family("calloutd_budget_denials_total", "counter",
             "Probes refused because a probe budget was exhausted, by budget.");
    for (size_t b = 0; b < kBudgetLabels; ++b) {
        w.sample("calloutd_budget_denials_total",
                 {{"budget", to_string(static_cast<BudgetLabel>(b))}}, s.budget_denials[b]);
    }

    w.family("calloutd_cache_lookups_total", "counter",
             "Verdict cache lookups by result (near_hit: Redis mode's near-cache).");
    for (size_t r = 0; r < kCacheLookupResults; ++r) {
        w.sample("calloutd_cache_lookups_total", {{"result", kCacheResults[r]}}, cache_lookups_[r]);
    }
    w.family("calloutd_cache_entries", "gauge", "Entries in this node's in-memory verdict cache.");
    w.sample("calloutd_cache_entries", {}, s.cache_entries);

    w.family("calloutd_policy_connections", "gauge", "Open policy client connections.");
    w.sample("calloutd_policy_connections", {}, s.policy_connections);
    w.family("calloutd_policy_connections_total", "counter", "Policy client connections accepted.");
    w.sample("calloutd_policy_connections_total", {}, s.policy_connections_total);
    w.family("calloutd_protocol_errors_total", "counter",
             "Policy connections closed for a protocol violation, by kind.");
    for (size_t k = 0; k < kProtocolErrorKinds; ++k) {
        w.sample("calloutd_protocol_errors_total",
                 {{"kind", to_string(static_cast<ProtocolError>(k))}}, protocol_errors_[k]);
    }

    w.family("calloutd_redis_up", "gauge",
             "1 while the Redis command link is up; 0 when down or in memory mode.");
    w.sample("calloutd_redis_up", {}, uint64_t{s.redis_up ? 1u : 0u});
    w.family("calloutd_redis_degraded", "gauge",
             "1 while Redis is configured but unreachable and this node answers alone.");
    w.sample("calloutd_redis_degraded", {}, uint64_t{s.redis_degraded ? 1u : 0u});
    w.family("calloutd_redis_timeouts_total", "counter", "Redis commands that hit redis.timeout.");
    w.sample("calloutd_redis_timeouts_total", {}, s.redis_timeouts);
    w.family("calloutd_redis_reconnects_total", "counter",
             "Redis connections re-established after the first one.");
    w.sample("calloutd_redis_reconnects_total", {}, s.redis_reconnects);

    w.family("calloutd_dns_queries_total", "counter", "DNS queries (MX, A, AAAA) by result.");
    for (size_t r = 0; r < kDnsQueryResults; ++r) {
        w.sample("calloutd_dns_queries_total",
                 {{"result", to_string(static_cast<DnsQueryResult>(r))}}, s.dns_queries[r]);
    }
    if (s.dns_canary_ok) {
        w.family("calloutd_dns_canary_up", "gauge", "1 while dns.canary resolves.");
        w.sample("calloutd_dns_canary_up", {}, uint64_t{*s.dns_canary_ok ? 1u : 0u});
    }
    w.family("calloutd_log_dropped_lines_total", "counter",
             "Log lines dropped because the log destination was blocked, failing or too slow.");
    w.sample("calloutd_log_dropped_lines_total", {}, s.log_dropped_lines);
    w.family("calloutd_io_uring_up", "gauge",
             "1 while policy connections' receives and sends are batched through io_uring.");
    w.sample("calloutd_io_uring_up", {}, uint64_t{s.io_uring ? 1u : 0u});
    w.family("calloutd_io_uring_enters_total", "counter",
             "io_uring_enter system calls made for policy connections' receives and sends.");
    w.sample("calloutd_io_uring_enters_total", {}, s.io_uring_enters);
    w.family("calloutd_io_uring_operations_total", "counter",
             "Receives and sends done through those system calls.");
    w.sample("calloutd_io_uring_operations_total", {}, s.io_uring_operations);
    w.family("calloutd_io_uring_late_operations_total", "counter",
             "Batched operations that waited in the kernel and were cancelled (expected: 0).");
    w.sample("calloutd_io_uring_late_operations_total", {}, s.io_uring_late_operations);
    w.family("calloutd_config_reloads_total", "counter",
             "Configuration reloads (SIGHUP) by result.");
    w.sample("calloutd_config_reloads_total", {{"result", "ok"}}, config_reloads_[0]);
    w.sample("calloutd_config_reloads_total", {{"result", "failed"}}, config_reloads_[1]);

    w.family("calloutd_build_info", "gauge", "Always 1; the version of the running calloutd.");
    w.sample("calloutd_build_info", {{"version", CALLOUTD_VERSION}}, uint64_t{1});
    w.family("process_start_time_seconds", "gauge",
             "Start time of the process since the Unix epoch in seconds.");
    w.sample("process_start_time_seconds", {}, s.process_start_time_seconds);
    w.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    w.sample("process_resident_memory_bytes", {}, s.resident_memory_bytes);
    w.family("process_open_fds", "gauge", "Number of open file descriptors.");
    w.sample("process_open_fds", {}, s.open_fds);
}

void RecentRates::tick(const std::array<uint64_t, kVerdictClasses>& totals) {
    ring_[ticks_ % ring_.size()] = totals;
    ++ticks_;
}

size_t RecentRates::window_seconds() const {
    return ticks_ == 0 ? 0 : std::min(ticks_ - 1, kSeconds);
}

std::array<uint64_t, kVerdictClasses> RecentRates::counts() const {
    std::array<uint64_t, kVerdictClasses> out{};
    size_t w = window_seconds();
    if (w == 0) return out;
    const auto& newest = ring_[(ticks_ - 1) % ring_.size()];
    const auto& oldest = ring_[(ticks_ - 1 - w) % ring_.size()];
    for (size_t c = 0; c < kVerdictClasses; ++c) out[c] = newest[c] - oldest[c];
    return out;
}

}  // namespace calloutd
