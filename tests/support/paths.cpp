// Temporary directories for tests.
#include "support/paths.hpp"

#include <csignal>
#include <cstdlib>
#include <stdexcept>
#include <vector>

namespace calloutd::test {

std::string make_temp_dir(const std::string& tag) {
    std::string templ = "/tmp/calloutd-" + tag + "-XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    return std::string(buf.data());
}

void ignore_sigpipe() {
    std::signal(SIGPIPE, SIG_IGN);
}

}  // namespace calloutd::test
