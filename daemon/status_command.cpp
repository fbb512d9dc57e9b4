// Status summary: formatted by the daemon (one wording for every client), printed by the CLI.
#include "daemon/status_command.hpp"

#include <cinttypes>

#include "daemon/control_client.hpp"

namespace calloutd {

namespace {

std::string uptime_text(std::chrono::seconds s) {
    long long t = s.count();
    char buf[64];
    if (t >= 86400) {
        std::snprintf(buf, sizeof buf, "%lldd %02lldh%02lldm", t / 86400, t % 86400 / 3600,
                      t % 3600 / 60);
    } else if (t >= 3600) {
        std::snprintf(buf, sizeof buf, "%lldh%02lldm%02llds", t / 3600, t % 3600 / 60, t % 60);
    } else {
        std::snprintf(buf, sizeof buf, "%lldm%02llds", t / 60, t % 60);
    }
    return buf;
}

std::string rate_row(std::string_view name, uint64_t count, size_t window) {
    char buf[96];
    double per_second = window > 0 ? static_cast<double>(count) / static_cast<double>(window) : 0;
    std::snprintf(buf, sizeof buf, "  %-22s %10.2f/s %10" PRIu64, std::string(name).c_str(),
                  per_second, count);
    return buf;
}

}  // namespace

std::vector<std::string> format_status(const StatusInfo& i) {
    std::vector<std::string> out;
    out.push_back("calloutd " + i.version + ", pid " + std::to_string(i.pid) + ", up " +
                  uptime_text(i.uptime) + ", config " + i.config_path +
                  (i.dry_run ? " (dry run: always DUNNO)" : ""));
    if (!i.redis_configured) {
        out.push_back("mode: memory (no redis.url): verdicts and budgets are this node's alone");
    } else {
        out.push_back("mode: redis " + i.redis_endpoint +
                      (i.redis_up ? ": up, shared with the cluster"
                                  : ": DOWN, degraded: answering from this node's cache and "
                                    "budgets"));
    }
    out.push_back("requests over the last " + std::to_string(i.window_seconds) +
                  " s, by class:           rate      count");
    uint64_t total = 0;
    for (auto cls : kAllVerdictClasses) {
        uint64_t n = i.last_minute[static_cast<size_t>(cls)];
        total += n;
        out.push_back(rate_row(to_string(cls), n, i.window_seconds));
    }
    out.push_back(rate_row("total", total, i.window_seconds));
    out.push_back("probes in flight: " + std::to_string(i.probes_in_flight));
    std::string denials = "budget denials since start:";
    for (size_t b = 0; b < kBudgetLabels; ++b) {
        denials += " " + std::string(to_string(static_cast<BudgetLabel>(b))) + "=" +
                   std::to_string(i.budget_denials[b]);
    }
    out.push_back(denials);
    out.push_back("cache entries (this node): " + std::to_string(i.cache_entries));
    out.push_back("policy connections open: " + std::to_string(i.policy_connections));
    out.push_back(std::string("dns canary: ") + (!i.dns_canary_ok   ? "n/a"
                                                 : *i.dns_canary_ok ? "ok"
                                                                    : "FAILING"));
    return out;
}

int run_status_command(const Config& config, std::FILE* out, std::FILE* err) {
    if (config.server.control_socket.empty()) {
        std::fprintf(err, "%s: server.control_socket is empty: `calloutd status` needs it\n",
                     config.path.c_str());
        return kStatusUsage;
    }
    std::string error;
    auto reply = ask_daemon(config.server.control_socket, {ControlVerb::status, ""},
                            std::chrono::seconds(10), error);
    if (!reply) {
        std::fprintf(err, "%s\n", error.c_str());
        return kStatusUnreachable;
    }
    if (reply->status == ControlStatus::error) {
        std::fprintf(err, "calloutd: %s\n", reply->error.c_str());
        return kStatusUnreachable;
    }
    for (const auto& line : reply->data) std::fprintf(out, "%s\n", line.c_str());
    return kStatusOk;
}

}  // namespace calloutd
