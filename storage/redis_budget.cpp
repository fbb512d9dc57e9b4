// Cluster-wide probe admission through the scripts of storage/redis_schema.
#include "storage/redis_budget.hpp"

#include <algorithm>

#include "storage/redis_schema.hpp"

namespace calloutd {

namespace {

std::string count_of(const Rate& r) {
    return r.unlimited ? "0" : std::to_string(r.count);
}
std::string period_of(const Rate& r) {
    return std::to_string(r.unlimited ? 1 : std::max<int64_t>(r.period.count(), 1));
}

}  // namespace

RedisProbeBudget::RedisProbeBudget(RedisClient& client, MemoryProbeBudget& local,
                                   const BudgetLimits& limits,
                                   std::chrono::milliseconds probe_lifetime, std::string node_id,
                                   int64_t nodes)
    : client_(client),
      local_(local),
      limits_(limits),
      lifetime_(probe_lifetime),
      node_id_(std::move(node_id)),
      nodes_(std::max<int64_t>(nodes, 1)) {
    local_.set_limits(node_share(limits_, nodes_));
}

void RedisProbeBudget::set_limits(const BudgetLimits& limits) {
    limits_ = limits;
    local_.set_limits(node_share(limits_, nodes_));
}

std::string RedisProbeBudget::next_token() {
    return node_id_ + ":" + std::to_string(++sequence_);
}

BudgetDecision RedisProbeBudget::local_probe(const std::string& domain, const std::string& address,
                                             const std::string& client, bool refresh,
                                             const std::string& redis_token) {
    ++counters_.degraded;
    BudgetDecision d = *local_.admit_probe(domain, address, client, refresh, {});
    if (d.admitted) d.token = ProbeToken{true, redis_token};
    return d;
}

bool RedisProbeBudget::releases_in_redis(const ProbeToken& token) const {
    return !token.redis.empty() && (!token.local || client_.is_connected());
}

std::optional<BudgetDecision> RedisProbeBudget::admit_probe(const std::string& domain,
                                                            const std::string& address,
                                                            const std::string& client, bool refresh,
                                                            Done done) {
    if (!client_.is_connected()) return local_probe(domain, address, client, refresh, {});
    namespace rs = redis_schema;
    std::string token = next_token();
    std::vector<std::string> keys = {
        rs::domain_fact_key(domain),        rs::address_key(domain, address),
        rs::in_flight_key(domain, address), rs::domain_window_key(domain),
        rs::client_window_key(client),      std::string(rs::kGlobalWindowKey),
        std::string(rs::kRunningKey)};
    std::vector<std::string> args = {token,
                                     std::to_string(lifetime_.count()),
                                     count_of(limits_.domain_rate),
                                     period_of(limits_.domain_rate),
                                     count_of(limits_.client_rate),
                                     period_of(limits_.client_rate),
                                     count_of(limits_.global_rate),
                                     period_of(limits_.global_rate),
                                     std::to_string(limits_.global_concurrency),
                                     std::to_string(lifetime_.count()),
                                     refresh ? "1" : "0"};
    std::vector<std::string_view> kv(keys.begin(), keys.end());
    std::vector<std::string_view> av(args.begin(), args.end());
    client_.eval(
        "admit", kv, av,
        [this, domain, address, client, refresh, token, done = std::move(done)](RedisResult r) {
            using Kind = redis_schema::AdmitReply::Kind;
            auto reply = r.ok() ? redis_schema::read_admit_reply(r.reply, token)
                                : redis_schema::AdmitReply{};
            BudgetDecision d;
            switch (reply.kind) {
                case Kind::admitted:
                    d.token = ProbeToken{false, token};
                    local_.record_probe(domain, client);
                    break;
                case Kind::cached:
                    d.admitted = false;
                    d.cached = std::move(reply.cached);
                    d.cached_scope = reply.cached_scope;
                    if (!d.cached) d.in_flight_elsewhere = true;  // unreadable: wait/retry
                    break;
                case Kind::in_flight:
                    d.admitted = false;
                    d.in_flight_elsewhere = true;
                    break;
                case Kind::denied:
                    d.admitted = false;
                    d.denied_by = *reply.denied_by;
                    break;
                case Kind::malformed:
                    // No answer, or one we cannot read. Redis may still run this admission
                    // later (a slow or paused server): remember our token so the release also
                    // clears a late marker.
                    done(local_probe(domain, address, client, refresh, token));
                    return;
            }
            done(d);
        });
    return std::nullopt;
}

void RedisProbeBudget::release_probe(const std::string& domain, const std::string& address,
                                     const ProbeToken& token) {
    // Every admitted probe, through Redis or not, holds a local running slot.
    local_.release_probe(domain, address, token);
    // A local grant with a Redis token: Redis may have run the admission anyway, so clear that
    // marker too (harmless if it never ran).
    if (!releases_in_redis(token)) return;
    namespace rs = redis_schema;
    client_.eval("release", {rs::kRunningKey, rs::in_flight_key(domain, address)}, {token.redis},
                 [this](RedisResult r) {
                     // On failure the marker and slot expire by themselves (probe lifetime).
                     if (!r.ok()) ++counters_.errors;
                 });
}

BudgetDecision RedisProbeBudget::local_mx(const std::string& ip, const std::string& provider,
                                          const std::string& redis_token) {
    ++counters_.degraded;
    BudgetDecision d = *local_.admit_mx(ip, provider, {});
    // Redis may still run the admission it did not answer in time: its token is kept so the
    // release also frees that slot (harmless if it never ran).
    if (d.admitted) mx_tokens_[ip].push_back(ProbeToken{true, redis_token});
    return d;
}

std::optional<BudgetDecision> RedisProbeBudget::admit_mx(const std::string& ip,
                                                         const std::string& provider, Done done) {
    if (!client_.is_connected()) return local_mx(ip, provider, {});
    namespace rs = redis_schema;
    std::string token = next_token();
    std::vector<std::string> keys = {rs::mx_window_key(ip), rs::mx_running_key(ip),
                                     rs::mx_backoff_key(ip), rs::provider_window_key(provider)};
    std::vector<std::string> args = {token,
                                     count_of(limits_.mx_rate),
                                     period_of(limits_.mx_rate),
                                     std::to_string(limits_.mx_concurrency),
                                     std::to_string(lifetime_.count()),
                                     count_of(limits_.provider_rate),
                                     period_of(limits_.provider_rate)};
    std::vector<std::string_view> kv(keys.begin(), keys.end());
    std::vector<std::string_view> av(args.begin(), args.end());
    client_.eval("admit_mx", kv, av,
                 [this, ip, provider, token, done = std::move(done)](RedisResult r) {
                     using Kind = redis_schema::AdmitReply::Kind;
                     auto reply = r.ok() ? redis_schema::read_admit_mx_reply(r.reply, token)
                                         : redis_schema::AdmitReply{};
                     if (reply.kind == Kind::malformed) {
                         done(local_mx(ip, provider, token));
                         return;
                     }
                     BudgetDecision d;
                     if (reply.kind == Kind::admitted) {
                         mx_tokens_[ip].push_back(ProbeToken{false, token});
                         local_.record_mx(ip, provider);
                     } else {
                         d.admitted = false;
                         d.denied_by = *reply.denied_by;
                     }
                     done(d);
                 });
    return std::nullopt;
}

void RedisProbeBudget::release_mx(const std::string& ip) {
    auto it = mx_tokens_.find(ip);
    if (it == mx_tokens_.end() || it->second.empty()) return;
    ProbeToken token = std::move(it->second.front());
    it->second.pop_front();
    if (it->second.empty()) mx_tokens_.erase(it);
    // Every admitted connection, through Redis or not, holds a local slot.
    local_.release_mx(ip);
    if (!releases_in_redis(token)) return;
    client_.command({"ZREM", redis_schema::mx_running_key(ip), token.redis}, [this](RedisResult r) {
        if (!r.ok()) ++counters_.errors;
    });
}

void RedisProbeBudget::back_off_mx(const std::string& ip, std::chrono::milliseconds how_long) {
    local_.back_off_mx(ip, how_long);
    client_.command(
        {"SET", redis_schema::mx_backoff_key(ip), "1", "PX", std::to_string(how_long.count())},
        [this](RedisResult r) {
            if (!r.ok()) ++counters_.errors;
        });
}

}  // namespace calloutd
