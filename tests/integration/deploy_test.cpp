// Deployment behaviours: systemd readiness notification, privilege drop, cmake --install.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <vector>

#include "support/daemon_process.hpp"
#include "support/paths.hpp"
#include "support/policy_client.hpp"

namespace calloutd::test {
namespace {

using namespace std::chrono_literals;

const char* kConfig =
    "[server]\nlisten = [\"inet:127.0.0.1:0\", \"unix:@DIR@/policy.sock\"]\n"
    "[dns]\nservers = [\"127.0.0.1:9\"]\n[policy]\nskip_domains = [\"example.org\"]\n";

// A datagram socket standing in for systemd's NOTIFY_SOCKET.
class NotifySocket {
  public:
    explicit NotifySocket(const std::string& path) : path_(path) {
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_un sun{};
        sun.sun_family = AF_UNIX;
        std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
        ::bind(fd_, reinterpret_cast<sockaddr*>(&sun), sizeof sun);
    }
    ~NotifySocket() {
        ::close(fd_);
        ::unlink(path_.c_str());
    }
    // Collects datagrams until one contains `needle`.
    bool wait_for(const std::string& needle, std::chrono::milliseconds timeout) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            if (seen_.find(needle) != std::string::npos) return true;
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            char buf[1024];
            ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
            if (n > 0) seen_.append(buf, static_cast<size_t>(n)).append("\n");
        }
        return seen_.find(needle) != std::string::npos;
    }
    const std::string& seen() const { return seen_; }

  private:
    std::string path_;
    int fd_ = -1;
    std::string seen_;
};

TEST(Deploy, TellsSystemdWhenReadyReloadingAndStopping) {
    std::string dir = make_temp_dir("notify");
    NotifySocket notify(dir + "/notify.sock");
    ::setenv("NOTIFY_SOCKET", (dir + "/notify.sock").c_str(), 1);
    DaemonProcess d("notify", kConfig);
    ::unsetenv("NOTIFY_SOCKET");
    ASSERT_TRUE(d.started()) << d.log();
    EXPECT_TRUE(notify.wait_for("READY=1", 5s)) << notify.seen();
    d.signal(SIGHUP);
    EXPECT_TRUE(notify.wait_for("RELOADING=1", 5s)) << notify.seen();
    d.signal(SIGTERM);
    EXPECT_TRUE(notify.wait_for("STOPPING=1", 5s)) << notify.seen();
    EXPECT_EQ(d.wait_exit(5s), 0);
    std::filesystem::remove_all(dir);
}

std::string status_line(pid_t pid, const std::string& key) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.starts_with(key + ":")) return line;
    }
    return {};
}

TEST(Deploy, DropsPrivilegesAfterBindingListeners) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    // Root binds the listeners (the unix socket in a root-owned directory), then runs as nobody.
    std::string cfg = kConfig;
    cfg.replace(cfg.find("[dns]"), 0, "user = \"nobody\"\ngroup = \"nogroup\"\n");
    DaemonProcess dropped("privdrop", cfg);
    ASSERT_TRUE(dropped.started()) << dropped.log();
    EXPECT_NE(dropped.log().find("privileges-dropped uid=65534 gid=65534"), std::string::npos)
        << dropped.log();
    std::string uid = status_line(dropped.pid(), "Uid");
    EXPECT_EQ(uid, "Uid:\t65534\t65534\t65534\t65534") << uid;
    std::string gid = status_line(dropped.pid(), "Gid");
    EXPECT_EQ(gid, "Gid:\t65534\t65534\t65534\t65534") << gid;
    // Still serving on both listeners.
    auto tcp = PolicyClient::inet("127.0.0.1", dropped.tcp_port());
    ASSERT_TRUE(tcp.send(policy_request("a@example.org")));
    EXPECT_EQ(tcp.read_action(), "DUNNO");
    auto unix_client = PolicyClient::unix_socket(dropped.dir() + "/policy.sock");
    ASSERT_TRUE(unix_client.send(policy_request("a@example.org")));
    EXPECT_EQ(unix_client.read_action(), "DUNNO");
}

TEST(Deploy, RefusesToRunAsAnUnknownUser) {
    std::string cfg = kConfig;
    cfg.replace(cfg.find("[dns]"), 0, "user = \"no-such-user-calloutd\"\n");
    DaemonProcess d("nouser", cfg);
    EXPECT_FALSE(d.started());
    EXPECT_EQ(d.wait_exit(5s), 1);
    EXPECT_NE(d.log().find("unknown server.user"), std::string::npos) << d.log();
}

// Every installed regular file with this name under `root`.
std::vector<std::filesystem::path> find_named(const std::string& root, const std::string& name) {
    std::vector<std::filesystem::path> found;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
        if (entry.is_regular_file() && entry.path().filename() == name) {
            found.push_back(entry.path());
        }
    }
    return found;
}

std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

// Into a DESTDIR, whatever prefix the build was configured with: the unit names the installed
// binary and configuration (the Debian package, prefix /usr, is tested by the package test).
TEST(Deploy, CmakeInstallPutsEverythingInItsPlace) {
    std::string build_dir = std::filesystem::path(daemon_binary()).parent_path().string();
    std::string dest = make_temp_dir("install");
    std::string cmd = "DESTDIR=" + dest + " cmake --install " + build_dir + " >/dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
    for (const char* f : {"calloutd", "calloutd.toml", "never-probe.list", "never-probe-mx.list",
                          "calloutd.8", "calloutd.toml.5", "calloutd.service"}) {
        EXPECT_EQ(find_named(dest, f).size(), 1u) << f;
    }
    auto units = find_named(dest, "calloutd.service");
    ASSERT_EQ(units.size(), 1u);
    EXPECT_TRUE(units[0].parent_path().string().ends_with("/lib/systemd/system")) << units[0];
    std::string unit = read_file(units[0]);
    EXPECT_NE(unit.find("Type=notify"), std::string::npos);
    std::smatch m;
    ASSERT_TRUE(std::regex_search(unit, m, std::regex(R"(\nExecStart=(/\S+) run -c (/\S+)\n)")))
        << unit;
    std::string binary = dest + m[1].str();
    std::string config = dest + m[2].str();
    EXPECT_TRUE(std::filesystem::equivalent(binary, find_named(dest, "calloutd").at(0)));
    EXPECT_TRUE(std::filesystem::equivalent(config, find_named(dest, "calloutd.toml").at(0)));
    for (const char* exec : {"ExecStartPre=", "ExecReload="}) {
        EXPECT_NE(unit.find(exec + m[1].str() + " check-config -c " + m[2].str() + "\n"),
                  std::string::npos)
            << exec;
    }
    // The installed configuration is valid for the installed binary, and dry-run: installing
    // never starts rejecting mail.
    EXPECT_EQ(std::system((binary + " check-config -c " + config + " >/dev/null").c_str()), 0);
    EXPECT_NE(read_file(config).find("\ndry_run = true\n"), std::string::npos);
    std::filesystem::remove_all(dest);
}

}  // namespace
}  // namespace calloutd::test
