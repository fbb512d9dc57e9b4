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

void RedisVerdictCache::remember(const std::string& key, const CacheHit& hit) {
    if (near_ttl_.count() > 0) near_.put(key, hit, now_() + near_ttl_);
}

VerdictCache::Immediate RedisVerdictCache::peek(const std::string& domain,
                                                const std::string& address) {
    if (near_ttl_.count() > 0) {
        auto now = now_();
        const CacheHit* hit = near_.get(near_domain(domain), now);
        if (hit == nullptr) hit = near_.get(near_address(address), now);
        if (hit != nullptr) {
            ++counters_.near_hits;
            CacheHit fresh = *hit;
            fresh.refresh_due = hit_of(hit->verdict, hit->domain_fact).refresh_due;
            return std::optional<CacheHit>(fresh);
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
                        for (int i = 0; i < 2; ++i) {
                            if (!e[static_cast<size_t>(i)].is_string()) continue;
                            auto v = redis_schema::decode(e[static_cast<size_t>(i)].text());
                            if (!v) continue;
                            bool fact = i == 0;
                            CacheHit hit = hit_of(*v, fact);
                            remember(fact ? near_domain(domain) : near_address(address), hit);
                            done(hit);
                            return;
                        }
                        done(std::nullopt);
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
    bool fact = is_domain_fact(verdict.cls);
    std::string key =
        fact ? redis_schema::domain_fact_key(domain) : redis_schema::address_key(domain, address);
    near_.erase(fact ? near_domain(domain) : near_address(address));
    client_.eval("store", {key},
                 {redis_schema::encode(verdict), std::to_string(left.count()),
                  redis_schema::kStoredChannel, domain + " " + address},
                 [this](RedisResult r) {
                     if (!r.ok()) ++counters_.store_errors;
                 });
}

void RedisVerdictCache::erase(const std::string& domain, const std::string& address) {
    local_.erase(domain, address);
    if (!domain.empty()) {
        near_.erase(near_domain(domain));
        client_.command({"DEL", redis_schema::domain_fact_key(domain)}, [](RedisResult) {});
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

}  // namespace calloutd
