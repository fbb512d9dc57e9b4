// The Debian packaging agrees with the tree: version, build dependencies, installed config, unit.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <vector>

#include "daemon/config.hpp"
#include "support/paths.hpp"

namespace calloutd {
namespace {

std::string read(const std::string& path) {
    std::ifstream in(path);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
}

std::string trim(std::string s) {
    auto first = s.find_first_not_of(" \t\n");
    if (first == std::string::npos) return {};
    auto last = s.find_last_not_of(" \t\n");
    return s.substr(first, last - first + 1);
}

// Package names of a control field ("Build-Depends"), with its continuation lines; the first
// alternative of each entry, without version, architecture and profile restrictions.
std::set<std::string> control_field_packages(const std::string& control, const std::string& field) {
    std::string value;
    bool in_field = false;
    for (const auto& line : lines_of(control)) {
        if (line.starts_with(field + ":")) {
            in_field = true;
            value = line.substr(field.size() + 1);
        } else if (in_field && (line.starts_with(" ") || line.starts_with("\t"))) {
            value += " " + line;
        } else {
            in_field = false;
        }
    }
    std::set<std::string> names;
    std::istringstream entries(value);
    for (std::string entry; std::getline(entries, entry, ',');) {
        entry = trim(entry.substr(0, entry.find('|')));
        entry = trim(entry.substr(0, entry.find_first_of(" ([<")));
        if (!entry.empty()) names.insert(entry);
    }
    return names;
}

// The packages scripts/install-deps installs (its `packages=( ... )` list, comments dropped).
std::set<std::string> install_deps_packages() {
    std::set<std::string> names;
    bool in_list = false;
    for (auto line : lines_of(read(test::source_dir() + "/scripts/install-deps"))) {
        line = trim(line.substr(0, line.find('#')));
        if (line == "packages=(") {
            in_list = true;
            continue;
        }
        if (!in_list) continue;
        if (line == ")") break;
        std::istringstream words(line);
        for (std::string word; words >> word;) names.insert(word);
    }
    return names;
}

// debian/changelog's newest entry, "calloutd (VERSION) DIST; urgency=...", is the project's
// version (CMakeLists.txt project(VERSION), compiled in as CALLOUTD_VERSION).
TEST(Packaging, ChangelogVersionIsTheProjectVersion) {
    auto lines = lines_of(read(test::source_dir() + "/debian/changelog"));
    ASSERT_FALSE(lines.empty());
    std::smatch m;
    ASSERT_TRUE(std::regex_match(lines[0], m, std::regex(R"(calloutd \(([^)]+)\) \S+; .*)")))
        << lines[0];
    EXPECT_EQ(m[1].str(), CALLOUTD_VERSION)
        << "debian/changelog and CMakeLists.txt project(VERSION) disagree; add a changelog entry";
    // NEWS entries name a version the changelog has.
    auto news = lines_of(read(test::source_dir() + "/debian/NEWS"));
    ASSERT_FALSE(news.empty());
    ASSERT_TRUE(std::regex_match(news[0], m, std::regex(R"(calloutd \(([^)]+)\) \S+; .*)")))
        << news[0];
    EXPECT_NE(read(test::source_dir() + "/debian/changelog").find("calloutd (" + m[1].str() + ")"),
              std::string::npos)
        << "debian/NEWS names version " << m[1].str() << " that debian/changelog lacks";
}

TEST(Packaging, ManPagesCarryTheProjectVersion) {
    for (const char* page : {"/docs/calloutd.8", "/docs/calloutd.toml.5"}) {
        std::string th = "\"calloutd " + std::string(CALLOUTD_VERSION) + "\"";
        for (const auto& line : lines_of(read(test::source_dir() + page))) {
            if (!line.starts_with(".TH ")) continue;
            EXPECT_NE(line.find(th), std::string::npos) << page << ": " << line;
        }
    }
}

// A fresh Debian 12 gets every build dependency of the package from scripts/install-deps.
TEST(Packaging, BuildDependsAreInstalledByInstallDeps) {
    auto build_depends =
        control_field_packages(read(test::source_dir() + "/debian/control"), "Build-Depends");
    ASSERT_TRUE(build_depends.contains("debhelper-compat")) << "debhelper compat level";
    auto installed = install_deps_packages();
    ASSERT_TRUE(installed.contains("cmake")) << "could not read scripts/install-deps";
    for (const auto& name : build_depends) {
        // debhelper-compat is a virtual package that debhelper provides.
        std::string package = name == "debhelper-compat" ? "debhelper" : name;
        EXPECT_TRUE(installed.contains(package))
            << "Build-Depends " << name << " is not installed by scripts/install-deps";
    }
    for (const char* tool : {"dpkg-dev", "lintian", "man-db"}) {
        EXPECT_TRUE(installed.contains(tool)) << "make deb and its test need " << tool;
    }
}

// What cmake --install and the package put in /etc/calloutd is the sample in dry run.
TEST(Packaging, InstalledConfigIsTheSampleInDryRun) {
    auto sample = lines_of(read(test::source_dir() + "/etc/calloutd.toml"));
    std::string installed_text = read(CALLOUTD_INSTALLED_CONFIG);
    auto installed = lines_of(installed_text);
    ASSERT_EQ(installed.size(), sample.size()) << CALLOUTD_INSTALLED_CONFIG;
    int differing = 0;
    for (size_t i = 0; i < sample.size(); ++i) {
        if (sample[i] == installed[i]) continue;
        ++differing;
        EXPECT_EQ(sample[i], "dry_run = false") << "line " << i + 1;
        EXPECT_EQ(installed[i], "dry_run = true") << "line " << i + 1;
    }
    EXPECT_EQ(differing, 1);
    // The comment above it says how to enforce.
    EXPECT_NE(installed_text.find("systemctl reload calloutd"), std::string::npos);
    auto loaded = load_config_file(CALLOUTD_INSTALLED_CONFIG);
    ASSERT_TRUE(std::holds_alternative<Config>(loaded));
    EXPECT_TRUE(std::get<Config>(loaded).policy.dry_run);
}

// The unit (one file: cmake --install and dh_installsystemd both install it) never starts or
// reloads a broken configuration, reloads with SIGHUP, and needs no user created on install.
TEST(Packaging, UnitChecksTheConfigBeforeStartAndReload) {
    auto unit = lines_of(read(test::source_dir() + "/contrib/systemd/calloutd.service"));
    auto position = [&](const std::string& line) {
        for (size_t i = 0; i < unit.size(); ++i) {
            if (unit[i] == line) return static_cast<long>(i);
        }
        return -1L;
    };
    const std::string check = "/usr/sbin/calloutd check-config -c /etc/calloutd/calloutd.toml";
    EXPECT_GE(position("ExecStartPre=" + check), 0);
    EXPECT_GE(position("ExecStart=/usr/sbin/calloutd run -c /etc/calloutd/calloutd.toml"), 0);
    long reload_check = position("ExecReload=" + check);
    long reload_hup = position("ExecReload=/bin/kill -HUP $MAINPID");
    EXPECT_GE(reload_check, 0);
    EXPECT_GT(reload_hup, reload_check) << "check-config must run before SIGHUP";
    for (const char* line : {"Type=notify", "DynamicUser=yes", "RuntimeDirectory=calloutd",
                             "WantedBy=multi-user.target"}) {
        EXPECT_GE(position(line), 0) << line;
    }
}

}  // namespace
}  // namespace calloutd
