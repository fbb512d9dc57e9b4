// Per-MX admission for the callout, on top of the probe budget's per-IP and per-provider rates.
#include "policy/mx_budget.hpp"

#include <libpsl.h>

#include "util/ascii.hpp"

namespace calloutd {

std::string mx_provider(std::string_view mx_host) {
    std::string host = ascii_lower(mx_host);
    if (!host.empty() && host.back() == '.') host.pop_back();
    // psl_builtin() is the list compiled into libpsl; it is static data, never freed.
    const psl_ctx_t* psl = psl_builtin();
    const char* registrable = psl != nullptr ? psl_registrable_domain(psl, host.c_str()) : nullptr;
    return registrable != nullptr ? std::string(registrable) : host;
}

void MxBudget::admit(const ProbeTarget& target, std::function<void(TargetAdmission)> done) {
    auto decided = [done](BudgetDecision d) {
        TargetAdmission a;
        a.admitted = d.admitted;
        if (!d.admitted) a.denied_by = std::string(to_string(d.denied_by));
        done(std::move(a));
    };
    if (auto now = budget_.admit_mx(target.ip, mx_provider(target.mx_host), decided)) {
        decided(*now);
    }
}

void MxBudget::release(const ProbeTarget& target) {
    budget_.release_mx(target.ip);
}

void MxBudget::pushed_back(const std::string& ip) {
    budget_.back_off_mx(ip, backoff_);
}

}  // namespace calloutd
