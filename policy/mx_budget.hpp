// Per-MX budgets for the callout: connection rate, concurrency and back-off per target IP, and
// the connection rate per provider (the registrable domain of the MX host name).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "callout/callout.hpp"
#include "storage/probe_budget.hpp"

namespace calloutd {

// The provider an MX host belongs to: the registrable domain of its name by the public suffix
// list (libpsl's built-in copy), e.g. "google.com" for aspmx.l.google.com and
// "outlook.com" for example-com.mail.protection.outlook.com. A provider with hundreds of MX IPs
// is one provider. A name that is itself a public suffix (or has no registrable part) is its
// own provider.
std::string mx_provider(std::string_view mx_host);

// Adapts ProbeBudget's per-IP and per-provider admission to the callout's TargetBudget hook. A
// target over budget is skipped; the probe tries the next MX host instead.
class MxBudget : public TargetBudget {
  public:
    MxBudget(ProbeBudget& budget, std::chrono::milliseconds backoff)
        : budget_(budget), backoff_(backoff) {}

    void admit(const ProbeTarget& target, std::function<void(TargetAdmission)> done) override;
    void release(const ProbeTarget& target) override;
    void pushed_back(const std::string& ip) override;
    void set_backoff(std::chrono::milliseconds backoff) { backoff_ = backoff; }

  private:
    ProbeBudget& budget_;
    std::chrono::milliseconds backoff_;
};

}  // namespace calloutd
