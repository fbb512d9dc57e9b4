// Runs a short-lived program to completion and captures what it printed, for CLI tests.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace calloutd::test {

struct CommandResult {
    int exit_code = -1;  // 128 + signal when killed by one
    bool timed_out = false;
    std::string out;  // stdout
    std::string err;  // stderr
};

// Runs argv[0] (a path) with `argv`; killed with SIGKILL and reaped after `timeout`.
CommandResult run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout);

}  // namespace calloutd::test
