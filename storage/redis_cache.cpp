// Redis-backed verdict cache: keys and values per storage/redis_schema, near-cache, fallback.
#include "storage/redis_cache.hpp"

#include "storage/redis_schema.hpp"

namespace calloutd {

namespace {
std::string near_address(const std::string& a) {
    return "a:" + a;
}
std::string near_domain(const std::string& d) {
    return "d:" + d;
}
}  // namespace

RedisVerdictCache::RedisVerdictCache(RedisClient& client, MemoryVerdictCache& local, CacheTtls ttls,
                                     std::chrono::milliseconds near_ttl, size_t near_entries,
                                     Now now)
    : client_(client),
      local_(local),
      ttls_(ttls),
      near_ttl_(near_ttl),
      near_(near_entries),
      now_(std::move(now)) {}

void RedisVerdictCache::set_ttls(const CacheTtls& ttls) {
    ttls_ = ttls;
    local_.set_ttls(ttls);
}

CacheHit RedisVerdictCache::hit_of(const CachedVerdict& v, bool domain_fact) const {
    return CacheHit{v, domain_fact, !domain_fact && refresh_due(v, now_(), ttls_)};
}

std::optional<CacheHit> RedisVerdictCache::answer(const CachedVerdict* fact,
                                                  const CachedVerdict* address) const {
    switch (which_answers(fact, address)) {
        case CacheAnswer::domain_fact:
            return hit_of(*fact, true);
        case CacheAnswer::address: {
            CacheHit hit = hit_of(*address, false);
            if (fact != nullptr) hit.refresh_due = false;  // the domain is to be left alone
            return hit;
        }
        case CacheAnswer::none:
            break;
    }
    return std::nullopt;
}

void RedisVerdictCache::remember(const std::string& key, const CacheHit& hit) {
    if (near_ttl_.count() > 0) near_.put(key, hit, now_() + near_ttl_);
}

VerdictCache::Immediate RedisVerdictCache::peek(const std::string& domain,
                                                const std::string& address) {
    if (near_ttl_.count() > 0) {
        auto now = now_();
        const CacheHit* fact = near_.get(near_domain(domain), now);
        const CacheHit* addr = near_.get(near_address(address), now);
        if (auto hit = answer(fact ? &fact->verdict : nullptr, addr ? &addr->verdict : nullptr)) {
            ++counters_.near_hits;
            return hit;
        }
    }
    if (!client_.is_connected()) {
        ++counters_.degraded;
        return local_.peek(domain, address);
    }
    return std::nullopt;
}

void RedisVerdictCache::lookup(const std::string& domain, const std::string& address,
                               LookupDone done) {
    ++counters_.redis_reads;
    std::string fact_key = redis_schema::domain_fact_key(domain);
    std::string addr_key = redis_schema::address_key(domain, address);
    client_.command({"MGET", fact_key, addr_key},
                    [this, domain, address, done = std::move(done)](RedisResult r) {
                        if (!r.ok() || !r.reply.is_array() || r.reply.elements().size() != 2) {
                            // Redis is down or slow: what this node knows is the answer for now.
                            ++counters_.degraded;
                            done(local_.find(domain, address));
                            return;
                        }
                        const auto& e = r.reply.elements();
                        std::optional<CachedVerdict> fact;
                        std::optional<CachedVerdict> addr;
                        if (e[0].is_string()) fact = redis_schema::decode(e[0].text());
                        if (e[1].is_string()) addr = redis_schema::decode(e[1].text());
                        // A domain-key value without the domain flag predates evidence
                        // scopes: it may be one mailbox's reply, so it speaks for no one.
                        if (fact && !is_domain_fact(*fact)) fact.reset();
                        if (fact) remember(near_domain(domain), hit_of(*fact, true));
                        if (addr) remember(near_address(address), hit_of(*addr, false));
                        done(answer(fact ? &*fact : nullptr, addr ? &*addr : nullptr));
                    });
}

void RedisVerdictCache::store(const std::string& domain, const std::string& address,
                              const CachedVerdict& verdict) {
    // Kept locally too, so a node that loses Redis still knows what it probed.
    local_.store(domain, address, verdict);
    auto ttl = ttl_for(verdict, ttls_);
    auto left =
        ttl - std::chrono::duration_cast<std::chrono::milliseconds>(now_() - verdict.probed_at);
    if (ttl.count() <= 0 || left.count() <= 0) return;
    // The store script picks the key from the encoded scope: only domain-scoped evidence is
    // kept as a domain fact.
    near_.erase(is_domain_fact(verdict) ? near_domain(domain) : near_address(address));
    client_.eval(
        "store",
        {redis_schema::domain_fact_key(domain), redis_schema::address_key(domain, address)},
        {redis_schema::encode(verdict), std::to_string(left.count()), redis_schema::kStoredChannel,
         domain + " " + address},
        [this](RedisResult r) {
            if (!r.ok()) ++counters_.store_errors;
        });
}

void RedisVerdictCache::erase(const std::string& domain, const std::string& address) {
    local_.erase(domain, address);
    if (!domain.empty()) {
        near_.erase(near_domain(domain));
        client_.command({"DEL", redis_schema::domain_fact_key(domain),
                         redis_schema::not_accept_all_key(domain)},
                        [](RedisResult) {});
    }
    if (!address.empty()) {
        near_.erase(near_address(address));
        client_.command({"DEL", redis_schema::address_key(domain, address)}, [](RedisResult) {});
    }
}

void RedisVerdictCache::note_failed_refresh(const std::string& domain, const std::string& address) {
    local_.note_failed_refresh(domain, address);
    near_.erase(near_address(address));
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now_().time_since_epoch());
    client_.eval("refresh_failed", {redis_schema::address_key(domain, address)},
                 {std::to_string(ms.count()), redis_schema::kStoredChannel, domain + " " + address},
                 [this](RedisResult r) {
                     if (!r.ok()) ++counters_.store_errors;
                 });
}

