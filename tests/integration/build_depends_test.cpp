// debian/control's Build-Depends name every Debian package whose headers the daemon is built
// from, so the package builds on a clean machine (dpkg-checkbuilddeps cannot see a missing one
// here, where everything is installed).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <vector>

#include "support/command.hpp"
#include "support/paths.hpp"

namespace calloutd::test {
namespace {

using namespace std::chrono_literals;

// Build-Depends names, without versions and alternatives after the first.
std::set<std::string> build_depends() {
    std::ifstream in(source_dir() + "/debian/control");
    std::string line;
    std::string value;
    bool in_field = false;
    while (std::getline(in, line)) {
        if (line.starts_with("Build-Depends:")) {
            in_field = true;
            value = line.substr(14);
        } else if (in_field && line.starts_with(" ")) {
            value += line;
        } else {
            in_field = false;
        }
    }
    std::set<std::string> names;
    std::regex name(R"((?:^|,)\s*([a-z0-9][a-z0-9+.-]*))");
    for (std::sregex_iterator it(value.begin(), value.end(), name), end; it != end; ++it) {
        names.insert((*it)[1].str());
    }
    return names;
}

// The toolchain (build-essential, which Build-Depends need not name) ships these headers.
bool toolchain_package(const std::string& name) {
    static const std::regex toolchain(
        R"(libc6-dev|linux-libc-dev|libcrypt-dev|libstdc\+\+-[0-9]+-dev|libgcc-[0-9]+-dev)");
    return std::regex_match(name, toolchain);
}

TEST(BuildDepends, NameEveryPackageTheDaemonIsCompiledFrom) {
    if (std::string(CALLOUTD_CMAKE_GENERATOR) != "Ninja") {
        GTEST_SKIP() << "reads the header dependencies ninja records; generator is "
                     << CALLOUTD_CMAKE_GENERATOR;
    }
    // Every header outside the source tree that an object of the daemon was compiled from.
    std::string build_dir = std::filesystem::path(daemon_binary()).parent_path().string();
    auto deps = run_command({CALLOUTD_MAKE_PROGRAM, "-C", build_dir, "-t", "deps"}, 60s);
    ASSERT_EQ(deps.exit_code, 0) << deps.err;
    std::set<std::string> headers;
    bool daemon_object = false;
    std::istringstream lines(deps.out);
    for (std::string line; std::getline(lines, line);) {
        if (!line.starts_with(" ")) {
            daemon_object = line.starts_with("CMakeFiles/calloutd_core.dir/") ||
                            line.starts_with("CMakeFiles/calloutd.dir/");
        } else if (daemon_object && line.starts_with("    /") &&
                   !line.starts_with("    " + source_dir() + "/") &&
                   !line.starts_with("    " + build_dir + "/")) {
            headers.insert(line.substr(4));
        }
    }
    ASSERT_GT(headers.size(), 50u) << "no header dependencies recorded:\n" << deps.out;

    // Their packages, from "pkg[:arch][, pkg2]: /path" lines.
    std::vector<std::string> argv{"/usr/bin/dpkg-query", "-S"};
    argv.insert(argv.end(), headers.begin(), headers.end());
    auto owners = run_command(argv, 60s);
    ASSERT_EQ(owners.exit_code, 0) << "headers no Debian package owns:\n" << owners.err;
    std::set<std::string> packages;
    std::istringstream owner_lines(owners.out);
    for (std::string line; std::getline(owner_lines, line);) {
        if (line.starts_with("diversion by ")) continue;
        std::istringstream names(line.substr(0, line.find(": /")));
        for (std::string name; std::getline(names, name, ',');) {
            name.erase(0, name.find_first_not_of(' '));
            packages.insert(name.substr(0, name.find(':')));
        }
    }

    auto declared = build_depends();
    ASSERT_TRUE(declared.contains("cmake")) << "could not read debian/control";
    for (const auto& package : packages) {
        if (toolchain_package(package)) continue;
        EXPECT_TRUE(declared.contains(package))
            << "the daemon is compiled with headers of " << package
            << ", which debian/control's Build-Depends (and scripts/install-deps) lack";
    }
}

}  // namespace
}  // namespace calloutd::test
