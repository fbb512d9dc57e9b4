// A VerdictCache that counts lookups by result for calloutd_cache_lookups_total.
#pragma once

#include <cstdint>

#include "daemon/metrics.hpp"
#include "storage/verdict_cache.hpp"

namespace calloutd {

// Wraps the backend the verifier uses, so counting needs no change in policy/ or storage/.
// A hit answered by peek() while the Redis near-cache counter moved is a near_hit.
class CountingCache : public VerdictCache {
  public:
    // `near_hits` is RedisVerdictCache's near-cache hit counter (nullptr in memory mode).
    CountingCache(VerdictCache& inner, Metrics& metrics, const uint64_t* near_hits)
        : inner_(inner), metrics_(metrics), near_hits_(near_hits) {}

    Immediate peek(const std::string& domain, const std::string& address) override {
        uint64_t near_before = near_count();
        Immediate r = inner_.peek(domain, address);
        if (r) count(r->has_value(), near_before);
        return r;
    }
    PeekResult peek_into(const std::string& domain, const std::string& address,
                         CacheHit& out) override {
        uint64_t near_before = near_count();
        PeekResult r = inner_.peek_into(domain, address, out);
        if (r != PeekResult::later) count(r == PeekResult::hit, near_before);
        return r;
    }
    void lookup(const std::string& domain, const std::string& address, LookupDone done) override {
        // Captures the metrics, not `this`: a backend may answer while shutting down.
        inner_.lookup(
            domain, address,
            [metrics = &metrics_, done = std::move(done)](std::optional<CacheHit> hit) {
                metrics->cache_lookup(hit ? CacheLookupResult::hit : CacheLookupResult::miss);
                done(std::move(hit));
            });
    }
    void store(const std::string& domain, const std::string& address,
               const CachedVerdict& verdict) override {
        inner_.store(domain, address, verdict);
    }
    void set_listener(StoredListener listener) override {
        inner_.set_listener(std::move(listener));
    }
    void erase(const std::string& domain, const std::string& address) override {
        inner_.erase(domain, address);
    }
    void store_not_accept_all(const std::string& domain, WallClock::time_point at) override {
        inner_.store_not_accept_all(domain, at);
    }
    std::optional<bool> not_accept_all(const std::string& domain,
                                       std::function<void(bool)> done) override {
        return inner_.not_accept_all(domain, std::move(done));
    }
    void note_failed_refresh(const std::string& domain, const std::string& address) override {
        inner_.note_failed_refresh(domain, address);
    }

  private:
    uint64_t near_count() const { return near_hits_ != nullptr ? *near_hits_ : 0; }
    // An answer given now: a hit while the near-cache counter moved is a near_hit.
    void count(bool found, uint64_t near_before) {
        bool near = near_hits_ != nullptr && *near_hits_ != near_before;
        metrics_.cache_lookup(!found ? CacheLookupResult::miss
                              : near ? CacheLookupResult::near_hit
                                     : CacheLookupResult::hit);
    }

    VerdictCache& inner_;
    Metrics& metrics_;
    const uint64_t* near_hits_;
};

}  // namespace calloutd
