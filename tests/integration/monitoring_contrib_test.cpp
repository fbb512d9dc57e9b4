// contrib/prometheus/alerts.yml passes promtool (syntax and its rule unit tests), and every
// metric that contrib/grafana/calloutd.json asks for is exported by the real daemon.
#include <gtest/gtest.h>

#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "support/command.hpp"
#include "support/daemon_process.hpp"
#include "support/metrics_scrape.hpp"
#include "support/paths.hpp"

namespace calloutd::test {
namespace {

using namespace std::chrono_literals;

TEST(MonitoringContrib, AlertRulesPassPromtool) {
    std::string dir = source_dir() + "/contrib/prometheus";
    auto r = run_command({"/usr/bin/promtool", "check", "rules", dir + "/alerts.yml"}, 30s);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("SUCCESS: 7 rules found"), std::string::npos) << r.out;
    // The rule unit tests: each alert fires on the series it is written for, with its text.
    r = run_command({"/usr/bin/promtool", "test", "rules", dir + "/alerts_test.yml"}, 60s);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

TEST(MonitoringContrib, DashboardNamesOnlyMetricsTheDaemonExports) {
    // Every expression and variable query of the dashboard (jq fails on invalid JSON).
    std::string dashboard = source_dir() + "/contrib/grafana/calloutd.json";
    auto q = run_command(
        {"/usr/bin/jq", "-r", "[.. | objects | .expr?, .definition?] | .[] | strings", dashboard},
        30s);
    ASSERT_EQ(q.exit_code, 0) << q.err;
    std::vector<std::string> expressions;
    std::istringstream lines(q.out);
    for (std::string line; std::getline(lines, line);) {
        if (!line.empty()) expressions.push_back(line);
    }
    ASSERT_GE(expressions.size(), 20u) << q.out;
    // Every panel but the rows has at least one query.
    auto panels = run_command(
        {"/usr/bin/jq", "-r",
         "[.panels[] | select(.type != \"row\") | select((.targets // []) | length == 0) | "
         ".title] | join(\",\")",
         dashboard},
        30s);
    EXPECT_EQ(panels.out, "\n") << "panels without a query: " << panels.out;

    DaemonProcess daemon("dashboard",
                         "[server]\nlisten = [\"inet:127.0.0.1:0\"]\n"
                         "control_socket = \"\"\n"
                         "[dns]\nservers = [\"127.0.0.1:9\"]\n"
                         "[metrics]\nlisten = \"inet:127.0.0.1:0\"\n");
    ASSERT_TRUE(daemon.started()) << daemon.log();
    // Exported: every family the daemon declares (a labelled counter has no sample before its
    // first event), with the series names of its histograms.
    std::set<std::string> exported;
    std::istringstream exposition(scrape(daemon));
    for (std::string line; std::getline(exposition, line);) {
        std::smatch m;
        static const std::regex type_line(R"(^# TYPE (\S+) (\S+)$)");
        if (!std::regex_match(line, m, type_line)) continue;
        exported.insert(m[1]);
        if (m[2] == "histogram") {
            for (const char* suffix : {"_bucket", "_sum", "_count"})
                exported.insert(m[1].str() + suffix);
        }
    }
    ASSERT_GT(exported.size(), 20u);
    EXPECT_TRUE(exported.contains("calloutd_requests_total"));
    EXPECT_FALSE(exported.contains("calloutd_request_duration_seconds_total"));

    std::regex metric(R"(\b((?:calloutd|process)_[a-z0-9_]+))");
    for (const auto& e : expressions) {
        size_t named = 0;
        for (std::sregex_iterator it(e.begin(), e.end(), metric), end; it != end; ++it) {
            ++named;
            EXPECT_TRUE(exported.contains((*it)[1])) << "the dashboard asks for " << (*it)[1]
                                                     << ", which calloutd does not export: " << e;
        }
        EXPECT_GT(named, 0u) << "an expression without a calloutd metric: " << e;
    }
    // The panels the issue asks for are there.
    std::string all;
    for (const auto& e : expressions) all += e + "\n";
    for (const char* want :
         {"calloutd_requests_total", "action=~\"REJECT",
          "histogram_quantile(0.99, sum by (le) "
          "(rate(calloutd_request_duration",
          "calloutd_probes_total", "calloutd_probe_duration_seconds_bucket",
          "calloutd_budget_denials_total", "calloutd_probes_in_flight",
          "calloutd_cache_lookups_total", "calloutd_redis_up", "calloutd_redis_degraded"}) {
        EXPECT_NE(all.find(want), std::string::npos) << want;
    }
}

}  // namespace
}  // namespace calloutd::test
