// calloutd command line: run, check-config, probe, version.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "daemon/config.hpp"
#include "daemon/daemon.hpp"
#include "daemon/probe_command.hpp"

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

    auto* version = app.add_subcommand("version", "Print the version");

    CLI11_PARSE(app, argc, argv);

    if (*version) {
        std::printf("calloutd %s\n", CALLOUTD_VERSION);
        return 0;
    }
    auto config = load_or_report(config_path);
    if (!config) return 1;
    if (*check) {
        std::printf("%s: configuration is valid\n", config_path.c_str());
        return 0;
    }
    if (*probe) {
        int rc = calloutd::run_probe_command(*config, probe_address, stdout);
        std::fflush(stdout);
        return rc;
    }
    calloutd::Daemon daemon(std::move(*config));
    return daemon.run();
}
