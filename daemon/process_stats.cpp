// /proc/self/stat (start time), /proc/stat (boot time), /proc/self/statm (RSS), /proc/self/fd.
#include "daemon/process_stats.hpp"

#include <dirent.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

namespace calloutd {

namespace {

// The start time never changes: computed once.
double start_time_seconds() {
    static const double cached = [] {
        std::ifstream stat("/proc/self/stat");
        std::string line;
        std::getline(stat, line);
        // The command name (field 2) may contain spaces; fields are counted after its ')'.
        auto close = line.rfind(')');
        if (close == std::string::npos) return 0.0;
        std::istringstream fields(line.substr(close + 2));
        std::string field;
        unsigned long long start_ticks = 0;
        for (int i = 3; fields >> field; ++i) {
            if (i == 22) {
                start_ticks = std::stoull(field);
                break;
            }
        }
        std::ifstream proc_stat("/proc/stat");
        unsigned long long boot = 0;
        for (std::string key; proc_stat >> key;) {
            if (key == "btime") {
                proc_stat >> boot;
                break;
            }
        }
        long ticks = sysconf(_SC_CLK_TCK);
        if (boot == 0 || ticks <= 0) return 0.0;
        return static_cast<double>(boot) +
               static_cast<double>(start_ticks) / static_cast<double>(ticks);
    }();
    return cached;
}

}  // namespace

ProcessStats read_process_stats() {
    ProcessStats s;
    s.start_time_seconds = start_time_seconds();
    std::ifstream statm("/proc/self/statm");
    unsigned long long size = 0;
    unsigned long long resident = 0;
    if (statm >> size >> resident) {
        s.resident_memory_bytes = resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    }
    if (DIR* d = opendir("/proc/self/fd")) {
        uint64_t n = 0;
        while (const dirent* e = readdir(d)) {
            if (e->d_name[0] != '.') ++n;
        }
        closedir(d);
        s.open_fds = n > 0 ? n - 1 : 0;  // minus the descriptor of this very listing
    }
    return s;
}

}  // namespace calloutd
