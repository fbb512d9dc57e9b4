// Per-MX budgets for the callout: connection rate, concurrency and back-off per target IP.
#pragma once

#include <chrono>
#include <memory>

#include "callout/callout.hpp"
#include "storage/probe_budget.hpp"

namespace calloutd {

// Adapts ProbeBudget's per-IP admission to the callout's TargetBudget hook. A target over
// budget is skipped; the probe tries the next MX host instead.
class MxBudget : public TargetBudget {
  public:
    MxBudget(ProbeBudget& budget, std::chrono::milliseconds backoff)
        : budget_(budget), backoff_(backoff) {}

    void admit(const ProbeTarget& target, std::function<void(bool)> done) override;
    void release(const ProbeTarget& target) override;
    void pushed_back(const std::string& ip) override;
    void set_backoff(std::chrono::milliseconds backoff) { backoff_ = backoff; }

  private:
    ProbeBudget& budget_;
    std::chrono::milliseconds backoff_;
};

}  // namespace calloutd
