// The verdict cache interface (address verdicts and domain facts) shared by every backend.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "callout/verdict.hpp"

namespace calloutd {

using WallClock = std::chrono::system_clock;

// What is kept per verdict: compact enough for Redis, enough for a useful log line.
struct CachedVerdict {
    VerdictClass cls = VerdictClass::tempfail;
    std::string reason;
    WallClock::time_point probed_at;
    std::string remote_reply;  // short excerpt of the decisive SMTP reply, may be empty
    bool backoff = false;      // recorded because the target pushed back: kept for the back-off
    // Where it is kept: domain-scoped evidence under the domain (a fact answering every address
    // of the domain), anything else under the address. Back-off records are domain-scoped.
    EvidenceScope scope = EvidenceScope::address;
    // A valid verdict whose background refresh failed (epoch = never): the next refresh waits
    // for cache.tempfail_ttl after this, so a target that keeps failing is not re-probed by
    // every request for a hot sender.
    WallClock::time_point refresh_failed_at{};
};

struct CacheTtls {
    std::chrono::milliseconds positive{};  // valid
    std::chrono::milliseconds negative{};  // invalid
    std::chrono::milliseconds tempfail{};  // tempfail, domain-wide ones included; a stored skipped
    // accept_all, null_sender_rejected, policy_blocked, no_mail_domain, whether a domain fact or
    // about one address; and the "not accept-all" fact
    std::chrono::milliseconds domain{};
    std::chrono::milliseconds positive_refresh{};
    std::chrono::milliseconds backoff{};  // domain facts recorded after a target pushed back
};

// Kept under the domain and answering for every address of it: only domain-scoped evidence.
bool is_domain_fact(const CachedVerdict& v);
// How long a verdict of class c is kept; zero for classes that are never cached.
std::chrono::milliseconds ttl_for(VerdictClass c, const CacheTtls& ttls);
// The TTL of a stored verdict: its class's, or the back-off period.
std::chrono::milliseconds ttl_for(const CachedVerdict& v, const CacheTtls& ttls);
// Whether `incoming` may replace `current` (which is still live, under the same key). A failed
// refresh never overwrites a still-valid positive: only a definitive answer about the mailbox
// (valid or invalid) replaces a valid verdict.
bool may_replace(const CachedVerdict& current, const CachedVerdict& incoming);
// Whether `incoming` would replace a live valid verdict (a refresh that did not fail).
bool replaces_valid(const CachedVerdict& incoming);
// A valid verdict older than cache.positive_refresh, whose last failed refresh (if any) is at
// least cache.tempfail_ttl ago: served, and re-probed in the background.
bool refresh_due(const CachedVerdict& v, WallClock::time_point now, const CacheTtls& ttls);

// Which live entry answers a request when a domain fact and the address's own verdict may
// both exist: the address's own verdict (a fact about the domain must not hide what the
// mailbox itself said), except that a domain without mail (no_mail_domain) answers for every
// address; a domain fact answers addresses that have no verdict of their own.
enum class CacheAnswer { none, domain_fact, address };
CacheAnswer which_answers(const CachedVerdict* domain_fact, const CachedVerdict* address);

struct CacheHit {
    CachedVerdict verdict;
    bool domain_fact = false;  // answered by a fact about the sender's domain
    bool refresh_due = false;  // a valid verdict older than cache.positive_refresh, and no
                               // domain fact (a back-off, say) says to leave the domain alone
};

// Backends answer from memory at once where they can (peek), or later through lookup().
class VerdictCache {
  public:
    using LookupDone = std::function<void(std::optional<CacheHit>)>;
    // An immediate answer: the outer optional says "answered now", the inner one "found".
    using Immediate = std::optional<std::optional<CacheHit>>;

    virtual ~VerdictCache() = default;
    // Domain facts first (one fact answers every address of the domain), then the address.
    // Answers now when the backend can (memory, near-cache); nullopt means "ask lookup()".
    virtual Immediate peek(const std::string& domain, const std::string& address) = 0;
    // peek() into a hit the caller keeps from one request to the next, so that copying the
    // cached verdict's strings reuses their capacity: a cached answer allocates nothing.
    // `later`: ask lookup(); `miss`: nothing cached; `hit`: `out` holds the hit (otherwise
    // `out` is left as it was). The default goes through peek().
    enum class PeekResult { later, miss, hit };
    virtual PeekResult peek_into(const std::string& domain, const std::string& address,
                                 CacheHit& out) {
        Immediate now = peek(domain, address);
        if (!now) return PeekResult::later;
        if (!*now) return PeekResult::miss;
        out = std::move(**now);
        return PeekResult::hit;
    }
    // The same question for backends that must go elsewhere; `done` runs later, never from
    // inside lookup(). Only called after peek() could not answer.
    virtual void lookup(const std::string& domain, const std::string& address, LookupDone done) = 0;
    // Stores under the domain or the address depending on the class, with the class's TTL.
    virtual void store(const std::string& domain, const std::string& address,
                       const CachedVerdict& verdict) = 0;
    // Cluster backends report verdicts stored by other nodes (domain, address), so requests
    // waiting for another node's probe can be answered. Single-node backends never call it.
    // An empty listener stops the reports (its owner is going away).
    using StoredListener = std::function<void(const std::string&, const std::string&)>;
    virtual void set_listener(StoredListener) {}
    // Removes an address verdict or a domain fact (`calloutd cache del`).
    virtual void erase(const std::string& domain, const std::string& address) = 0;

    // The domain refused its random local part as unknown in a probe at `at`: it is not
    // accept-all (a domain fact kept for cache.domain_ttl, never an answer to a request).
    virtual void store_not_accept_all(const std::string& domain, WallClock::time_point at) = 0;
    // Whether that fact is live. Answers now when the backend can; otherwise nullopt, and
    // `later` runs with the answer from the loop (false when the backend cannot tell).
    virtual std::optional<bool> not_accept_all(const std::string& domain,
                                               std::function<void(bool)> later) = 0;
    // A background refresh of the live valid verdict of `address` failed just now (it did not
    // replace it): remember that, by the backend's clock, so the next refresh waits
    // cache.tempfail_ttl.
    virtual void note_failed_refresh(const std::string& domain, const std::string& address) = 0;
};

}  // namespace calloutd
