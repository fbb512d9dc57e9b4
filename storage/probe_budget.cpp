// In-memory probe budgets for a single node.
#include "storage/probe_budget.hpp"

#include <algorithm>

namespace calloutd {

std::string_view to_string(BudgetKind k) {
    switch (k) {
        case BudgetKind::domain:
            return "domain";
        case BudgetKind::client:
            return "client";
        case BudgetKind::global:
            return "global";
        case BudgetKind::mx:
            return "mx";
        case BudgetKind::provider:
            return "provider";
    }
    return "global";
}

BudgetLimits node_share(const BudgetLimits& limits, int64_t nodes) {
    if (nodes <= 1) return limits;
    auto share = [nodes](int64_t n) {
        return n <= 0 ? n : std::max<int64_t>(1, (n + nodes - 1) / nodes);
    };
    auto rate = [&](Rate r) {
        if (!r.unlimited) r.count = static_cast<uint32_t>(share(r.count));
        return r;
    };
    BudgetLimits out = limits;
    out.domain_rate = rate(limits.domain_rate);
    out.client_rate = rate(limits.client_rate);
    out.global_rate = rate(limits.global_rate);
    out.global_concurrency = share(limits.global_concurrency);
    out.mx_rate = rate(limits.mx_rate);
    out.mx_concurrency = share(limits.mx_concurrency);
    out.provider_rate = rate(limits.provider_rate);
    return out;
}

MemoryProbeBudget::MemoryProbeBudget(const BudgetLimits& limits, Now now, size_t max_keys)
    : limits_(limits),
      now_(std::move(now)),
      max_keys_(max_keys),
      domains_(limits.domain_rate, max_keys),
      clients_(limits.client_rate, max_keys),
      global_(limits.global_rate, 1),
      mx_(limits.mx_rate, max_keys),
      providers_(limits.provider_rate, max_keys) {}

void MemoryProbeBudget::set_limits(const BudgetLimits& limits) {
    limits_ = limits;
    domains_.set_rate(limits.domain_rate);
    clients_.set_rate(limits.client_rate);
    global_.set_rate(limits.global_rate);
    mx_.set_rate(limits.mx_rate);
    providers_.set_rate(limits.provider_rate);
}

std::optional<BudgetDecision> MemoryProbeBudget::admit_probe(const std::string& domain,
                                                             const std::string&,
                                                             const std::string& client, bool,
                                                             Done) {
    auto now = now_();
    auto deny = [](BudgetKind k) {
        BudgetDecision d;
        d.admitted = false;
        d.denied_by = k;
        return d;
    };
    // Check everything before spending anything: a denied probe costs no budget.
    if (!domains_.allows(domain, now)) return deny(BudgetKind::domain);
    if (!clients_.allows(client, now)) return deny(BudgetKind::client);
    if (running_ >= limits_.global_concurrency || !global_.allows("", now)) {
        return deny(BudgetKind::global);
    }
    domains_.record(domain, now);
    clients_.record(client, now);
    global_.record("", now);
    ++running_;
    return BudgetDecision{};
}

void MemoryProbeBudget::release_probe(const std::string&, const std::string&, const ProbeToken&) {
    if (running_ > 0) --running_;
}

void MemoryProbeBudget::record_probe(const std::string& domain, const std::string& client) {
    auto now = now_();
    domains_.record(domain, now);
    clients_.record(client, now);
    global_.record("", now);
    ++running_;
}

std::optional<BudgetDecision> MemoryProbeBudget::admit_mx(const std::string& ip,
                                                          const std::string& provider, Done) {
    auto now = now_();
    BudgetDecision deny;
    deny.admitted = false;
    deny.denied_by = BudgetKind::mx;
    if (auto it = mx_backoff_.find(ip); it != mx_backoff_.end()) {
        if (it->second > now) return deny;
        mx_backoff_.erase(it);
    }
    auto running = mx_running_.find(ip);
    if (running != mx_running_.end() && running->second >= limits_.mx_concurrency) return deny;
    if (!mx_.allows(ip, now)) return deny;
    if (!providers_.allows(provider, now)) {
        deny.denied_by = BudgetKind::provider;
        return deny;
    }
    record_mx(ip, provider);
    return BudgetDecision{};
}

void MemoryProbeBudget::record_mx(const std::string& ip, const std::string& provider) {
    auto now = now_();
    mx_.record(ip, now);
    providers_.record(provider, now);
    ++mx_running_[ip];
}

void MemoryProbeBudget::release_mx(const std::string& ip) {
    auto it = mx_running_.find(ip);
    if (it == mx_running_.end()) return;
    if (--it->second <= 0) mx_running_.erase(it);
}

void MemoryProbeBudget::back_off_mx(const std::string& ip, std::chrono::milliseconds how_long) {
    auto now = now_();
    // Expired entries are dropped before the bound is checked; a full table keeps what it has.
    if (mx_backoff_.size() >= max_keys_) {
        std::erase_if(mx_backoff_, [&](const auto& kv) { return kv.second <= now; });
        if (mx_backoff_.size() >= max_keys_) return;
    }
    auto& until = mx_backoff_[ip];
    until = std::max(until, now + how_long);
}

int64_t MemoryProbeBudget::mx_running(const std::string& ip) const {
    auto it = mx_running_.find(ip);
    return it == mx_running_.end() ? 0 : it->second;
}

size_t MemoryProbeBudget::tracked_keys() const {
    return domains_.keys() + clients_.keys() + global_.keys() + mx_.keys() + providers_.keys() +
           mx_running_.size() + mx_backoff_.size();
}

}  // namespace calloutd
