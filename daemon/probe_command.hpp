// `calloutd probe`: one callout without cache, with a readable SMTP transcript.
#pragma once

#include <cstdio>
#include <string>

#include "daemon/config.hpp"

namespace calloutd {

// Prints the MX list, every SMTP line with timings, and the class; returns the exit code:
// 0 valid, 1 invalid or no_mail_domain, 2 anything else.
int run_probe_command(const Config& config, const std::string& address, std::FILE* out);

}  // namespace calloutd
