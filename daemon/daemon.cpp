// Daemon lifecycle: start listeners, drop privileges, serve, reload on HUP, drain on TERM.
#include "daemon/daemon.hpp"

#include <grp.h>
#include <pwd.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>

#include "daemon/cache_control.hpp"
#include "daemon/components.hpp"
#include "daemon/config_schema.hpp"
#include "daemon/config_values.hpp"
#include "daemon/io_batch.hpp"
#include "daemon/log.hpp"
#include "daemon/process_stats.hpp"
#include "daemon/status_command.hpp"

namespace calloutd {

Daemon::Daemon(Config config) : config_(std::move(config)) {
    uv_loop_init(&loop_);
    decider_ = std::make_unique<Decider>(config_.policy, nullptr);
    server_ = std::make_unique<Server>(&loop_, *decider_, config_.server, &metrics_);
}

Daemon::~Daemon() {
    if (decider_) decider_->set_verifier(nullptr);
    rates_timer_.reset();
    engine_.reset();
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
        .field("redis", engine_->redis_configured() ? engine_->redis_endpoint() : std::string("-"))
        .field("dry_run", config_.policy.dry_run ? "yes" : "no")
        .field("tls", config_.callout.tls)
        .field("log", Log::output_mode())
        .field("io", server_->io_mode());
    // Start-up is written at once whatever log.flush_interval says.
    Log::flush();
    uv_run(&loop_, UV_RUN_DEFAULT);
    LogLine(LogLevel::notice, "stopped");
    Log::detach();
    return 0;
}

bool Daemon::start_engine() {
    Engine::Hooks hooks;
    hooks.on_probe = [this](const SenderAddress& sender, const CalloutReport& r, bool refresh) {
        on_probe(sender, r, refresh);
    };
    // Read on every callout, so a SIGHUP that changes policy.skip_mx_hosts applies at once.
    hooks.skip_mx_host = [this](std::string_view host) {
        return decider_->settings().skip_mx_hosts.matches(host);
    };
    std::string error;
    engine_ = Engine::create(&loop_, config_, metrics_, listener_addresses(server_->bound()),
                             std::move(hooks), error);
    if (!engine_) {
        LogLine(LogLevel::error, "engine-failed").field("reason", error);
        return false;
    }
    decider_->set_verifier(engine_->verifier());
    rates_timer_ = std::make_unique<UvTimer>(&loop_);
    tick_rates();
    return true;
}

// One line per finished probe, and its metrics.
void Daemon::on_probe(const SenderAddress& sender, const CalloutReport& r, bool refresh) {
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
        .field("tls", r.attempts.empty() || !r.attempts.back().tls ? std::string("none")
                                                                   : r.attempts.back().tls->version)
        .field("attempts", static_cast<long long>(r.attempts.size()))
        .field("refused", static_cast<long long>(r.refused.size()))
        .field("ms", static_cast<long long>(r.elapsed.count()));
    if (refresh) line.field("refresh", "yes");
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
    if (engine_) engine_->fill(s);
    s.policy_connections = server_->connection_count();
    s.policy_connections_total = server_->connections_accepted();
    ProcessStats p = read_process_stats();
    s.process_start_time_seconds = p.start_time_seconds;
    s.resident_memory_bytes = p.resident_memory_bytes;
    s.open_fds = p.open_fds;
    s.log_dropped_lines = Log::dropped_lines();
    s.io_uring = server_->io_uring();
    if (const IoBatch* b = server_->io_batch()) {
        s.io_uring_enters = b->system_calls();
        s.io_uring_operations = b->operations();
        s.io_uring_late_operations = b->late_completions();
    }
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
        if (!engine_) return {{}, ControlStatus::error, "the verification engine is not running"};
        return cache_control(engine_->local_cache(), request, WallClock::now());
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
    i.redis_endpoint = engine_ ? engine_->redis_endpoint() : std::string();
    i.redis_up = s.redis_up;
    i.dns_canary_ok = s.dns_canary_ok;
    return {format_status(i), ControlStatus::ok, {}};
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
    // The schema marks what only a restart changes: those keys keep their running values, so
    // the configuration kept here (shown by `status`, compared by the next reload) is the one
    // in force, and a second reload of the same file warns again.
    if (auto keys = restart_keys_changed(config_, next); !keys.empty()) {
        std::string list;
        for (auto k : keys) list.append(list.empty() ? "" : ",").append(k);
        LogLine(LogLevel::warning, "reload")
            .field("reason", "these changes take effect after a restart")
            .field("keys", list);
    }
    keep_restart_keys(config_, next);
    Log::configure(next.log);
    if (engine_) engine_->apply(next);
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
    rates_timer_.reset();
    if (engine_) {
        decider_->set_verifier(nullptr);
        engine_->stop(config_.redis.timeout);
    }
}

}  // namespace calloutd
