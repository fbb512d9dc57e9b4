// The running daemon: event loop, policy server, signals (TERM/INT drain, HUP reload).
#pragma once

#include <uv.h>

#include <chrono>
#include <memory>

#include "daemon/config.hpp"
#include "daemon/control_server.hpp"
#include "daemon/engine.hpp"
#include "daemon/metrics.hpp"
#include "daemon/metrics_listener.hpp"
#include "daemon/server.hpp"
#include "policy/decider.hpp"
#include "util/uv_timer.hpp"

namespace calloutd {

class Daemon {
  public:
    explicit Daemon(Config config);
    ~Daemon();
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;

    // Runs until SIGTERM/SIGINT; returns the process exit code.
    int run();

  private:
    static void on_signal(uv_signal_t* handle, int signum);
    void reload();
    void reload_config();
    void begin_shutdown(int signum);
    void finish_shutdown();
    bool drop_privileges();
    bool start_engine();
    void on_probe(const SenderAddress& sender, const CalloutReport& r, bool refresh);
    bool start_observability();
    void tick_rates();
    MetricsSnapshot snapshot() const;
    std::string render_metrics() const;
    ControlReply control(const ControlRequest& request);

    uv_loop_t loop_;
    Config config_;
    Metrics metrics_;
    RecentRates rates_;
    std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
    std::unique_ptr<Decider> decider_;
    std::unique_ptr<Server> server_;
    std::unique_ptr<Engine> engine_;  // null until started, and if it could not be
    std::unique_ptr<UvTimer> rates_timer_;
    std::unique_ptr<MetricsListener> metrics_listener_;
    std::unique_ptr<ControlServer> control_;
    uv_signal_t sigterm_;
    uv_signal_t sigint_;
    uv_signal_t sighup_;
    uv_timer_t shutdown_timer_;
    bool shutting_down_ = false;
    bool finished_ = false;
};

}  // namespace calloutd
