// Probe budgets shared through Redis: one atomic admission per probe for the whole cluster.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>

#include "storage/probe_budget.hpp"
#include "storage/redis_client.hpp"

namespace calloutd {

// admit_probe runs one Lua script that checks the shared cache, another node's in-flight
// marker and the domain/client/global windows, and sets the marker — atomically, with Redis's
// clock. While Redis is unreachable or slow, the node's own MemoryProbeBudget decides
// (degraded: a node alone never exceeds the cluster budget).
class RedisProbeBudget : public ProbeBudget {
  public:
    struct Counters {
        uint64_t degraded = 0;  // decisions made locally because Redis was down or slow
        uint64_t errors = 0;    // release/back-off commands that failed
    };

    // `probe_lifetime` bounds how long an admitted probe can run (markers and running slots
    // expire after it, so a node that dies mid-probe does not block the address for long).
    RedisProbeBudget(RedisClient& client, MemoryProbeBudget& local, const BudgetLimits& limits,
                     std::chrono::milliseconds probe_lifetime, std::string node_id);

    std::optional<BudgetDecision> admit_probe(const std::string& domain, const std::string& address,
                                              const std::string& client, bool refresh,
                                              Done done) override;
    void release_probe(const std::string& domain, const std::string& address,
                       const std::string& token) override;
    std::optional<BudgetDecision> admit_mx(const std::string& ip, Done done) override;
    void release_mx(const std::string& ip) override;
    void back_off_mx(const std::string& ip, std::chrono::milliseconds how_long) override;
    void set_limits(const BudgetLimits& limits) override;

    const Counters& counters() const { return counters_; }

  private:
    std::string next_token();
    BudgetDecision local_probe(const std::string& domain, const std::string& address,
                               const std::string& client, bool refresh);
    BudgetDecision local_mx(const std::string& ip);

    RedisClient& client_;
    MemoryProbeBudget& local_;
    BudgetLimits limits_;
    std::chrono::milliseconds lifetime_;
    std::string node_id_;
    uint64_t sequence_ = 0;
    // Admitted MX slots per IP, oldest first; "local" marks slots the local budget granted.
    std::unordered_map<std::string, std::deque<std::string>> mx_tokens_;
    Counters counters_;
};

}  // namespace calloutd
