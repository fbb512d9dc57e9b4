// Sender verification: cache, single-flight probes, answer budget with in_progress.
//
// A sender is known by two names: the address as given, which is what the probe asks for, and
// its key (callout/tagged_sender.hpp: the canonical address of a BATV, SRS or VERP sender, else
// the address itself). Single flight, the in-flight marker and a `valid` verdict use the key, so
// every message of one tagged mailbox shares them; any other verdict stays with the address as
// given, because it may be about that one tag.
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
#include "policy/decider.hpp"
#include "storage/probe_budget.hpp"
#include "storage/verdict_cache.hpp"
#include "util/uv_timer.hpp"

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
        uint64_t denied_provider = 0;
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
    std::optional<Immediate> verify_parsed(const PolicyRequest& req, AddressParse&& parsed,
                                           const MakeDone& make_done) override;
    bool verify_into(const PolicyRequest& req, AddressParse&& parsed, const MakeDone& make_done,
                     Verdict& verdict, DecisionSource& source) override;
    void set_reply_timeout(std::chrono::milliseconds t) { reply_timeout_ = t; }
    // limits.client_ipv6_prefix: IPv6 clients share one client budget per network of this
    // size (a client that rotates addresses inside its /64 is still one client).
    void set_client_ipv6_prefix(int bits) { client_ipv6_prefix_ = bits; }
    // The client budget key for a client address: IPv4 by address, IPv6 by network.
    std::string client_key(const std::string& client_address) const;
    // Probes this node runs, and addresses it waits for while another node probes them.
    size_t probes_in_flight() const { return flights_.size() + remote_waits_.size(); }
    const Counters& counters() const { return counters_; }

  private:
    // One request's sender: the address to probe, its key, and the client who asked.
    struct Asked {
        SenderAddress sender;
        std::string key;
        std::string client;  // client_address as the MTA sent it
        bool tagged() const { return key != sender.address(); }
    };
    // A request on its way through the stages (cache lookup, admission, probe): what it asks and
    // how it is answered. Each stage answers at once, returning the answer and leaving the
    // request to its caller, or keeps the request (moved into a waiter or a callback) and
    // answers it later through `done`.
    struct Request {
        Asked asked;
        Done done;
    };
    // A request waiting for a probe; answered in_progress when its reply timer runs out.
    struct Waiter {
        uint64_t id = 0;
        std::string address;  // the address it asked about
        Done done;
        std::unique_ptr<UvTimer> reply_timer;  // server.reply_timeout from when it began waiting
    };
    // One probe per key at a time; every concurrent request for it joins as a waiter.
    struct Flight {
        SenderAddress sender;        // the address probed
        std::string key;             // what flights_ is keyed by (canonical for tagged senders)
        uint64_t id = 0;             // tells a flight from a later one for the same key
        Callout::Handle handle = 0;  // 0 until the callout starts
        bool refresh = false;
        ProbeToken token;  // budget admission, released when the verdict is stored
        std::list<Waiter> waiters;
    };
    // Requests for a key that another node is probing: answered from the cache once that node
    // has stored its verdict.
    struct RemoteWait {
        std::list<Waiter> waiters;
    };

    VerdictCache::Immediate find(const std::string& domain, const std::string& address,
                                 const std::string& key, VerdictCache::LookupDone done);
    VerdictCache::Immediate find_by_key(const std::string& domain, const std::string& key,
                                        VerdictCache::LookupDone done);
    std::optional<Immediate> after_lookup(Request& req, std::optional<CacheHit> hit);
    std::optional<Immediate> after_admission(Request& req, BudgetDecision d);
    static void answer(Request& req, std::optional<Immediate> answer);
    void add_waiter(std::list<Waiter>& waiters, const std::string& key, Request& req);
    void refresh(const Asked& asked);
    Flight& start_flight(const Asked& asked, bool refresh, ProbeToken token);
    void start_callout(const std::string& key, uint64_t flight_id, bool not_accept_all);
    void store_report(const Flight& flight, const CalloutReport& report);
    void on_stored_elsewhere(const std::string& domain, const std::string& address);
    void answer_remote(const std::string& key, const std::string& address,
                       std::optional<CacheHit> hit);
    void count_denial(BudgetKind kind);
    void on_report(const std::string& key, CalloutReport report);
    void on_reply_timeout(const std::string& key, uint64_t waiter_id);

    uv_loop_t* loop_;
    VerdictCache& cache_;
    Callout& callout_;
    ProbeBudget& budget_;
    std::chrono::milliseconds reply_timeout_;
    int client_ipv6_prefix_ = 64;
    Counters counters_;
    ProbeObserver observer_;
    std::unordered_map<std::string, Flight> flights_;           // probes of this node, by key
    std::unordered_map<std::string, RemoteWait> remote_waits_;  // probes of other nodes, by key
    std::string address_;                                       // verify_lazy()'s cache key, reused
    CacheHit hit_;  // verify_into()'s cache answer, reused (its strings keep their capacity)
    uint64_t next_waiter_ = 1;
    uint64_t next_flight_ = 1;
    // Guards callbacks that outlive this object (async cache lookups).
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace calloutd
