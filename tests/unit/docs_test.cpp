// The man pages must describe every configuration key with the schema's default.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "daemon/config_schema.hpp"
#include "support/paths.hpp"

namespace calloutd {
namespace {

std::string read(const std::string& path) {
    std::ifstream in(path);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// roff escapes '-' as "\-"; undo that to compare with plain text.
std::string unroff(std::string s) {
    for (size_t pos = 0; (pos = s.find("\\-", pos)) != std::string::npos;) s.erase(pos, 1);
    for (size_t pos = 0; (pos = s.find("\\e", pos)) != std::string::npos;) s.replace(pos, 2, "\\");
    return s;
}

TEST(ManPage, ConfigPageDescribesEveryKeyWithItsDefault) {
    std::string page = unroff(read(test::source_dir() + "/docs/calloutd.toml.5"));
    ASSERT_FALSE(page.empty());
    for (const auto& def : config_schema()) {
        std::string heading = ".B " + std::string(def.key) + "\n";
        auto at = page.find(heading);
        ASSERT_NE(at, std::string::npos) << "docs/calloutd.toml.5 does not describe " << def.key;
        auto next = page.find(".TP", at);
        std::string entry = page.substr(at, next - at);
        EXPECT_NE(entry.find("Default: \\fB" + std::string(def.default_toml) + "\\fR"),
                  std::string::npos)
            << def.key << ": man page default differs from schema default " << def.default_toml;
    }
}

// The page's one sentence on reloads names exactly the keys the schema marks Reload::restart, by
// key or by a section whose keys all need a restart.
TEST(ManPage, ConfigPageNamesWhatAReloadDoesNotApply) {
    std::string page = unroff(read(test::source_dir() + "/docs/calloutd.toml.5"));
    auto at = page.find("A reload applies every key except ");
    ASSERT_NE(at, std::string::npos);
    std::string sentence = page.substr(at, page.find('\n', at) - at);
    for (const auto& def : config_schema()) {
        std::string key(def.key);
        std::string section = "[" + key.substr(0, key.find('.')) + "]";
        bool named = sentence.find(" " + key + ",") != std::string::npos ||
                     sentence.find(" " + key + ":") != std::string::npos ||
                     sentence.find(section) != std::string::npos;
        EXPECT_EQ(named, def.reload == Reload::restart)
            << def.key
            << (named ? " is named but a reload applies it" : " needs a restart but is not named");
    }
}

TEST(ManPage, DaemonPageNamesEveryCommandAndClass) {
    std::string page = unroff(read(test::source_dir() + "/docs/calloutd.8"));
    for (const char* word : {"run", "check-config", "probe", "version", "status", "cache-get",
                             "cache-del", "cache-flush", "SIGHUP", "SIGTERM"}) {
        EXPECT_NE(page.find(word), std::string::npos) << word;
    }
    for (auto c : kAllVerdictClasses) {
        EXPECT_NE(page.find(".B " + std::string(to_string(c)) + "\n"), std::string::npos)
            << to_string(c);
    }
}

}  // namespace
}  // namespace calloutd
