// Walks the MX candidates in order, admitting each against its IP's budget.
#include "policy/mx_budget.hpp"

namespace calloutd {

// One admission pass over the candidates; backends may answer each IP later.
struct MxBudget::Pass {
    std::vector<ProbeTarget> candidates;
    size_t next = 0;
    size_t max = 0;
    std::vector<ProbeTarget> admitted;
    Admitted done;
};

void MxBudget::admit(std::vector<ProbeTarget> candidates, size_t max, Admitted done) {
    auto pass = std::make_shared<Pass>();
    pass->candidates = std::move(candidates);
    pass->max = max;
    pass->done = std::move(done);
    step(pass);
}

void MxBudget::step(std::shared_ptr<Pass> pass) {
    while (pass->next < pass->candidates.size() && pass->admitted.size() < pass->max) {
        const ProbeTarget& t = pass->candidates[pass->next++];
        auto on_decision = [this, pass, t](BudgetDecision d) {
            if (d.admitted) {
                pass->admitted.push_back(t);
            } else {
                ++denied_;
            }
        };
        auto now = budget_.admit_mx(t.ip, [this, pass, on_decision](BudgetDecision d) {
            on_decision(d);
            step(pass);
        });
        if (!now) return;  // continues from the callback
        on_decision(*now);
    }
    pass->done(std::move(pass->admitted));
}

void MxBudget::release(const std::vector<ProbeTarget>& admitted) {
    for (const auto& t : admitted) budget_.release_mx(t.ip);
}

void MxBudget::pushed_back(const std::string& ip) {
    budget_.back_off_mx(ip, backoff_);
}

}  // namespace calloutd
