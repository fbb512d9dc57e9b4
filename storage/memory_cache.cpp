// In-memory verdict cache; keys are "d:<domain>" for domain facts and "a:<address>".
#include "storage/memory_cache.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace calloutd {

namespace {
std::string domain_key(const std::string& domain) {
    return "d:" + domain;
}
std::string address_key(const std::string& address) {
    return "a:" + address;
}
}  // namespace

MemoryVerdictCache::MemoryVerdictCache(size_t max_entries, CacheTtls ttls, Now now)
    : entries_(max_entries), ttls_(ttls), now_(std::move(now)) {}

std::optional<CacheHit> MemoryVerdictCache::find(const std::string& domain,
                                                 const std::string& address) {
    auto now = now_();
    if (const CachedVerdict* fact = entries_.get(domain_key(domain), now)) {
        return CacheHit{*fact, true, false};
    }
    if (const CachedVerdict* v = entries_.get(address_key(address), now)) {
        return CacheHit{*v, false, refresh_due(*v, now, ttls_)};
    }
    return std::nullopt;
}

VerdictCache::Immediate MemoryVerdictCache::peek(const std::string& domain,
                                                 const std::string& address) {
    return find(domain, address);
}

void MemoryVerdictCache::lookup(const std::string&, const std::string&, LookupDone) {
    std::fprintf(stderr, "MemoryVerdictCache::lookup: called although peek() always answers\n");
    std::abort();
}

void MemoryVerdictCache::store(const std::string& domain, const std::string& address,
                               const CachedVerdict& verdict) {
    auto ttl = ttl_for(verdict, ttls_);
    if (ttl.count() <= 0) return;
    auto now = now_();
    std::string key = is_domain_fact(verdict.cls) ? domain_key(domain) : address_key(address);
    if (const CachedVerdict* current = entries_.get(key, now)) {
        if (!may_replace(*current, verdict)) return;
    }
    // Expiry counts from the probe, so a verdict stored late does not live longer.
    entries_.put(key, verdict, verdict.probed_at + ttl);
}

void MemoryVerdictCache::note_failed_refresh(const std::string&, const std::string& address) {
    auto now = now_();
    CachedVerdict* v = entries_.get(address_key(address), now);
    if (v != nullptr && v->cls == VerdictClass::valid) {
        v->refresh_failed_at = std::max(v->refresh_failed_at, now);
    }
}

void MemoryVerdictCache::erase(const std::string& domain, const std::string& address) {
    if (!domain.empty()) entries_.erase(domain_key(domain));
    if (!address.empty()) entries_.erase(address_key(address));
}

}  // namespace calloutd
