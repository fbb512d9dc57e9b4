// In-memory verdict cache: one node, LRU-bounded by cache.memory_entries.
#pragma once

#include <functional>

#include "storage/lru_map.hpp"
#include "storage/verdict_cache.hpp"

namespace calloutd {

class MemoryVerdictCache : public VerdictCache {
  public:
    using Now = std::function<WallClock::time_point()>;

    MemoryVerdictCache(size_t max_entries, CacheTtls ttls, Now now = WallClock::now);

    Immediate peek(const std::string& domain, const std::string& address) override;
    // Never needed: peek() always answers.
    void lookup(const std::string& domain, const std::string& address, LookupDone done) override;
    void store(const std::string& domain, const std::string& address,
               const CachedVerdict& verdict) override;
    void erase(const std::string& domain, const std::string& address) override;
    void note_failed_refresh(const std::string& domain, const std::string& address) override;

    // Synchronous form for callers on the loop that know they have the memory backend.
    std::optional<CacheHit> find(const std::string& domain, const std::string& address);
    void set_ttls(const CacheTtls& ttls) { ttls_ = ttls; }
    size_t size() const { return entries_.size(); }

  private:
    LruMap<std::string, CachedVerdict, WallClock> entries_;
    CacheTtls ttls_;
    Now now_;
};

}  // namespace calloutd
