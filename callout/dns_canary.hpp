// DNS health canary: a name every working resolver answers. While it does not resolve, an
// NXDOMAIN is not believed (a captive, hijacked or offline resolver says NXDOMAIN to everything).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "callout/dns_resolver.hpp"

namespace calloutd {

class DnsCanary {
  public:
    // Told once per change of state (and after the first check): healthy or not, and why.
    using Listener = std::function<void(bool healthy, const std::string& reason)>;

    // `name` empty = disabled (always healthy). Checks are at least `interval` apart.
    DnsCanary(DnsResolver& dns, std::string name, std::chrono::milliseconds interval);
    ~DnsCanary();
    DnsCanary(const DnsCanary&) = delete;
    DnsCanary& operator=(const DnsCanary&) = delete;

    bool enabled() const { return !name_.empty(); }
    const std::string& name() const { return name_; }
    // The reason of the last completed check ("ns", "refused", "nxdomain" ...).
    const std::string& reason() const { return reason_; }
    // The result of the last completed check; nullopt before the first one or when disabled.
    std::optional<bool> last_state() const { return enabled() ? healthy_ : std::nullopt; }

    // Starts a check unless one is running (at start-up).
    void check_now();
    // The state when it is known and no older than the interval; otherwise nullopt, and a
    // check is started (unless one runs) whose result goes to the callbacks of after_check().
    std::optional<bool> fresh_state();
    // Runs `done(healthy)` from the loop when the running check completes.
    void after_check(std::function<void(bool healthy)> done);
    void set_listener(Listener listener) { listener_ = std::move(listener); }

  private:
    void on_checked(NameCheck result);

    DnsResolver& dns_;
    std::string name_;
    std::chrono::milliseconds interval_;
    DnsResolver::Handle running_ = 0;
    std::optional<bool> healthy_;
    std::string reason_;
    std::chrono::steady_clock::time_point checked_at_{};
    std::vector<std::function<void(bool)>> waiting_;
    Listener listener_;
    // Expires with the canary, so delivery notices a callback that destroyed its owner.
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace calloutd
