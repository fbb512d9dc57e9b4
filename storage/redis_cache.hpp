// Verdict cache shared through Redis, with a near-cache and the local cache as fallback.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

#include "storage/lru_map.hpp"
#include "storage/memory_cache.hpp"
#include "storage/redis_client.hpp"

namespace calloutd {

// Reads go to Redis (one MGET of the domain fact and the address); answers are kept in a small
// near-cache for redis.near_cache_ttl so a hot sender costs no round trip. Every verdict is
// also stored locally, and while Redis is unreachable or slow the local cache answers
// (degraded mode): no request ever waits for Redis beyond redis.timeout.
class RedisVerdictCache : public VerdictCache {
  public:
    struct Counters {
        uint64_t near_hits = 0;
        uint64_t redis_reads = 0;
        uint64_t degraded = 0;  // answered locally because Redis was down or slow
        uint64_t store_errors = 0;
    };

    using Now = std::function<WallClock::time_point()>;

    RedisVerdictCache(RedisClient& client, MemoryVerdictCache& local, CacheTtls ttls,
                      std::chrono::milliseconds near_ttl, size_t near_entries = 10000,
                      Now now = WallClock::now);

    Immediate peek(const std::string& domain, const std::string& address) override;
    void lookup(const std::string& domain, const std::string& address, LookupDone done) override;
    void store(const std::string& domain, const std::string& address,
               const CachedVerdict& verdict) override;
    void erase(const std::string& domain, const std::string& address) override;
    void note_failed_refresh(const std::string& domain, const std::string& address) override;
    void set_listener(StoredListener listener) override;
    void store_not_accept_all(const std::string& domain, WallClock::time_point at) override;
    std::optional<bool> not_accept_all(const std::string& domain,
                                       std::function<void(bool)> later) override;

    void set_ttls(const CacheTtls& ttls);
    const Counters& counters() const { return counters_; }

  private:
    CacheHit hit_of(const CachedVerdict& v, bool domain_fact) const;
    // Chooses between what is known of the domain and the address (which_answers()).
    std::optional<CacheHit> answer(const CachedVerdict* fact, const CachedVerdict* address) const;
    void remember(const std::string& key, const CacheHit& hit);

    RedisClient& client_;
    MemoryVerdictCache& local_;
    CacheTtls ttls_;
    std::chrono::milliseconds near_ttl_;
    LruMap<std::string, CacheHit, WallClock> near_;
    Counters counters_;
    StoredListener listener_;
    Now now_;
};

}  // namespace calloutd