void RedisVerdictCache::set_listener(StoredListener listener) {
    listener_ = std::move(listener);
    // Cleared by a listener that goes away: the subscription stays, and tells no one.
    if (!listener_) return;
    client_.subscribe(std::string(redis_schema::kStoredChannel),
                      [this](const std::string&, const std::string& message) {
                          auto space = message.find(' ');
                          if (space == std::string::npos) return;
                          std::string domain = message.substr(0, space);
                          std::string address = message.substr(space + 1);
                          // Another node's verdict replaces whatever we had near.
                          near_.erase(near_domain(domain));
                          near_.erase(near_address(address));
                          if (listener_) listener_(domain, address);
                      });
}

void RedisVerdictCache::store_not_accept_all(const std::string& domain, WallClock::time_point at) {
    local_.store_not_accept_all(domain, at);
    auto left = ttls_.domain - std::chrono::duration_cast<std::chrono::milliseconds>(now_() - at);
    if (left.count() <= 0) return;
    client_.command(
        {"SET", redis_schema::not_accept_all_key(domain), "1", "PX", std::to_string(left.count())},
        [this](RedisResult r) {
            if (!r.ok()) ++counters_.store_errors;
        });
}

std::optional<bool> RedisVerdictCache::not_accept_all(const std::string& domain,
                                                      std::function<void(bool)> later) {
    // What this node saw itself is enough; otherwise ask the cluster (false when Redis cannot
    // answer: the probe then cannot call a 2xx valid without its own check).
    if (local_.not_accept_all(domain, {}).value_or(false)) return true;
    if (!client_.is_connected()) return false;
    client_.command({"EXISTS", redis_schema::not_accept_all_key(domain)},
                    [later = std::move(later)](RedisResult r) {
                        later(r.ok() && r.reply.is_integer() && r.reply.as_integer() == 1);
                    });
    return std::nullopt;
}

}  // namespace calloutd
