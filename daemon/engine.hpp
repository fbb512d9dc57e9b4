// The verification engine of a running daemon: verdict cache and probe budgets (in memory, or
// shared through Redis), the callout (DNS, SMTP probes) and the verifier that ties them together.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "callout/callout.hpp"
#include "daemon/config.hpp"
#include "daemon/counting_cache.hpp"
#include "daemon/metrics.hpp"
#include "policy/callout_verifier.hpp"
#include "policy/mx_budget.hpp"
#include "storage/memory_cache.hpp"
#include "storage/probe_budget.hpp"
#include "storage/redis_budget.hpp"
#include "storage/redis_cache.hpp"
#include "storage/redis_client.hpp"
#include "util/uv_timer.hpp"

namespace calloutd {

// Members are declared in the order they are built, each after what it refers to, so the
// implicit teardown (reverse order) is the right one: the verifier goes first and releases the
// budgets of the probes it cancels, the callout then releases the MX slots they hold, and only
// then go the budgets, the caches and the Redis client. stop() walks the same order and pauses
// before the Redis parts, so the releases just queued can reach Redis.
//
// Destroying the Engine closes libuv handles (timers, the resolver's, the Redis client's): the
// owner must run the loop once more afterwards.
class Engine {
  public:
    struct Hooks {
        // Told about every finished probe (logs, metrics).
        CalloutVerifier::ProbeObserver on_probe;
        // policy.skip_mx_hosts, asked on every callout so that a reload applies at once.
        std::function<bool(std::string_view mx_host)> skip_mx_host;
    };

    // Builds and starts everything (the Redis client connects, the DNS canary is asked); nullptr
    // with `error` set when a part cannot be built. `own_addresses` are the listeners' IPs,
    // which the target guard refuses.
    static std::unique_ptr<Engine> create(uv_loop_t* loop, const Config& config, Metrics& metrics,
                                          std::vector<IpAddress> own_addresses, Hooks hooks,
                                          std::string& error);
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // The verifier for the Decider; null once stop() has begun.
    SenderVerifier* verifier() { return verifier_.get(); }
    // Applies the keys of `next` that a reload may change (Reload::live in the schema).
    void apply(const Config& next);
    // Logs the stats line, cancels every probe, and frees the Redis parts once the commands in
    // flight (the releases of those probes) are answered or `settle` has passed. The local
    // cache stays, for `calloutd cache` until the daemon exits.
    void stop(std::chrono::milliseconds settle);

    // This node's own cache (in Redis mode: its local copies), for the control socket.
    MemoryVerdictCache& local_cache() { return cache_; }
    // "redis://host:port/db" as logged, or "" in memory mode (also after stop()).
    std::string redis_endpoint() const;
    bool redis_configured() const { return redis_configured_; }
    // The engine's part of a metrics scrape.
    void fill(MetricsSnapshot& s) const;

    // Constructible only through create(); the key keeps the constructor out of reach.
    class Key {
        friend class Engine;
        Key() = default;
    };
    Engine(Key, uv_loop_t* loop, const Config& config, Metrics& metrics);

  private:
    bool start_redis(const Config& config, std::string& error);
    bool start_probing(const Config& config, std::vector<IpAddress> own_addresses, Hooks hooks,
                       std::string& error);
    void adopt_cluster_secret();
    void log_stats();
    void settle_redis(std::chrono::steady_clock::time_point deadline);

    uv_loop_t* loop_;
    Metrics& metrics_;
    bool redis_configured_ = false;
    // Storage: this node's own cache and budgets, then the shared ones (cluster mode only).
    MemoryVerdictCache cache_;
    MemoryProbeBudget budget_;
    std::unique_ptr<RedisClient> redis_;
    std::unique_ptr<RedisVerdictCache> redis_cache_;
    std::unique_ptr<RedisProbeBudget> redis_budget_;
    uint64_t redis_ups_ = 0;
    std::unique_ptr<UvTimer> settle_timer_;  // stop(): waits for the Redis commands in flight
    // Probing: what the verifier asks (the shared cache or the local one, counted), the per-MX
    // budgets, the callout, the verifier, and the timer that logs their counters.
    std::unique_ptr<CountingCache> counting_cache_;
    std::unique_ptr<MxBudget> mx_budget_;
    std::unique_ptr<Callout> callout_;
    std::unique_ptr<CalloutVerifier> verifier_;
    std::unique_ptr<UvTimer> stats_timer_;
};

}  // namespace calloutd
