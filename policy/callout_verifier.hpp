// Sender verification: cache, single-flight probes, answer budget with in_progress.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>

#include "callout/callout.hpp"
#include "callout/uv_timer.hpp"
#include "policy/decider.hpp"
#include "storage/verdict_cache.hpp"

namespace calloutd {

class CalloutVerifier : public SenderVerifier {
  public:
    // Told about every finished probe (for logs and counters); `refresh` marks background
    // re-probes of a cached valid verdict.
    using ProbeObserver =
        std::function<void(const SenderAddress&, const CalloutReport&, bool refresh)>;

    CalloutVerifier(uv_loop_t* loop, VerdictCache& cache, Callout& callout,
                    std::chrono::milliseconds reply_timeout, ProbeObserver observer = {});
    ~CalloutVerifier() override;
    CalloutVerifier(const CalloutVerifier&) = delete;
    CalloutVerifier& operator=(const CalloutVerifier&) = delete;

    std::optional<Immediate> verify(const PolicyRequest& req, Done done) override;
    void set_reply_timeout(std::chrono::milliseconds t) { reply_timeout_ = t; }
    size_t probes_in_flight() const { return flights_.size(); }

  private:
    // A request waiting for a probe; answered in_progress when its reply budget runs out.
    struct Waiter {
        uint64_t id = 0;
        Done done;
        std::unique_ptr<UvTimer> budget;
    };
    // One probe per address at a time; every concurrent request for it joins as a waiter.
    struct Flight {
        SenderAddress sender;
        Callout::Handle handle = 0;
        bool refresh = false;
        std::list<Waiter> waiters;
    };

    std::optional<Immediate> after_lookup(const SenderAddress& sender, std::optional<CacheHit> hit,
                                          Done& done);
    void join(const SenderAddress& sender, Done done);
    Flight& start_flight(const SenderAddress& sender, bool refresh);
    void on_report(const std::string& address, CalloutReport report);
    void on_budget_spent(const std::string& address, uint64_t waiter_id);

    uv_loop_t* loop_;
    VerdictCache& cache_;
    Callout& callout_;
    std::chrono::milliseconds reply_timeout_;
    ProbeObserver observer_;
    std::unordered_map<std::string, Flight> flights_;
    uint64_t next_waiter_ = 1;
    // Guards callbacks that outlive this object (async cache lookups).
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace calloutd
