// The running daemon: event loop, policy server, signals (TERM/INT drain, HUP reload).
#pragma once

#include <uv.h>

#include <chrono>
#include <memory>

#include "callout/callout.hpp"
#include "daemon/config.hpp"
#include "daemon/control_server.hpp"
#include "daemon/counting_cache.hpp"
#include "daemon/metrics.hpp"
#include "daemon/metrics_listener.hpp"
#include "daemon/server.hpp"
#include "policy/callout_verifier.hpp"
#include "policy/decider.hpp"
#include "policy/mx_budget.hpp"
#include "storage/memory_cache.hpp"
#include "storage/redis_budget.hpp"
#include "storage/redis_cache.hpp"
#include "storage/redis_client.hpp"

namespace calloutd {

class Daemon {
  public:
    explicit Daemon(Config config);
    ~Daemon();
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;

    // Runs until SIGTERM/SIGINT; returns the process exit code.
    int run();

  private:
    static void on_signal(uv_signal_t* handle, int signum);
    void reload();
    void reload_config();
    void begin_shutdown(int signum);
    void finish_shutdown();
    bool drop_privileges();
    bool start_engine();
    bool start_redis(std::string& error);
    void adopt_cluster_secret();
    // `settle_redis`: let the commands queued while stopping (probe and MX slot releases) reach
    // Redis first; false when the loop no longer runs.
    void stop_engine(bool settle_redis);
    void close_redis(std::chrono::steady_clock::time_point deadline);
    void log_stats();
    bool start_observability();
    void tick_rates();
    MetricsSnapshot snapshot() const;
    std::string render_metrics() const;
    ControlReply control(const ControlRequest& request);

    uv_loop_t loop_;
    Config config_;
    Metrics metrics_;
    RecentRates rates_;
    std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
    std::unique_ptr<Decider> decider_;
    std::unique_ptr<Server> server_;
    std::unique_ptr<MemoryVerdictCache> cache_;
    std::unique_ptr<MemoryProbeBudget> budget_;
    std::unique_ptr<RedisClient> redis_;
    std::unique_ptr<RedisVerdictCache> redis_cache_;
    std::unique_ptr<RedisProbeBudget> redis_budget_;
    uint64_t redis_ups_ = 0;
    std::unique_ptr<CountingCache> counting_cache_;
    std::unique_ptr<UvTimer> redis_settle_;
    std::unique_ptr<MxBudget> mx_budget_;
    std::unique_ptr<Callout> callout_;
    std::unique_ptr<UvTimer> stats_timer_;
    std::unique_ptr<CalloutVerifier> verifier_;
    std::unique_ptr<UvTimer> rates_timer_;
    std::unique_ptr<MetricsListener> metrics_listener_;
    std::unique_ptr<ControlServer> control_;
    uv_signal_t sigterm_;
    uv_signal_t sigint_;
    uv_signal_t sighup_;
    uv_timer_t shutdown_timer_;
    bool shutting_down_ = false;
    bool finished_ = false;
};

}  // namespace calloutd
