// Engine: builds the verification parts from the configuration, applies reloads, tears down in
// member order.
#include "daemon/engine.hpp"

#include <unistd.h>

#include "callout/random_local_part.hpp"
#include "daemon/components.hpp"
#include "daemon/log.hpp"
#include "storage/redis_schema.hpp"

namespace calloutd {

std::unique_ptr<Engine> Engine::create(uv_loop_t* loop, const Config& config, Metrics& metrics,
                                       std::vector<IpAddress> own_addresses, Hooks hooks,
                                       std::string& error) {
    auto engine = std::make_unique<Engine>(Key{}, loop, config, metrics);
    if (!config.redis.url.empty() && !engine->start_redis(config, error)) return nullptr;
    if (!engine->start_probing(config, std::move(own_addresses), std::move(hooks), error)) {
        return nullptr;
    }
    return engine;
}

Engine::Engine(Key, uv_loop_t* loop, const Config& config, Metrics& metrics)
    : loop_(loop),
      metrics_(metrics),
      redis_configured_(!config.redis.url.empty()),
      cache_(static_cast<size_t>(config.cache.memory_entries), cache_ttls(config)),
      budget_(budget_limits(config)) {}

// Members in reverse order; see the class comment.
Engine::~Engine() = default;

bool Engine::start_redis(const Config& config, std::string& error) {
    RedisOptions o;
    o.url = config.redis.url;
    o.sentinels = config.redis.sentinels;
    o.master_name = config.redis.master_name;
    o.command_timeout = config.redis.timeout;
    o.connect_timeout = std::max<Duration>(config.redis.timeout * 4, std::chrono::seconds(1));
    redis_ = RedisClient::create(loop_, o, error);
    if (!redis_) return false;
    redis_->register_script("admit", std::string(redis_schema::kAdmitScript));
    redis_->register_script("release", std::string(redis_schema::kReleaseScript));
    redis_->register_script("store", std::string(redis_schema::kStoreScript));
    redis_->register_script("admit_mx", std::string(redis_schema::kAdmitMxScript));
    redis_->register_script("random_secret", std::string(redis_schema::kRandomSecretScript));
    redis_->register_script("refresh_failed", std::string(redis_schema::kRefreshFailedScript));
    // One line per change of state: shared mode, or degraded (answering from this node alone).
    redis_->set_state_callback([this](const RedisStateChange& c) {
        if (c.connected) ++redis_ups_;
        if (c.connected && c.link == RedisLink::commands) adopt_cluster_secret();
        LogLine(c.connected ? LogLevel::notice : LogLevel::warning, "redis")
            .field("link", to_string(c.link))
            .field("state", c.connected ? "up" : "down")
            .field("mode", c.link == RedisLink::commands && !c.connected ? "degraded" : "shared")
            .field("reason", c.reason);
    });
    redis_cache_ = std::make_unique<RedisVerdictCache>(*redis_, cache_, cache_ttls(config),
                                                       config.redis.near_cache_ttl);
    // A probe can last the DNS lookup (timeout doubling per try) plus the probe deadline.
    auto lifetime = config.callout.probe_timeout +
                    config.dns.timeout * ((1 << config.dns.tries) - 1) + std::chrono::seconds(5);
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    std::string node = std::string(host) + ":" + std::to_string(getpid());
    redis_budget_ = std::make_unique<RedisProbeBudget>(*redis_, budget_, budget_limits(config),
                                                       lifetime, node, config.redis.nodes);
    redis_->start();
    return true;
}

bool Engine::start_probing(const Config& config, std::vector<IpAddress> own_addresses, Hooks hooks,
                           std::string& error) {
    VerdictCache& cache = redis_cache_ ? static_cast<VerdictCache&>(*redis_cache_) : cache_;
    ProbeBudget& budget = redis_budget_ ? static_cast<ProbeBudget&>(*redis_budget_) : budget_;
    counting_cache_ = std::make_unique<CountingCache>(
        cache, metrics_, redis_cache_ ? &redis_cache_->counters().near_hits : nullptr);
    mx_budget_ = std::make_unique<MxBudget>(budget, config.limits.backoff_ttl);
    callout_ = Callout::create(loop_, callout_options(config, std::move(own_addresses)), error);
    if (!callout_) return false;
    callout_->set_target_budget(mx_budget_.get());
    // One line per change of the canary's state; the first check runs now.
    callout_->set_canary_listener(
        [canary = config.dns.canary](bool healthy, const std::string& reason) {
            LogLine(healthy ? LogLevel::notice : LogLevel::warning, "dns-canary")
                .field("name", canary)
                .field("state", healthy ? "healthy" : "failing")
                .field("reason", reason)
                .field("effect", healthy ? "nxdomain answers are believed"
                                         : "nxdomain answers are tempfail dns-unhealthy");
        });
    callout_->check_dns_canary();
    callout_->set_mx_host_filter(std::move(hooks.skip_mx_host));
    verifier_ =
        std::make_unique<CalloutVerifier>(loop_, *counting_cache_, *callout_, budget,
                                          config.server.reply_timeout, std::move(hooks.on_probe));
    verifier_->set_client_ipv6_prefix(static_cast<int>(config.limits.client_ipv6_prefix));
    // Once a minute; the timer does not keep the loop alive on its own.
    stats_timer_ = std::make_unique<UvTimer>(loop_);
    stats_timer_->start(std::chrono::minutes(1), [this] { log_stats(); });
    stats_timer_->unref();
    return true;
}

void Engine::apply(const Config& next) {
    if (verifier_) {
        verifier_->set_reply_timeout(next.server.reply_timeout);
        verifier_->set_client_ipv6_prefix(static_cast<int>(next.limits.client_ipv6_prefix));
    }
    cache_.set_ttls(cache_ttls(next));
    budget_.set_limits(budget_limits(next));
    if (redis_cache_) redis_cache_->set_ttls(cache_ttls(next));
    if (redis_budget_) redis_budget_->set_limits(budget_limits(next));
    if (mx_budget_) mx_budget_->set_backoff(next.limits.backoff_ttl);
}

void Engine::stop(std::chrono::milliseconds settle) {
    // Probes still running hold handles that would keep the loop alive past the shutdown bound;
    // their verdicts are lost, which only costs a repeat probe after the restart.
    if (verifier_) log_stats();
    stats_timer_.reset();
    verifier_.reset();  // releases the budgets of the probes it cancels ...
    callout_.reset();   // ... and the MX slots they hold
    mx_budget_.reset();
    counting_cache_.reset();
    settle_redis(std::chrono::steady_clock::now() + settle);
}

// The releases just queued must reach Redis: otherwise the other nodes see those addresses in
// flight, and answer in_progress for them, until the markers expire. Their replies are waited
// for, at most redis.timeout (each command's own deadline), before the client is closed.
void Engine::settle_redis(std::chrono::steady_clock::time_point deadline) {
    if (redis_ && redis_->is_connected() && redis_->in_flight() > 0 &&
        std::chrono::steady_clock::now() < deadline) {
        if (!settle_timer_) settle_timer_ = std::make_unique<UvTimer>(loop_);
        settle_timer_->start(std::chrono::milliseconds(1),
                             [this, deadline] { settle_redis(deadline); });
        return;
    }
    settle_timer_.reset();  // (may be the timer running this: UvTimer allows that)
    redis_budget_.reset();
    redis_cache_.reset();
    redis_.reset();
}

// Every node asks a domain the same random local part, so a greylisting server sees one
// triplet whichever node retries: the first node to connect stores a fresh secret in Redis, and
// every node adopts whatever is stored (until then, and without Redis, this host's own secret).
void Engine::adopt_cluster_secret() {
    std::string key(redis_schema::kRandomSecretKey);
    std::string candidate = fresh_random_secret();
    redis_->eval("random_secret", {key}, {candidate}, [this](RedisResult r) {
        if (!r.ok() || !r.reply.is_string() || r.reply.text().empty()) {
            LogLine(LogLevel::warning, "random-secret")
                .field("reason", r.ok() ? std::string("empty reply") : r.error)
                .field("effect", "this host's own secret stays in use");
            return;
        }
        if (callout_) callout_->set_random_secret(r.reply.text());
    });
}

void Engine::log_stats() {
    const auto& c = verifier_->counters();
    LogLine line(LogLevel::info, "stats");
    line.field("probes_admitted", static_cast<long long>(c.admitted))
        .field("denied_domain", static_cast<long long>(c.denied_domain))
        .field("denied_client", static_cast<long long>(c.denied_client))
        .field("denied_global", static_cast<long long>(c.denied_global))
        .field("denied_mx", static_cast<long long>(c.denied_mx))
        .field("denied_provider", static_cast<long long>(c.denied_provider))
        .field("joined", static_cast<long long>(c.joined))
        .field("cache_hits", static_cast<long long>(c.cache_hits))
        .field("probes_running", static_cast<long long>(verifier_->probes_in_flight()))
        .field("cache_entries", static_cast<long long>(cache_.size()))
        .field("budget_keys", static_cast<long long>(budget_.tracked_keys()))
        .field("log_dropped", static_cast<long long>(Log::dropped_lines()));
    if (redis_) {
        line.field("redis", redis_->is_connected() ? "up" : "down")
            .field("redis_degraded", static_cast<long long>(redis_cache_->counters().degraded +
                                                            redis_budget_->counters().degraded))
            .field("redis_near_hits", static_cast<long long>(redis_cache_->counters().near_hits))
            .field("redis_timeouts", static_cast<long long>(redis_->stats().timeouts))
            .field("redis_reconnects", static_cast<long long>(redis_ups_));
    }
    line.emit();
    if (stats_timer_) stats_timer_->start(std::chrono::minutes(1), [this] { log_stats(); });
}

std::string Engine::redis_endpoint() const {
    return redis_ ? to_display_string(redis_->endpoint()) : std::string();
}

void Engine::fill(MetricsSnapshot& s) const {
    if (callout_) {
        s.probes_in_flight = callout_->in_flight();
        s.dns_queries = callout_->dns_stats().queries;
        s.dns_canary_ok = callout_->dns_canary_state();
    }
    if (verifier_) {
        const auto& c = verifier_->counters();
        s.budget_denials[static_cast<size_t>(BudgetLabel::domain)] = c.denied_domain;
        s.budget_denials[static_cast<size_t>(BudgetLabel::client)] = c.denied_client;
        s.budget_denials[static_cast<size_t>(BudgetLabel::global)] = c.denied_global;
        s.budget_denials[static_cast<size_t>(BudgetLabel::mx)] = c.denied_mx;
        s.budget_denials[static_cast<size_t>(BudgetLabel::provider)] = c.denied_provider;
    }
    s.cache_entries = cache_.size();
    if (redis_) {
        s.redis_configured = true;
        s.redis_up = redis_->is_connected();
        s.redis_degraded = !s.redis_up;
        s.redis_timeouts = redis_->stats().timeouts;
        s.redis_reconnects = redis_->stats().connects > 0 ? redis_->stats().connects - 1 : 0;
    }
}

}  // namespace calloutd
