// The process_* metrics every Prometheus exporter has, read from /proc/self.
#pragma once

#include <cstdint>

namespace calloutd {

struct ProcessStats {
    double start_time_seconds = 0;  // since the Unix epoch
    uint64_t resident_memory_bytes = 0;
    uint64_t open_fds = 0;
};

// Zeros for what /proc does not tell (not Linux, or /proc hidden).
ProcessStats read_process_stats();

}  // namespace calloutd
