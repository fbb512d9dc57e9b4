// Daemon lifecycle: start listeners, drop privileges, serve, reload on HUP, drain on TERM.
#include "daemon/daemon.hpp"

#include <grp.h>
#include <pwd.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>

#include "callout/random_local_part.hpp"
#include "daemon/cache_control.hpp"
#include "daemon/components.hpp"
#include "daemon/config_values.hpp"
#include "daemon/log.hpp"
#include "daemon/process_stats.hpp"
#include "daemon/status_command.hpp"
#include "storage/redis_schema.hpp"

namespace calloutd {

Daemon::Daemon(Config config) : config_(std::move(config)) {
    uv_loop_init(&loop_);
    decider_ = std::make_unique<Decider>(config_.policy, nullptr);
    server_ = std::make_unique<Server>(&loop_, *decider_, config_.server, &metrics_);
}

Daemon::~Daemon() {
    stop_engine(false);
    // Close whatever is still open so the loop can be closed cleanly.
    uv_walk(
        &loop_,
        [](uv_handle_t* h, void*) {
            if (!uv_is_closing(h)) uv_close(h, nullptr);
        },
        nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    metrics_listener_.reset();
    control_.reset();
    server_.reset();
    decider_.reset();
    uv_loop_close(&loop_);
}

void Daemon::stop_engine(bool settle_redis) {
    // Probes still running hold handles that would keep the loop alive past the shutdown bound;
    // their verdicts are lost, which only costs a repeat probe after the restart.
    if (decider_) decider_->set_verifier(nullptr);
    if (verifier_) log_stats();
    stats_timer_.reset();
    rates_timer_.reset();
    verifier_.reset();  // releases the budgets of the probes it cancels ...
    callout_.reset();   // ... and the MX slots they hold
    mx_budget_.reset();
    counting_cache_.reset();
    auto now = std::chrono::steady_clock::now();
    close_redis(settle_redis ? now + config_.redis.timeout : now);
}

// The releases just queued must reach Redis: otherwise the other nodes see those addresses in
// flight, and answer in_progress for them, until the markers expire. Their replies are waited
// for, at most redis.timeout (each command's own deadline), before the client is closed.
void Daemon::close_redis(std::chrono::steady_clock::time_point deadline) {
    if (redis_ && redis_->is_connected() && redis_->in_flight() > 0 &&
        std::chrono::steady_clock::now() < deadline) {
        if (!redis_settle_) redis_settle_ = std::make_unique<UvTimer>(&loop_);
        redis_settle_->start(std::chrono::milliseconds(1),
                             [this, deadline] { close_redis(deadline); });
        return;
    }
    redis_settle_.reset();  // (may be the timer running this: UvTimer allows that)
    redis_budget_.reset();
    redis_cache_.reset();
    redis_.reset();
}

void Daemon::log_stats() {
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
        .field("cache_entries", static_cast<long long>(cache_->size()))
        .field("budget_keys", static_cast<long long>(budget_->tracked_keys()))
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
    // Once a minute; the timer does not keep the loop alive on its own.
    stats_timer_->start(std::chrono::minutes(1), [this] { log_stats(); });
}

int Daemon::run() {
    Log::configure(config_.log);
    Log::attach(&loop_);
    std::signal(SIGPIPE, SIG_IGN);

    uv_signal_init(&loop_, &sigterm_);
    uv_signal_init(&loop_, &sigint_);
    uv_signal_init(&loop_, &sighup_);
    uv_timer_init(&loop_, &shutdown_timer_);
    for (uv_signal_t* s : {&sigterm_, &sigint_, &sighup_}) s->data = this;
    uv_signal_start(&sigterm_, on_signal, SIGTERM);
    uv_signal_start(&sigint_, on_signal, SIGINT);
    uv_signal_start(&sighup_, on_signal, SIGHUP);

    if (!server_->listen() || !start_engine() || !start_observability() || !drop_privileges()) {
        finish_shutdown();
        uv_run(&loop_, UV_RUN_DEFAULT);
        Log::detach();
        return 1;
    }
    // Type=notify: systemd considers the service up once listeners are bound (no-op elsewhere).
    sd_notifyf(0, "READY=1\nSTATUS=serving %zu listener(s)\nMAINPID=%d", server_->bound().size(),
               static_cast<int>(getpid()));
    LogLine(LogLevel::notice, "started")
        .field("version", CALLOUTD_VERSION)
        .field("config", config_.path)
        .field("mode", config_.redis.url.empty() ? "memory" : "redis")
        .field("redis", redis_ ? to_display_string(redis_->endpoint()) : std::string("-"))
        .field("dry_run", config_.policy.dry_run ? "yes" : "no")
        .field("tls", config_.callout.tls)
        .field("log", Log::output_mode());
    // Start-up is written at once whatever log.flush_interval says.
    Log::flush();
    uv_run(&loop_, UV_RUN_DEFAULT);
    LogLine(LogLevel::notice, "stopped");
    Log::detach();
    return 0;
}

bool Daemon::start_engine() {
    cache_ = std::make_unique<MemoryVerdictCache>(static_cast<size_t>(config_.cache.memory_entries),
                                                  cache_ttls(config_));
    budget_ = std::make_unique<MemoryProbeBudget>(budget_limits(config_));
    VerdictCache* cache = cache_.get();
    ProbeBudget* budget = budget_.get();
    std::string error;
    if (!config_.redis.url.empty()) {
        if (!start_redis(error)) {
            LogLine(LogLevel::error, "engine-failed").field("reason", error);
            return false;
        }
        cache = redis_cache_.get();
        budget = redis_budget_.get();
    }
    counting_cache_ = std::make_unique<CountingCache>(
        *cache, metrics_, redis_cache_ ? &redis_cache_->counters().near_hits : nullptr);
    cache = counting_cache_.get();
    mx_budget_ = std::make_unique<MxBudget>(*budget, config_.limits.backoff_ttl);
    callout_ = Callout::create(
        &loop_, callout_options(config_, listener_addresses(server_->bound())), error);
    if (!callout_) {
        LogLine(LogLevel::error, "engine-failed").field("reason", error);
        return false;
    }
    callout_->set_target_budget(mx_budget_.get());
    // One line per change of the canary's state; the first check runs now.
    callout_->set_canary_listener(
        [canary = config_.dns.canary](bool healthy, const std::string& reason) {
            LogLine(healthy ? LogLevel::notice : LogLevel::warning, "dns-canary")
                .field("name", canary)
                .field("state", healthy ? "healthy" : "failing")
                .field("reason", reason)
                .field("effect", healthy ? "nxdomain answers are believed"
                                         : "nxdomain answers are tempfail dns-unhealthy");
        });
    callout_->check_dns_canary();
    // Read on every callout, so a SIGHUP that changes policy.skip_mx_hosts applies at once.
    callout_->set_mx_host_filter(
        [this](std::string_view host) { return decider_->settings().skip_mx_hosts.matches(host); });
    verifier_ = std::make_unique<CalloutVerifier>(
        &loop_, *cache, *callout_, *budget, config_.server.reply_timeout,
        [this](const SenderAddress& sender, const CalloutReport& r, bool refresh) {
            metrics_.probe_finished(r);
            LogLine line(LogLevel::info, "probe");
            line.field("sender", sender.address())
                .field("class", to_string(r.verdict.cls))
                .field("reason", r.verdict.reason)
                .field("scope", to_string(r.verdict.scope))
                .field("mx", !r.attempts.empty()     ? r.attempts.back().mx_host
                             : !r.skipped_mx.empty() ? r.skipped_mx  // the skip_mx_hosts match
                                                     : std::string("-"))
                .field("ip", r.attempts.empty() ? std::string("-") : r.attempts.back().address)
                .field("tls", r.attempts.empty() || !r.attempts.back().tls
                                  ? std::string("none")
                                  : r.attempts.back().tls->version)
                .field("attempts", static_cast<long long>(r.attempts.size()))
                .field("refused", static_cast<long long>(r.refused.size()))
                .field("ms", static_cast<long long>(r.elapsed.count()));
            if (refresh) line.field("refresh", "yes");
        });
    verifier_->set_client_ipv6_prefix(static_cast<int>(config_.limits.client_ipv6_prefix));
    decider_->set_verifier(verifier_.get());
    stats_timer_ = std::make_unique<UvTimer>(&loop_);
    stats_timer_->start(std::chrono::minutes(1), [this] { log_stats(); });
    stats_timer_->unref();
    rates_timer_ = std::make_unique<UvTimer>(&loop_);
    tick_rates();
    return true;
}

void Daemon::tick_rates() {
    rates_.tick(metrics_.requests_by_class());
    rates_timer_->start(std::chrono::seconds(1), [this] { tick_rates(); });
    rates_timer_->unref();
}

// The metrics listener is part of the configuration the operator asked for: failing to bind it
// refuses to start, like a policy listener. The control socket is an administrator's
// convenience: without it the daemon still serves mail, so a failure is logged and passed over.
bool Daemon::start_observability() {
    if (!config_.metrics.listen.empty()) {
        std::string why;
        auto address = parse_listen_address(config_.metrics.listen, &why);
        if (!address) {
            LogLine(LogLevel::error, "listen-failed")
                .field("listen", config_.metrics.listen)
                .field("reason", why);
            return false;
        }
        metrics_listener_ = std::make_unique<MetricsListener>(&loop_, *address,
                                                              [this] { return render_metrics(); });
        if (!metrics_listener_->listen()) return false;
    }
    if (!config_.server.control_socket.empty()) {
        control_ =
            std::make_unique<ControlServer>(&loop_, config_.server.control_socket,
                                            [this](const ControlRequest& r) { return control(r); });
        std::string error;
        if (!control_->listen(error)) {
            // Kept, not destroyed: its handle is still closing and libuv needs that memory.
            LogLine(LogLevel::error, "control-socket-failed")
                .field("reason", error)
                .field("effect", "`calloutd status` and `calloutd cache` cannot reach this daemon");
        }
    }
    return true;
}

MetricsSnapshot Daemon::snapshot() const {
    MetricsSnapshot s;
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
    if (cache_) s.cache_entries = cache_->size();
    s.policy_connections = server_->connection_count();
    s.policy_connections_total = server_->connections_accepted();
    if (redis_) {
        s.redis_configured = true;
        s.redis_up = redis_->is_connected();
        s.redis_degraded = !s.redis_up;
        s.redis_timeouts = redis_->stats().timeouts;
        s.redis_reconnects = redis_->stats().connects > 0 ? redis_->stats().connects - 1 : 0;
    }
    ProcessStats p = read_process_stats();
    s.process_start_time_seconds = p.start_time_seconds;
    s.resident_memory_bytes = p.resident_memory_bytes;
    s.open_fds = p.open_fds;
    s.log_dropped_lines = Log::dropped_lines();
    return s;
}

std::string Daemon::render_metrics() const {
    std::string out;
    out.reserve(16 * 1024);
    metrics_.render(out, snapshot());
    return out;
}

ControlReply Daemon::control(const ControlRequest& request) {
    if (request.verb != ControlVerb::status) {
        if (!cache_) return {{}, ControlStatus::error, "the verification engine is not running"};
        return cache_control(*cache_, request, WallClock::now());
    }
    MetricsSnapshot s = snapshot();
    StatusInfo i;
    i.version = CALLOUTD_VERSION;
    i.uptime = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() -
                                                                started_);
    i.pid = static_cast<long long>(getpid());
    i.config_path = config_.path;
    i.dry_run = config_.policy.dry_run;
    i.last_minute = rates_.counts();
    i.window_seconds = rates_.window_seconds();
    i.probes_in_flight = s.probes_in_flight;
    i.budget_denials = s.budget_denials;
    i.cache_entries = s.cache_entries;
    i.policy_connections = s.policy_connections;
    i.redis_configured = s.redis_configured;
    i.redis_endpoint = redis_ ? to_display_string(redis_->endpoint()) : std::string();
    i.redis_up = s.redis_up;
    i.dns_canary_ok = s.dns_canary_ok;
    return {format_status(i), ControlStatus::ok, {}};
}

bool Daemon::start_redis(std::string& error) {
    RedisOptions o;
    o.url = config_.redis.url;
    o.sentinels = config_.redis.sentinels;
    o.master_name = config_.redis.master_name;
    o.command_timeout = config_.redis.timeout;
    o.connect_timeout = std::max<Duration>(config_.redis.timeout * 4, std::chrono::seconds(1));
    redis_ = RedisClient::create(&loop_, o, error);
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
    redis_cache_ = std::make_unique<RedisVerdictCache>(*redis_, *cache_, cache_ttls(config_),
                                                       config_.redis.near_cache_ttl);
    // A probe can last the DNS lookup (timeout doubling per try) plus the probe deadline.
    auto lifetime = config_.callout.probe_timeout +
                    config_.dns.timeout * ((1 << config_.dns.tries) - 1) + std::chrono::seconds(5);
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    std::string node = std::string(host) + ":" + std::to_string(getpid());
    redis_budget_ = std::make_unique<RedisProbeBudget>(*redis_, *budget_, budget_limits(config_),
                                                       lifetime, node, config_.redis.nodes);
    redis_->start();
    return true;
}

// Every node asks a domain the same random local part, so a greylisting server sees one
// triplet whichever node retries: the first node to connect stores a fresh secret in Redis, and
// every node adopts whatever is stored (until then, and without Redis, this host's own secret).
void Daemon::adopt_cluster_secret() {
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

bool Daemon::drop_privileges() {
    const auto& user = config_.server.user;
    const auto& group = config_.server.group;
    if (user.empty() && group.empty()) return true;
    auto fail = [](const std::string& why) {
        LogLine(LogLevel::error, "privilege-drop-failed").field("reason", why);
        return false;
    };
    gid_t gid = getgid();
    uid_t uid = getuid();
    if (!user.empty()) {
        const passwd* pw = getpwnam(user.c_str());
        if (pw == nullptr) return fail("unknown server.user '" + user + "'");
        uid = pw->pw_uid;
        gid = pw->pw_gid;
    }
    if (!group.empty()) {
        const struct group* gr = getgrnam(group.c_str());
        if (gr == nullptr) return fail("unknown server.group '" + group + "'");
        gid = gr->gr_gid;
    }
    // Order matters: supplementary groups and gid while still root, uid last.
    if (getuid() == 0) {
        if (!user.empty() && initgroups(user.c_str(), gid) != 0) return fail("initgroups failed");
        if (user.empty() && setgroups(0, nullptr) != 0) return fail("setgroups failed");
    }
    if (setgid(gid) != 0) return fail("setgid failed");
    if (setuid(uid) != 0) return fail("setuid failed");
    if (uid != 0 && setuid(0) == 0) return fail("could regain root after dropping privileges");
    LogLine(LogLevel::notice, "privileges-dropped")
        .field("uid", static_cast<long long>(uid))
        .field("gid", static_cast<long long>(gid));
    return true;
}

void Daemon::on_signal(uv_signal_t* handle, int signum) {
    auto* self = static_cast<Daemon*>(handle->data);
    if (signum == SIGHUP) {
        self->reload();
    } else {
        self->begin_shutdown(signum);
    }
}

void Daemon::reload() {
    sd_notify(0, "RELOADING=1");
    // What was logged before the signal is written out now (logrotate's postrotate sends HUP).
    Log::flush();
    reload_config();
    Log::flush();
    sd_notify(0, "READY=1");
}

void Daemon::reload_config() {
    auto result = load_config_file(config_.path);
    metrics_.config_reload(std::holds_alternative<Config>(result));
    if (auto* errors = std::get_if<std::vector<std::string>>(&result)) {
        for (const auto& e : *errors) {
            LogLine(LogLevel::error, "reload-failed").field("error", e);
        }
        LogLine(LogLevel::error, "reload-failed")
            .field("reason", "configuration has errors; the previous one stays in force");
        return;
    }
    Config next = std::get<Config>(std::move(result));
    Log::configure(next.log);
    if (verifier_) {
        verifier_->set_reply_timeout(next.server.reply_timeout);
        verifier_->set_client_ipv6_prefix(static_cast<int>(next.limits.client_ipv6_prefix));
    }
    if (cache_) cache_->set_ttls(cache_ttls(next));
    if (budget_) budget_->set_limits(budget_limits(next));
    if (redis_cache_) redis_cache_->set_ttls(cache_ttls(next));
    if (redis_budget_) redis_budget_->set_limits(budget_limits(next));
    if (mx_budget_) mx_budget_->set_backoff(next.limits.backoff_ttl);
    auto engine_options = [](const Config& c) {
        auto o = callout_options(c, {});
        return std::tuple(o.dns.servers, o.dns.timeout, o.dns.tries, o.dns_canary, o.probe.port,
                          o.probe.helo_name, o.probe.connect_timeout, o.probe.command_timeout,
                          o.probe.probe_timeout, o.probe.random_check, o.probe.source_address,
                          o.probe.tls, o.probe.tls_timeout, o.max_mx, o.allow_networks,
                          c.cache.memory_entries, c.redis.url, c.redis.nodes);
    };
    if (engine_options(next) != engine_options(config_)) {
        LogLine(LogLevel::warning, "reload")
            .field("reason",
                   "[dns], [callout], cache.memory_entries and [redis] changes take "
                   "effect after a restart");
    }
    if (next.metrics.listen != config_.metrics.listen ||
        next.server.control_socket != config_.server.control_socket) {
        LogLine(LogLevel::warning, "reload")
            .field("reason", "metrics.listen and server.control_socket changes need a restart");
    }
    decider_->update_settings(next.policy);
    server_->update_settings(next.server);
    config_ = std::move(next);
    LogLine(LogLevel::notice, "reloaded").field("config", config_.path);
}

void Daemon::begin_shutdown(int signum) {
    if (shutting_down_) {
        // A second signal: stop waiting for in-flight requests.
        LogLine(LogLevel::warning, "shutdown").field("reason", "second signal, closing now");
        server_->close_all();
        finish_shutdown();
        return;
    }
    shutting_down_ = true;
    sd_notify(0, "STOPPING=1");
    LogLine(LogLevel::notice, "shutdown")
        .field("signal", signum == SIGTERM ? "TERM" : "INT")
        .field("connections", static_cast<long long>(server_->connection_count()));
    shutdown_timer_.data = this;
    uv_timer_start(
        &shutdown_timer_,
        [](uv_timer_t* t) {
            auto* self = static_cast<Daemon*>(t->data);
            LogLine(LogLevel::warning, "shutdown")
                .field("reason", "server.shutdown_timeout reached, closing remaining connections")
                .field("connections", static_cast<long long>(self->server_->connection_count()));
            self->server_->close_all();
            self->finish_shutdown();
        },
        static_cast<uint64_t>(config_.server.shutdown_timeout.count()), 0);
    server_->drain([this] { finish_shutdown(); });
}

void Daemon::finish_shutdown() {
    if (finished_) return;
    finished_ = true;
    for (uv_signal_t* s : {&sigterm_, &sigint_, &sighup_}) {
        uv_close(reinterpret_cast<uv_handle_t*>(s), nullptr);
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&shutdown_timer_), nullptr);
    server_->close_all();
    if (metrics_listener_) metrics_listener_->close();
    if (control_) control_->close();
    stop_engine(true);
}

}  // namespace calloutd
