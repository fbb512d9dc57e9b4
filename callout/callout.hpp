// One callout, end to end: MX lookup, target guard, SMTP probe, classification.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "callout/address.hpp"
#include "callout/dns_resolver.hpp"
#include "callout/smtp_probe.hpp"
#include "callout/target_guard.hpp"
#include "callout/verdict.hpp"

namespace calloutd {

struct CalloutOptions {
    DnsOptions dns;
    ProbeOptions probe;  // helo_name empty = this host's name
    size_t max_mx = 3;
    CidrSet allow_networks;
    std::vector<IpAddress> own_addresses;
    std::optional<uint64_t> seed;  // random local parts; unset = random_device
};

// Per-MX budgets, consulted right before each connection: a target over budget is skipped and
// the probe moves on to the next MX host.
class TargetBudget {
  public:
    virtual ~TargetBudget() = default;
    // Calls `done` (possibly before returning) with whether `target` may be connected to now;
    // an admitted target holds a slot until release().
    virtual void admit(const ProbeTarget& target, std::function<void(bool)> done) = 0;
    virtual void release(const ProbeTarget& target) = 0;
    // The target at `ip` pushed back (421, rate limited, blocked).
    virtual void pushed_back(const std::string& ip) = 0;
};

// Everything a callout found out; `verdict` is what the policy layer uses, the rest is for
// logs and `calloutd probe`.
struct CalloutReport {
    Verdict verdict;
    MxResolution mx;
    std::vector<std::pair<std::string, std::string>> refused;  // address, why (target guard)
    std::vector<HostAttempt> attempts;
    std::chrono::milliseconds elapsed{};
    bool pushback = false;  // the decisive server told us to go away
};

class Callout {
  public:
    using Handle = uint64_t;
    using Done = std::function<void(CalloutReport)>;
    class Key {
        friend class Callout;
        Key() = default;
    };

    // nullptr with `error` set when the DNS configuration is unusable.
    static std::unique_ptr<Callout> create(uv_loop_t* loop, CalloutOptions options,
                                           std::string& error);
    Callout(Key, uv_loop_t* loop, CalloutOptions options, std::unique_ptr<DnsResolver> dns);
    ~Callout();
    Callout(const Callout&) = delete;
    Callout& operator=(const Callout&) = delete;

    // Starts verifying `sender`; `done` runs later from the loop, never from inside start().
    Handle start(const SenderAddress& sender, Done done);
    // The callback of `h` will not run; its I/O stops.
    void cancel(Handle h);
    size_t in_flight() const { return ops_.size(); }
    const DnsStats& dns_stats() const { return dns_->stats(); }
    // Optional; not owned; must outlive every callout started while it is set.
    void set_target_budget(TargetBudget* budget) { budget_ = budget; }

  private:
    struct Op {
        SenderAddress sender;
        Done done;
        DnsResolver::Handle dns = 0;
        std::shared_ptr<SmtpProbe> probe;
        size_t mx_denied = 0;  // targets skipped by the per-MX budget
        CalloutReport report;
        std::chrono::steady_clock::time_point started;
    };

    void on_mx(Handle h, MxResolution mx);
    void on_probe(Handle h, ProbeResult result);
    void finish(Handle h, Verdict verdict);

    uv_loop_t* loop_;
    CalloutOptions options_;
    std::unique_ptr<DnsResolver> dns_;
    TargetGuard guard_;
    TargetBudget* budget_ = nullptr;
    std::mt19937_64 rng_;
    Handle next_ = 1;
    std::unordered_map<Handle, Op> ops_;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace calloutd
