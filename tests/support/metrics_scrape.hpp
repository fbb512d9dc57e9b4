// Reading calloutd's metrics in tests: the listener's port from the log, values from a scrape.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>

#include "support/daemon_process.hpp"

namespace calloutd::test {

// The port of "metrics-listener listen=inet:HOST:PORT" in the daemon's log; 0 if none.
uint16_t metrics_port(const DaemonProcess& daemon);
// GET /metrics from the daemon's metrics listener; "" when it did not answer 200.
std::string scrape(const DaemonProcess& daemon);
// The value of the sample written exactly as `series` (name and labels as the daemon orders
// them), or nullopt when the exposition has no such line.
std::optional<double> sample_value(const std::string& exposition, const std::string& series);
// Every sample name (histograms: the _bucket/_sum/_count names) in an exposition.
std::set<std::string> sample_names(const std::string& exposition);

}  // namespace calloutd::test
