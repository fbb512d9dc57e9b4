// Per-MX admission for the callout, on top of the probe budget's per-IP rate and concurrency.
#include "policy/mx_budget.hpp"

namespace calloutd {

void MxBudget::admit(const ProbeTarget& target, std::function<void(bool)> done) {
    auto decided = [done](BudgetDecision d) { done(d.admitted); };
    if (auto now = budget_.admit_mx(target.ip, decided)) decided(*now);
}

void MxBudget::release(const ProbeTarget& target) {
    budget_.release_mx(target.ip);
}

void MxBudget::pushed_back(const std::string& ip) {
    budget_.back_off_mx(ip, backoff_);
}

}  // namespace calloutd
