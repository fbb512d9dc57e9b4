// Probe budgets: per sender domain, per client, global, per target MX IP and per provider (the
// registrable domain of the MX host name).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "storage/rate.hpp"
#include "storage/sliding_window.hpp"
#include "storage/verdict_cache.hpp"

namespace calloutd {

enum class BudgetKind { domain, client, global, mx, provider };
std::string_view to_string(BudgetKind k);

struct BudgetLimits {
    Rate domain_rate;
    Rate client_rate;
    Rate global_rate;
    int64_t global_concurrency = 0;
    Rate mx_rate;
    int64_t mx_concurrency = 0;
    // Connections per provider, whatever the number of its MX IPs (unlimited unless set).
    Rate provider_rate{0, std::chrono::milliseconds(0), true};
};

// The share of `limits` one node of `nodes` may spend on its own while the shared budgets are
// out of reach (degraded mode): ceil(count / nodes) of every rate and concurrency, at least 1.
// N nodes that all lose Redis therefore stay within N * ceil(rate / N) together, which is the
// configured rate whenever N divides it.
BudgetLimits node_share(const BudgetLimits& limits, int64_t nodes);

// What an admitted probe or MX connection holds until it is released. Every admission, through
// Redis or not, also holds a slot in the node's own budget.
struct ProbeToken {
    // Granted by the node's own budget because Redis was down, slow or unreadable.
    bool local = false;
    // The admission's token in Redis ("node:seq"), released there too: the admission Redis
    // granted, or (with `local`) the one it did not answer in time and may still run. Empty:
    // nothing to release in Redis.
    std::string redis;
    friend bool operator==(const ProbeToken&, const ProbeToken&) = default;
};

struct BudgetDecision {
    bool admitted = true;
    BudgetKind denied_by = BudgetKind::global;  // meaningful when denied
    // A cluster backend checks the shared cache and the other nodes' probes in the same atomic
    // step as the budgets; then a request may be neither admitted nor denied:
    std::optional<CachedVerdict> cached;  // the verdict is there now (stored by another node)
    std::string cached_scope;             // "d" when `cached` is a domain fact, else "a"
    bool in_flight_elsewhere = false;     // another node is probing this address right now
    ProbeToken token;                     // admitted: what release_probe() gives back
    bool denied() const { return !admitted && !cached && !in_flight_elsewhere; }
};

// Backends answer at once where they can (returned), else later via `done` (never from inside
// the call). An admitted probe holds a global concurrency slot until release_probe(); an
// admitted MX connection holds a slot for that IP until release_mx(). `address` is the key the
// probe is known by (the canonical key of a tagged sender, see callout/tagged_sender.hpp).
class ProbeBudget {
  public:
    using Done = std::function<void(BudgetDecision)>;
    virtual ~ProbeBudget() = default;
    // Domain, client and global budgets, all or nothing. `refresh`: the address is cached and
    // due for a background re-probe (so a cached verdict is no reason to refuse).
    virtual std::optional<BudgetDecision> admit_probe(const std::string& domain,
                                                      const std::string& address,
                                                      const std::string& client, bool refresh,
                                                      Done done) = 0;
    virtual void release_probe(const std::string& domain, const std::string& address,
                               const ProbeToken& token) = 0;
    // One connection to `ip`, an MX host of `provider` (the registrable domain of its name):
    // per-IP back-off, concurrency and rate, then the provider's rate.
    virtual std::optional<BudgetDecision> admit_mx(const std::string& ip,
                                                   const std::string& provider, Done done) = 0;
    virtual void release_mx(const std::string& ip) = 0;
    // The target at `ip` pushed back (421, "too many connections", "blocked"): leave it alone.
    virtual void back_off_mx(const std::string& ip, std::chrono::milliseconds how_long) = 0;
    virtual void set_limits(const BudgetLimits& limits) = 0;
};

class MemoryProbeBudget : public ProbeBudget {
  public:
    using Clock = SlidingWindows::Clock;
    using Now = std::function<Clock::time_point()>;
    // Live keys kept per budget kind; beyond it new keys are denied (never forgotten).
    static constexpr size_t kMaxKeys = 200'000;

    explicit MemoryProbeBudget(const BudgetLimits& limits, Now now = Clock::now,
                               size_t max_keys = kMaxKeys);

    std::optional<BudgetDecision> admit_probe(const std::string& domain, const std::string& address,
                                              const std::string& client, bool refresh,
                                              Done done) override;
    void release_probe(const std::string& domain, const std::string& address,
                       const ProbeToken& token) override;
    std::optional<BudgetDecision> admit_mx(const std::string& ip, const std::string& provider,
                                           Done done) override;
    void release_mx(const std::string& ip) override;
    void back_off_mx(const std::string& ip, std::chrono::milliseconds how_long) override;
    void set_limits(const BudgetLimits& limits) override;

    // A probe or connection admitted elsewhere (by the cluster through Redis) is counted here
    // too, without asking: the local windows then know everything this node spent, so falling
    // back to them mid-window grants no fresh budget. Released like a local admission.
    void record_probe(const std::string& domain, const std::string& client);
    void record_mx(const std::string& ip, const std::string& provider);

    int64_t probes_running() const { return running_; }
    int64_t mx_running(const std::string& ip) const;
    size_t tracked_keys() const;

  private:
    BudgetLimits limits_;
    Now now_;
    size_t max_keys_;
    SlidingWindows domains_;
    SlidingWindows clients_;
    SlidingWindows global_;
    SlidingWindows mx_;
    SlidingWindows providers_;
    int64_t running_ = 0;
    std::unordered_map<std::string, int64_t> mx_running_;
    std::unordered_map<std::string, Clock::time_point> mx_backoff_;
};

}  // namespace calloutd
