// calloutd command line: run, check-config, probe, cache, status, version.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <tuple>
#include <utility>
#include <vector>

#include "daemon/cache_command.hpp"
#include "daemon/config.hpp"
#include "daemon/daemon.hpp"
#include "daemon/probe_command.hpp"
#include "daemon/status_command.hpp"

namespace {

using calloutd::Config;

// Loads the file or prints every error as FILE:LINE:COL: message.
std::optional<Config> load_or_report(const std::string& path) {
    auto result = calloutd::load_config_file(path);
    if (auto* errors = std::get_if<std::vector<std::string>>(&result)) {
        for (const auto& e : *errors) std::cerr << e << '\n';
        return std::nullopt;
    }
    return std::get<Config>(std::move(result));
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"calloutd: sender verification by SMTP callback, for Postfix and Exim"};
    app.require_subcommand(1);
    std::string config_path = "/etc/calloutd/calloutd.toml";

    auto* run = app.add_subcommand("run", "Run the policy daemon in the foreground");
    run->add_option("-c,--config", config_path, "Configuration file")->capture_default_str();

    auto* check = app.add_subcommand(
        "check-config", "Check a configuration file; exit 0 if valid, else print FILE:LINE:COL");
    check->add_option("-c,--config", config_path, "Configuration file")->capture_default_str();

    auto* probe = app.add_subcommand(
        "probe",
        "Verify one address now (no cache) and print the SMTP transcript; exit 0 valid, "
        "1 invalid or no_mail_domain, 2 otherwise");
    probe->add_option("-c,--config", config_path, "Configuration file")->capture_default_str();
    std::string probe_address;
    probe->add_option("address", probe_address, "Envelope sender to verify")->required();

    auto* cache = app.add_subcommand(
        "cache",
        "Show or delete cached verdicts: in Redis with redis.url (del/flush also drop the running "
        "daemon's local copies), else in the running daemon's memory over "
        "server.control_socket; exit 0 found/deleted, 1 nothing cached, 2 usage, 3 Redis or "
        "the daemon unreachable");
    cache->require_subcommand(1);
    std::string cache_target;
    std::vector<std::pair<CLI::App*, calloutd::CacheAction>> cache_actions;
    for (auto [name, action, help] :
         {std::tuple{"get", calloutd::CacheAction::get,
                     "Print the address verdict and the domain fact"},
          std::tuple{"del", calloutd::CacheAction::del,
                     "Delete the address verdict (ADDRESS) or the domain fact (DOMAIN)"},
          std::tuple{"flush", calloutd::CacheAction::flush,
                     "Delete the domain fact and every address verdict of DOMAIN"}}) {
        auto* sub = cache->add_subcommand(name, help);
        sub->add_option("-c,--config", config_path, "Configuration file")->capture_default_str();
        sub->add_option("target", cache_target, "user@domain or domain")->required();
        cache_actions.emplace_back(sub, action);
    }

    auto* status = app.add_subcommand(
        "status",
        "Summary of the running daemon over server.control_socket (uptime, requests/s by class "
        "over the last minute, probes in flight, budget denials, cache, Redis); exit 0, "
        "2 no control socket configured, 3 daemon unreachable");
    status->add_option("-c,--config", config_path, "Configuration file")->capture_default_str();

    auto* version = app.add_subcommand("version", "Print the version");

    CLI11_PARSE(app, argc, argv);

    if (*version) {
        std::printf("calloutd %s\n", CALLOUTD_VERSION);
        return 0;
    }
    auto config = load_or_report(config_path);
    // `cache` keeps 1 for "nothing cached"; a broken configuration is a usage error there.
    if (!config) return *cache || *status ? calloutd::kCacheUsage : 1;
    if (*check) {
        std::printf("%s: configuration is valid\n", config_path.c_str());
        return 0;
    }
    if (*probe) {
        int rc = calloutd::run_probe_command(*config, probe_address, stdout);
        std::fflush(stdout);
        return rc;
    }
    if (*status) {
        int rc = calloutd::run_status_command(*config, stdout, stderr);
        std::fflush(stdout);
        return rc;
    }
    for (const auto& [sub, action] : cache_actions) {
        if (!*sub) continue;
        int rc = calloutd::run_cache_command(*config, action, cache_target, stdout, stderr);
        std::fflush(stdout);
        return rc;
    }
    calloutd::Daemon daemon(std::move(*config));
    return daemon.run();
}
