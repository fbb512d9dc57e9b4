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

// Everything a callout found out; `verdict` is what the policy layer uses, the rest is for
// logs and `calloutd probe`.
struct CalloutReport {
    Verdict verdict;
    MxResolution mx;
    std::vector<std::pair<std::string, std::string>> refused;  // address, why (target guard)
    std::vector<HostAttempt> attempts;
    std::chrono::milliseconds elapsed{};
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

  private:
    struct Op {
        SenderAddress sender;
        Done done;
        DnsResolver::Handle dns = 0;
        std::shared_ptr<SmtpProbe> probe;
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
    std::mt19937_64 rng_;
    Handle next_ = 1;
    std::unordered_map<Handle, Op> ops_;
};

}  // namespace calloutd
