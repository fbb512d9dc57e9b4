// The daemon's Prometheus metrics: plain counters on the loop, rendered as text on a scrape.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "callout/callout.hpp"
#include "callout/verdict.hpp"
#include "daemon/exposition.hpp"
#include "policy/decider.hpp"
#include "policy/request.hpp"

namespace calloutd {

// Label values are enums indexing arrays, so the request path never builds a string or looks up
// a map: counting a request is a few additions. Every label set is bounded: no sender, domain,
// client or IP ever becomes a label.

inline constexpr size_t kVerdictClasses = kAllVerdictClasses.size();
inline constexpr size_t kDecisionSources = 4;  // DecisionSource: skip, cache, probe, limit

// calloutd_probe_connections_total{result}: how a TCP connection to an MX address went, one
// result per connection. Once connected: `tls` when a STARTTLS handshake completed, `tls_failed`
// when STARTTLS was accepted but the handshake failed (at callout.tls = may the plaintext retry
// is a connection of its own), `connected` for a conversation in plaintext.
enum class ProbeConnectionResult { connected, refused, timeout, unreachable, tls, tls_failed };
inline constexpr size_t kProbeConnectionResults = 6;
std::string_view to_string(ProbeConnectionResult r);
ProbeConnectionResult connection_result(const HostAttempt& attempt);

// calloutd_cache_lookups_total{result}: near_hit is Redis mode's near-cache (no round trip).
enum class CacheLookupResult { hit, miss, near_hit };
inline constexpr size_t kCacheLookupResults = 3;

// calloutd_budget_denials_total{budget}. `provider` is the per-provider budget
// (limits.provider_rate), which this tree does not have yet: its series exists at 0 so that
// dashboards and alerts need no change when the budget lands.
enum class BudgetLabel { domain, client, global, mx, provider };
inline constexpr size_t kBudgetLabels = 5;
std::string_view to_string(BudgetLabel b);

// calloutd_requests_total{action}: the first word of the action. Postfix verbs have a slot each,
// numeric codes 400..599 one each, anything else "other": at most 216 values, in practice the
// handful the configuration uses.
size_t action_slot(std::string_view action);
std::string action_label(size_t slot);
inline constexpr size_t kActionSlots = 14 + 200 + 1;

// Values owned by other components, read when a scrape or `calloutd status` asks.
struct MetricsSnapshot {
    uint64_t probes_in_flight = 0;
    std::array<uint64_t, kBudgetLabels> budget_denials{};
    uint64_t cache_entries = 0;
    uint64_t policy_connections = 0;
    uint64_t policy_connections_total = 0;
    bool redis_configured = false;
    bool redis_up = false;
    bool redis_degraded = false;
    uint64_t redis_timeouts = 0;
    uint64_t redis_reconnects = 0;
    std::array<uint64_t, kDnsQueryResults> dns_queries{};
    // Set by a DNS canary (dns.canary) once it has reported; then calloutd_dns_canary_up exists.
    std::optional<bool> dns_canary_ok;
    double process_start_time_seconds = 0;
    uint64_t resident_memory_bytes = 0;
    uint64_t open_fds = 0;
    uint64_t log_dropped_lines = 0;
    // Policy connections' I/O (server.io_uring): whether it goes through io_uring now, and
    // the ring's io_uring_enter calls, operations, and operations that had to be cancelled.
    bool io_uring = false;
    uint64_t io_uring_enters = 0;
    uint64_t io_uring_operations = 0;
    uint64_t io_uring_late_operations = 0;
};

class Metrics {
  public:
    using Clock = std::chrono::steady_clock;

    Metrics();

    // One answered policy request, from receipt to reply.
    void request_answered(VerdictClass cls, DecisionSource source, std::string_view action,
                          Clock::duration elapsed) {
        auto c = static_cast<size_t>(cls);
        ++requests_[c][static_cast<size_t>(source)][action_slot(action)];
        ++requests_by_class_[c];
        request_duration_.observe(std::chrono::duration<double>(elapsed).count());
    }
    // A finished probe: its class, duration and the outcome of each connection it made.
    void probe_finished(const CalloutReport& report);
    void cache_lookup(CacheLookupResult r) { ++cache_lookups_[static_cast<size_t>(r)]; }
    void protocol_error(ProtocolError e) { ++protocol_errors_[static_cast<size_t>(e)]; }
    void config_reload(bool ok) { ++config_reloads_[ok ? 0 : 1]; }

    const std::array<uint64_t, kVerdictClasses>& requests_by_class() const {
        return requests_by_class_;
    }
    uint64_t requests(VerdictClass cls, DecisionSource source, std::string_view action) const {
        return requests_[static_cast<size_t>(cls)][static_cast<size_t>(source)]
                        [action_slot(action)];
    }

    // The whole exposition: our counters plus the snapshot's values.
    void render(std::string& out, const MetricsSnapshot& snapshot) const;

  private:
    std::array<std::array<std::array<uint64_t, kActionSlots>, kDecisionSources>, kVerdictClasses>
        requests_{};
    std::array<uint64_t, kVerdictClasses> requests_by_class_{};
    Histogram request_duration_;
    std::array<uint64_t, kVerdictClasses> probes_{};
    std::array<Histogram, kVerdictClasses> probe_duration_;
    std::array<uint64_t, kProbeConnectionResults> probe_connections_{};
    std::array<uint64_t, kCacheLookupResults> cache_lookups_{};
    std::array<uint64_t, kProtocolErrorKinds> protocol_errors_{};
    std::array<uint64_t, 2> config_reloads_{};  // ok, failed
};

// Requests per class over the last minute for `calloutd status`: a ring of per-second snapshots
// of the class totals, so the request path pays nothing for it.
class RecentRates {
  public:
    static constexpr size_t kSeconds = 60;
    // Called once a second with the running totals.
    void tick(const std::array<uint64_t, kVerdictClasses>& totals);
    // Requests per class within the window, and the window's length in seconds (shorter than a
    // minute right after start).
    std::array<uint64_t, kVerdictClasses> counts() const;
    size_t window_seconds() const;

  private:
    std::array<std::array<uint64_t, kVerdictClasses>, kSeconds + 1> ring_{};
    size_t ticks_ = 0;
};

}  // namespace calloutd
