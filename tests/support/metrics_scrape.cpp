// Scrape helpers over the test HTTP client.
#include "support/metrics_scrape.hpp"

#include <regex>
#include <sstream>

#include "support/http_client.hpp"

namespace calloutd::test {

uint16_t metrics_port(const DaemonProcess& daemon) {
    std::smatch m;
    std::string log = daemon.log();
    static const std::regex re(R"(metrics-listener listen=inet:[0-9.]+:([0-9]+))");
    if (!std::regex_search(log, m, re)) return 0;
    return static_cast<uint16_t>(std::stoi(m[1]));
}

std::string scrape(const DaemonProcess& daemon) {
    auto r = http_get("127.0.0.1", metrics_port(daemon), "/metrics");
    return r && r->status == 200 ? r->body : std::string();
}

std::optional<double> sample_value(const std::string& exposition, const std::string& series) {
    std::string needle = series + " ";
    for (size_t at = 0; (at = exposition.find(needle, at)) != std::string::npos; ++at) {
        if (at != 0 && exposition[at - 1] != '\n') continue;
        return std::stod(exposition.substr(at + needle.size()));
    }
    return std::nullopt;
}

std::set<std::string> sample_names(const std::string& exposition) {
    std::set<std::string> out;
    std::istringstream in(exposition);
    for (std::string line; std::getline(in, line);) {
        if (line.empty() || line[0] == '#') continue;
        out.insert(line.substr(0, line.find_first_of("{ ")));
    }
    return out;
}

}  // namespace calloutd::test
