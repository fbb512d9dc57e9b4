// One callout, end to end: MX lookup, target guard, SMTP probe, classification.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "callout/address.hpp"
#include "callout/classifier.hpp"
#include "callout/dns_canary.hpp"
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
    // Key of the random local parts (stable per domain and day); empty = this host's secret
    // (host_random_secret()). A cluster shares one through Redis (set_random_secret()).
    std::string random_secret;
    // dns.canary: a name that must resolve before an NXDOMAIN or an MX-less, address-less
    // domain is believed; "." = the root zone's NS set; empty = no canary (believe the resolver).
    std::string dns_canary;
    std::chrono::milliseconds canary_interval{60000};  // at most one canary check per interval
};

// Whether a target may be connected to now, and if not, which budget said no.
struct TargetAdmission {
    bool admitted = true;
    std::string denied_by;  // the budget that refused ("mx", "provider"), when not admitted
};

// Per-MX budgets, consulted right before each connection: a target over budget is skipped and
// the probe moves on to the next MX host.
class TargetBudget {
  public:
    virtual ~TargetBudget() = default;
    // Calls `done` (possibly before returning) with whether `target` may be connected to now;
    // an admitted target holds a slot until release().
    virtual void admit(const ProbeTarget& target, std::function<void(TargetAdmission)> done) = 0;
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
    bool pushback = false;  // the decisive server pushed back at the connection level
    // What the random local part said about the domain (domain facts for the caller to keep).
    RandomLocalPartEvidence random;
    std::string skipped_mx;  // the MX host that matched the skip_mx_hosts filter, if any
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
    // `ctx` carries cached knowledge about the domain into the classifier.
    Handle start(const SenderAddress& sender, Done done, ClassifyContext ctx = {});
    // The callback of `h` will not run; its I/O stops.
    void cancel(Handle h);
    size_t in_flight() const { return ops_.size(); }
    const DnsStats& dns_stats() const { return dns_->stats(); }
    // Optional; not owned; must outlive every callout started while it is set.
    void set_target_budget(TargetBudget* budget) { budget_ = budget; }
    // Replaces the key of the random local parts (a cluster-wide secret arrived from Redis).
    void set_random_secret(std::string secret) { options_.random_secret = std::move(secret); }
    // The random local part asked at `domain` today.
    std::string random_local_part_for(const std::string& domain) const;
    // Checks the DNS canary now (at start-up); the listener hears each change of its state.
    void check_dns_canary() { canary_.check_now(); }
    void set_canary_listener(DnsCanary::Listener l) { canary_.set_listener(std::move(l)); }
    // The canary's last known state (metrics, status); nullopt when there is no canary.
    std::optional<bool> dns_canary_state() const { return canary_.last_state(); }
    // Optional: MX host names (lower case) that must never be connected to. Asked for every MX
    // host after the lookup and before any connection; one match ends the callout `skipped`
    // (reason skip-mx), since the probe could otherwise move on to that host.
    using MxHostFilter = std::function<bool(std::string_view host)>;
    void set_mx_host_filter(MxHostFilter filter) { mx_filter_ = std::move(filter); }

  private:
    struct Op {
        SenderAddress sender;
        Done done;
        ClassifyContext ctx;
        DnsResolver::Handle dns = 0;
        std::shared_ptr<SmtpProbe> probe;
        size_t mx_denied = 0;   // targets skipped by the per-MX budgets
        std::string denied_by;  // the budget that refused the last of them
        CalloutReport report;
        std::chrono::steady_clock::time_point started;
    };

    void on_mx(Handle h, MxResolution mx);
    void on_no_mail_domain(Handle h, bool canary_healthy);
    void on_probe(Handle h, ProbeResult result);
    void finish(Handle h, Verdict verdict);

    uv_loop_t* loop_;
    CalloutOptions options_;
    std::unique_ptr<DnsResolver> dns_;
    TargetGuard guard_;
    TargetBudget* budget_ = nullptr;
    DnsCanary canary_;
    MxHostFilter mx_filter_;
    Handle next_ = 1;
    std::unordered_map<Handle, Op> ops_;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace calloutd
