// In-memory verdict cache; keys are "d:<domain>" for domain facts, "a:<address>", and
// "n:<domain>" for the "not accept-all" fact.
#include "storage/memory_cache.hpp"

#include <algorithm>

#include "util/panic.hpp"

namespace calloutd {

namespace {
std::string domain_key(const std::string& domain) {
    return "d:" + domain;
}
std::string address_key(const std::string& address) {
    return "a:" + address;
}
std::string not_accept_all_key(const std::string& domain) {
    return "n:" + domain;
}
}  // namespace

MemoryVerdictCache::MemoryVerdictCache(size_t max_entries, CacheTtls ttls, Now now)
    : entries_(max_entries), ttls_(ttls), now_(std::move(now)) {}

VerdictCache::PeekResult MemoryVerdictCache::peek_into(const std::string& domain,
                                                       const std::string& address, CacheHit& out) {
    auto now = now_();
    // Every cached answer passes here: the keys are built in one reused buffer, not allocated,
    // and the hit is assigned into the caller's (strings keep their capacity).
    key_.assign("d:").append(domain);
    const CachedVerdict* fact = entries_.get(key_, now);
    key_.assign("a:").append(address);
    const CachedVerdict* v = entries_.get(key_, now);
    switch (which_answers(fact, v)) {
        case CacheAnswer::domain_fact:
            out.verdict = *fact;
            out.domain_fact = true;
            out.refresh_due = false;
            return PeekResult::hit;
        case CacheAnswer::address:
            out.verdict = *v;
            out.domain_fact = false;
            // A domain fact (a back-off, say) means: leave the domain alone, refresh later.
            out.refresh_due = fact == nullptr && refresh_due(*v, now, ttls_);
            return PeekResult::hit;
        case CacheAnswer::none:
            break;
    }
    return PeekResult::miss;
}

std::optional<CacheHit> MemoryVerdictCache::find(const std::string& domain,
                                                 const std::string& address) {
    CacheHit hit;
    if (peek_into(domain, address, hit) != PeekResult::hit) return std::nullopt;
    return hit;
}

VerdictCache::Immediate MemoryVerdictCache::peek(const std::string& domain,
                                                 const std::string& address) {
    return find(domain, address);
}

void MemoryVerdictCache::lookup(const std::string&, const std::string&, LookupDone) {
    panic("MemoryVerdictCache::lookup", "called although peek() always answers");
}

void MemoryVerdictCache::store(const std::string& domain, const std::string& address,
                               const CachedVerdict& verdict) {
    auto ttl = ttl_for(verdict, ttls_);
    if (ttl.count() <= 0) return;
    auto now = now_();
    // Only domain-scoped evidence is kept under the domain (DESIGN.md "Evidence has a scope").
    std::string key = is_domain_fact(verdict) ? domain_key(domain) : address_key(address);
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
    if (!domain.empty()) {
        entries_.erase(domain_key(domain));
        entries_.erase(not_accept_all_key(domain));
    }
    if (!address.empty()) entries_.erase(address_key(address));
}

std::optional<MemoryVerdictCache::Entry> MemoryVerdictCache::address_entry(
    const std::string& address) const {
    WallClock::time_point expires;
    const CachedVerdict* v = entries_.peek(address_key(address), now_(), &expires);
    if (v == nullptr) return std::nullopt;
    return Entry{*v, expires};
}

std::optional<MemoryVerdictCache::Entry> MemoryVerdictCache::domain_entry(
    const std::string& domain) const {
    WallClock::time_point expires;
    const CachedVerdict* v = entries_.peek(domain_key(domain), now_(), &expires);
    if (v == nullptr) return std::nullopt;
    return Entry{*v, expires};
}

bool MemoryVerdictCache::erase_address(const std::string& address) {
    bool live = address_entry(address).has_value();
    entries_.erase(address_key(address));
    return live;
}

bool MemoryVerdictCache::erase_domain_fact(const std::string& domain) {
    bool live = domain_entry(domain).has_value();
    entries_.erase(domain_key(domain));
    entries_.erase(not_accept_all_key(domain));
    return live;
}

size_t MemoryVerdictCache::erase_addresses_of(const std::string& domain) {
    std::string suffix = "@" + domain;
    auto now = now_();
    size_t live = 0;
    entries_.erase_if(
        [&](const std::string& key, const CachedVerdict&, WallClock::time_point expires) {
            if (!key.starts_with("a:") || !key.ends_with(suffix)) return false;
            if (expires > now) ++live;  // an expired one was not cached any more
            return true;
        });
    return live;
}

void MemoryVerdictCache::store_not_accept_all(const std::string& domain, WallClock::time_point at) {
    if (ttls_.domain.count() <= 0) return;
    CachedVerdict fact{VerdictClass::valid,  "random-local-part-refused", at, {}, false,
                       EvidenceScope::domain};
    entries_.put(not_accept_all_key(domain), fact, at + ttls_.domain);
}

std::optional<bool> MemoryVerdictCache::not_accept_all(const std::string& domain,
                                                       std::function<void(bool)>) {
    return entries_.get(not_accept_all_key(domain), now_()) != nullptr;
}

}  // namespace calloutd
