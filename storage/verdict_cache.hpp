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
    // A valid verdict whose background refresh failed (epoch = never): the next refresh waits
    // for cache.tempfail_ttl after this, so a target that keeps failing is not re-probed by
    // every request for a hot sender.
    WallClock::time_point refresh_failed_at{};
};

struct CacheTtls {
    std::chrono::milliseconds positive{};  // valid
    std::chrono::milliseconds negative{};  // invalid
    std::chrono::milliseconds tempfail{};
    std::chrono::milliseconds domain{};  // accept_all, null_sender_rejected, policy_blocked,
                                         // no_mail_domain
    std::chrono::milliseconds positive_refresh{};
    std::chrono::milliseconds backoff{};  // domain facts recorded after a target pushed back
};

// Classes that describe the whole domain rather than one mailbox.
bool is_domain_fact(VerdictClass c);
// How long a verdict of class c is kept; zero for classes that are never cached.
std::chrono::milliseconds ttl_for(VerdictClass c, const CacheTtls& ttls);
// The TTL of a stored verdict: its class's, or the back-off period.
std::chrono::milliseconds ttl_for(const CachedVerdict& v, const CacheTtls& ttls);
// Whether `incoming` may replace `current` (which is still live). A failed refresh never
// overwrites a still-valid positive: only a definitive answer (valid, invalid, or a domain
// fact) replaces a valid verdict.
bool may_replace(const CachedVerdict& current, const CachedVerdict& incoming);
// Whether `incoming` would replace a live valid verdict (a refresh that did not fail).
bool replaces_valid(const CachedVerdict& incoming);
// A valid verdict older than cache.positive_refresh, whose last failed refresh (if any) is at
// least cache.tempfail_ttl ago: served, and re-probed in the background.
bool refresh_due(const CachedVerdict& v, WallClock::time_point now, const CacheTtls& ttls);

struct CacheHit {
    CachedVerdict verdict;
    bool domain_fact = false;  // answered by a fact about the sender's domain
    bool refresh_due = false;  // a valid verdict older than cache.positive_refresh
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
    // A background refresh of the live valid verdict of `address` failed just now (it did not
    // replace it): remember that, by the backend's clock, so the next refresh waits
    // cache.tempfail_ttl.
    virtual void note_failed_refresh(const std::string& domain, const std::string& address) = 0;
};

}  // namespace calloutd
