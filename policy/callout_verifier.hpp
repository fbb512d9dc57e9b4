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
#include "storage/probe_budget.hpp"
#include "storage/verdict_cache.hpp"

namespace calloutd {

class CalloutVerifier : public SenderVerifier {
  public:
    // Told about every finished probe (for logs and counters); `refresh` marks background
    // re-probes of a cached valid verdict.
    using ProbeObserver =
        std::function<void(const SenderAddress&, const CalloutReport&, bool refresh)>;

    // Counters of probe admission, per budget kind (also exported by the daemon's logs).
    struct Counters {
        uint64_t admitted = 0;
        uint64_t denied_domain = 0;
        uint64_t denied_client = 0;
        uint64_t denied_global = 0;
        uint64_t denied_mx = 0;
        uint64_t joined = 0;  // requests that shared a running probe
        uint64_t cache_hits = 0;
    };

    CalloutVerifier(uv_loop_t* loop, VerdictCache& cache, Callout& callout, ProbeBudget& budget,
                    std::chrono::milliseconds reply_timeout, ProbeObserver observer = {});
    ~CalloutVerifier() override;
    CalloutVerifier(const CalloutVerifier&) = delete;
    CalloutVerifier& operator=(const CalloutVerifier&) = delete;

    std::optional<Immediate> verify(const PolicyRequest& req, Done done) override;
    std::optional<Immediate> verify_lazy(const PolicyRequest& req,
                                         const MakeDone& make_done) override;
    void set_reply_timeout(std::chrono::milliseconds t) { reply_timeout_ = t; }
    size_t probes_in_flight() const { return flights_.size(); }
    const Counters& counters() const { return counters_; }

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
        uint64_t id = 0;             // tells a flight from a later one for the same address
        Callout::Handle handle = 0;  // 0 until the callout starts
        bool refresh = false;
        bool remote = false;  // probed by another node; we only wait for its verdict
        std::string token;    // budget admission, released when the verdict is stored
        std::list<Waiter> waiters;
    };

    std::optional<Immediate> after_lookup(const SenderAddress& sender, const std::string& client,
                                          std::optional<CacheHit> hit, Done& done);
    std::optional<Immediate> after_admission(const SenderAddress& sender, BudgetDecision d,
                                             Done& done);
    void add_waiter(Flight& flight, Done done);
    void refresh(const SenderAddress& sender, const std::string& client);
    Flight& start_flight(const SenderAddress& sender, bool refresh, std::string token);
    void start_callout(const std::string& address, uint64_t flight_id, bool not_accept_all);
    void store_report(const SenderAddress& sender, const CalloutReport& report);
    void on_stored_elsewhere(const std::string& domain, const std::string& address);
    void count_denial(BudgetKind kind);
    void on_report(const std::string& address, CalloutReport report);
    void on_budget_spent(const std::string& address, uint64_t waiter_id);

    uv_loop_t* loop_;
    VerdictCache& cache_;
    Callout& callout_;
    ProbeBudget& budget_;
    std::chrono::milliseconds reply_timeout_;
    Counters counters_;
    ProbeObserver observer_;
    std::unordered_map<std::string, Flight> flights_;
    std::string address_;  // verify_lazy()'s cache key, reused
    uint64_t next_waiter_ = 1;
    uint64_t next_flight_ = 1;
    // Guards callbacks that outlive this object (async cache lookups).
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace calloutd
