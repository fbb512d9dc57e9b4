// Locations the tests need: the source tree and the built daemon.
#pragma once

#include <string>

namespace calloutd::test {

inline std::string source_dir() {
    return CALLOUTD_SOURCE_DIR;
}
inline std::string daemon_binary() {
    return CALLOUTD_BINARY;
}
// A fresh private directory under /tmp for one test; removed by the caller.
std::string make_temp_dir(const std::string& tag);
// libuv and hiredis write with write(2): a peer that hangs up mid-test must not kill the test
// binary. Called by every support class that starts a server or a client; idempotent.
void ignore_sigpipe();

}  // namespace calloutd::test
