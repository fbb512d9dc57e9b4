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
// (degraded). That local budget holds this node's share of the cluster's (node_share: the
// rates divided by redis.nodes) and counts every probe and connection the node admits, through
// Redis or not, so losing Redis mid-window grants no fresh budget: one node never exceeds the
// configured rates, and N nodes without Redis stay within them when redis.nodes = N.
class RedisProbeBudget : public ProbeBudget {
  public:
    struct Counters {
        uint64_t degraded = 0;  // decisions made locally because Redis was down or slow
        uint64_t errors = 0;    // release/back-off commands that failed
    };

    // `probe_lifetime` bounds how long an admitted probe can run (markers and running slots
    // expire after it, so a node that dies mid-probe does not block the address for long).
    // `nodes`: how many nodes share the Redis (redis.nodes); `local` is given their share.
    RedisProbeBudget(RedisClient& client, MemoryProbeBudget& local, const BudgetLimits& limits,
                     std::chrono::milliseconds probe_lifetime, std::string node_id,
                     int64_t nodes = 1);

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

    const Counters& counters() const { return counters_; }

  private:
    std::string next_token();
    // Admissions by the node's own budget; `redis_token` names the admission Redis did not
    // answer in time ("" when none was sent).
    BudgetDecision local_probe(const std::string& domain, const std::string& address,
                               const std::string& client, bool refresh,
                               const std::string& redis_token);
    BudgetDecision local_mx(const std::string& ip, const std::string& provider,
                            const std::string& redis_token);
    // Frees the Redis side of a released token: a local grant only if Redis is reachable now.
    bool releases_in_redis(const ProbeToken& token) const;

    RedisClient& client_;
    MemoryProbeBudget& local_;
    BudgetLimits limits_;
    std::chrono::milliseconds lifetime_;
    std::string node_id_;
    int64_t nodes_ = 1;
    uint64_t sequence_ = 0;
    // Admitted MX slots per IP, oldest first.
    std::unordered_map<std::string, std::deque<ProbeToken>> mx_tokens_;
    Counters counters_;
};

}  // namespace calloutd
