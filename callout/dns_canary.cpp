// DNS health canary: one check at a time, at most one per interval, listeners told on change.
#include "callout/dns_canary.hpp"

namespace calloutd {

DnsCanary::DnsCanary(DnsResolver& dns, std::string name, std::chrono::milliseconds interval)
    : dns_(dns), name_(std::move(name)), interval_(interval) {}

DnsCanary::~DnsCanary() {
    if (running_ != 0) dns_.cancel(running_);
}

void DnsCanary::check_now() {
    if (!enabled() || running_ != 0) return;
    // The resolver never calls back from inside check_name(), so running_ is set first.
    running_ = dns_.check_name(name_, [this](NameCheck r) { on_checked(std::move(r)); });
}

std::optional<bool> DnsCanary::fresh_state() {
    if (!enabled()) return true;
    if (healthy_ && std::chrono::steady_clock::now() - checked_at_ < interval_) return healthy_;
    check_now();
    return std::nullopt;
}

void DnsCanary::after_check(std::function<void(bool)> done) {
    check_now();
    waiting_.push_back(std::move(done));
}

void DnsCanary::on_checked(NameCheck result) {
    running_ = 0;
    checked_at_ = std::chrono::steady_clock::now();
    const bool changed = !healthy_ || *healthy_ != result.resolves;
    healthy_ = result.resolves;
    reason_ = std::move(result.reason);
    if (changed && listener_) listener_(*healthy_, reason_);
    // A callback may start a new check, or destroy the canary with its owner: take the list
    // first and stop once the canary is gone.
    std::vector<std::function<void(bool)>> waiting;
    waiting.swap(waiting_);
    const bool healthy = *healthy_;
    std::weak_ptr<bool> alive = alive_;
    for (auto& done : waiting) {
        if (alive.expired()) return;
        done(healthy);
    }
}

}  // namespace calloutd
