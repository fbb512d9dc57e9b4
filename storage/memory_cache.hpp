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
    // Never `later`; a hit is copied into `out` field by field (its strings keep their capacity).
    PeekResult peek_into(const std::string& domain, const std::string& address,
                         CacheHit& out) override;
    // Never needed: peek() always answers.
    void lookup(const std::string& domain, const std::string& address, LookupDone done) override;
    void store(const std::string& domain, const std::string& address,
               const CachedVerdict& verdict) override;
    void erase(const std::string& domain, const std::string& address) override;
    void store_not_accept_all(const std::string& domain, WallClock::time_point at) override;
    // Always answers now.
    std::optional<bool> not_accept_all(const std::string& domain,
                                       std::function<void(bool)> later) override;
    void note_failed_refresh(const std::string& domain, const std::string& address) override;

    // Synchronous form for callers on the loop that know they have the memory backend.
    std::optional<CacheHit> find(const std::string& domain, const std::string& address);
    void set_ttls(const CacheTtls& ttls) { ttls_ = ttls; }
    size_t size() const { return entries_.size(); }

    // For `calloutd cache` through the control socket: live entries with their expiry, looked at
    // without changing their recency, and deletions that say whether there was anything.
    struct Entry {
        CachedVerdict verdict;
        WallClock::time_point expires;
    };
    std::optional<Entry> address_entry(const std::string& address) const;
    std::optional<Entry> domain_entry(const std::string& domain) const;
    bool erase_address(const std::string& address);
    bool erase_domain_fact(const std::string& domain);
    // Deletes every address verdict of `domain`, walking the whole cache; returns how many.
    size_t erase_addresses_of(const std::string& domain);

  private:
    LruMap<std::string, CachedVerdict, WallClock> entries_;
    CacheTtls ttls_;
    Now now_;
    std::string key_;  // lookup key scratch for find()
};

}  // namespace calloutd
