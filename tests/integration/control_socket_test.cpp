// `calloutd status` and `calloutd cache get|del|flush` against a running daemon in memory mode,
// over server.control_socket; the socket's permissions; the protocol by hand.
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "support/callout_world.hpp"
#include "support/command.hpp"
#include "support/daemon_process.hpp"
#include "support/dnsmasq.hpp"
#include "support/fake_smtp.hpp"
#include "support/paths.hpp"
#include "support/policy_client.hpp"
#include "support/text.hpp"

namespace calloutd::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kCtlIp = "127.0.0.112";  // ctl.test: knows alice

class ControlSocket : public ::testing::Test {
  protected:
    void SetUp() override {
        DnsmasqZones z;
        z.local_domains = {"test"};
        z.mx = {{"ctl.test", "mx.ctl.test", 10}};
        z.hosts = {{"mx.ctl.test", {kCtlIp}}};
        dnsmasq_ = std::make_unique<Dnsmasq>(z);
        FakeSmtpScript knows_alice;
        knows_alice.recipients["alice"] = "250 2.1.5 ok";
        smtp_ = std::make_unique<FakeSmtpServer>(knows_alice, kCtlIp);
        ASSERT_TRUE(smtp_->ok()) << smtp_->error();
        CalloutConfig c;
        c.dns_server = dnsmasq_->server();
        c.smtp_port = smtp_->port();
        c.log_level = "info";
        daemon_ = std::make_unique<DaemonProcess>("control", callout_config(c));
        ASSERT_TRUE(daemon_->started()) << daemon_->log();
        ASSERT_TRUE(daemon_->wait_for_log("control-socket path=", 5s)) << daemon_->log();
    }
    void TearDown() override {
        if (HasFailure() && daemon_) std::cerr << "--- calloutd log ---\n" << daemon_->log();
        if (smtp_) smtp_->stop();
    }

    std::string socket_path() const { return daemon_->dir() + "/control.sock"; }
    std::optional<std::string> ask(const std::string& sender) {
        PolicyClient c = PolicyClient::inet("127.0.0.1", daemon_->tcp_port());
        c.send(policy_request(sender));
        return c.read_action(10s);
    }
    CommandResult calloutd(std::vector<std::string> args) {
        args.insert(args.begin(), daemon_binary());
        args.push_back("-c");
        args.push_back(daemon_->config_path());
        auto r = run_command(args, 20s);
        EXPECT_FALSE(r.timed_out);
        return r;
    }

    std::unique_ptr<Dnsmasq> dnsmasq_;
    std::unique_ptr<FakeSmtpServer> smtp_;
    std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(ControlSocket, StatusSummarisesTheRunningDaemon) {
    ASSERT_EQ(ask("alice@ctl.test"), "DUNNO");
    ASSERT_EQ(ask("alice@ctl.test"), "DUNNO");
    ASSERT_EQ(ask("someone@gmail.com"), "DUNNO");
    // The per-minute window is sampled every second.
    std::this_thread::sleep_for(1500ms);
    auto r = calloutd({"status"});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    std::cout << r.out;
    for (const char* want :
         {"calloutd " CALLOUTD_VERSION ", pid ", "mode: memory (no redis.url)",
          "requests over the last ", "probes in flight: 0", "budget denials since start: domain=0",
          "provider=0", "cache entries (this node): 2", "policy connections open: 0",
          "dns canary: ok"}) {
        EXPECT_NE(r.out.find(want), std::string::npos) << want;
    }
    // Two valid answers and one skip within the window.
    EXPECT_NE(r.out.find(" valid "), std::string::npos);
    auto line_of = [&](const std::string& cls) {
        auto at = r.out.find("  " + cls + " ");
        return at == std::string::npos ? std::string()
                                       : r.out.substr(at, r.out.find('\n', at) - at);
    };
    EXPECT_TRUE(line_of("valid").ends_with(" 2")) << line_of("valid");
    EXPECT_TRUE(line_of("skipped").ends_with(" 1")) << line_of("skipped");
    EXPECT_TRUE(line_of("total").ends_with(" 3")) << line_of("total");
}

TEST_F(ControlSocket, CacheGetDelFlushInMemoryMode) {
    ASSERT_EQ(ask("alice@ctl.test"), "DUNNO");
    ASSERT_TRUE(ask("ghost@ctl.test")->starts_with("REJECT 5.1.7"));
    ASSERT_EQ(smtp_->connections_accepted(), 2u);

    auto r = calloutd({"cache", "get", "alice@CTL.test"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("address alice@ctl.test: class=valid reason="), std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find(" reply=\"250 2.1.5 ok\""), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("domain ctl.test: not cached"), std::string::npos) << r.out;
    r = calloutd({"cache", "get", "nobody@ctl.test"});
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_NE(r.out.find("address nobody@ctl.test: not cached"), std::string::npos) << r.out;

    // A wrong verdict deleted: the next request probes again.
    r = calloutd({"cache", "del", "ghost@ctl.test"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(r.out, "address ghost@ctl.test: deleted\n");
    ASSERT_TRUE(ask("ghost@ctl.test")->starts_with("REJECT 5.1.7"));
    EXPECT_EQ(smtp_->connections_accepted(), 3u);
    r = calloutd({"cache", "del", "never@ctl.test"});
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;

    r = calloutd({"cache", "flush", "ctl.test"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(r.out, "domain ctl.test: deleted 2 address verdict(s), no domain fact\n");
    r = calloutd({"cache", "get", "alice@ctl.test"});
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    r = calloutd({"cache", "flush", "alice@ctl.test"});
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    r = calloutd({"cache", "get", "not an address"});
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
}

TEST_F(ControlSocket, SocketIsMode0660AndRefusesOtherUsers) {
    struct stat st {};
    ASSERT_EQ(::stat(socket_path().c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0660u);
    if (getuid() != 0) GTEST_SKIP() << "needs root to try as another user";
    // nobody (not the owner, not in the group) may not connect. The directory is opened up, so
    // it is the socket's own mode that refuses (nobody can see the socket: exit 4 otherwise).
    ASSERT_EQ(::chmod(daemon_->dir().c_str(), 0755), 0);
    pid_t pid = fork();
    if (pid == 0) {
        if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(2);
        struct stat seen {};
        if (::stat(socket_path().c_str(), &seen) != 0) _exit(4);
        int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un sun{};
        sun.sun_family = AF_UNIX;
        std::strncpy(sun.sun_path, socket_path().c_str(), sizeof sun.sun_path - 1);
        int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun);
        _exit(rc == 0 ? 0 : errno == EACCES ? 1 : 3);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 1)
        << "0: connected, 1: EACCES, 2: setuid failed, 3: other, 4: cannot see the socket";
}

TEST_F(ControlSocket, TheProtocolByHand) {
    PolicyClient c = PolicyClient::unix_socket(socket_path());
    ASSERT_TRUE(c.connected());
    c.send("cache-get alice@ctl.test\nflushall\ncache-del\r\nstatus\n");
    std::string got;
    char buf[4096];
    while (occurrences(got, "\nok\n") + occurrences(got, "\nnone\n") + occurrences(got, "error ") <
           4) {
        pollfd p{c.fd(), POLLIN, 0};
        ASSERT_GT(::poll(&p, 1, 5000), 0) << got;
        ssize_t n = ::recv(c.fd(), buf, sizeof buf, 0);
        ASSERT_GT(n, 0) << got;
        got.append(buf, static_cast<size_t>(n));
    }
    EXPECT_TRUE(
        got.starts_with("data address alice@ctl.test: not cached\n"
                        "data domain ctl.test: not cached\n"
                        "none\n"
                        "error unknown command"))
        << got;
    EXPECT_NE(got.find("error cache-del takes one argument\n"), std::string::npos) << got;
    EXPECT_NE(got.find("data calloutd " CALLOUTD_VERSION), std::string::npos) << got;
    EXPECT_TRUE(got.ends_with("ok\n")) << got;
    // A line beyond 1024 bytes is refused and the connection closed.
    PolicyClient big = PolicyClient::unix_socket(socket_path());
    big.send(std::string(2000, 'x'));
    EXPECT_TRUE(big.wait_closed(5s));
}

TEST_F(ControlSocket, CommandsSayWhenTheDaemonCannotBeReached) {
    daemon_->signal(SIGTERM);
    ASSERT_EQ(daemon_->wait_exit(10s), 0);
    struct stat st {};
    EXPECT_NE(::stat(socket_path().c_str(), &st), 0) << "socket file left behind";
    auto r = calloutd({"status"});
    EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
    EXPECT_NE(r.err.find("cannot connect to the control socket"), std::string::npos) << r.err;
    r = calloutd({"cache", "get", "alice@ctl.test"});
    EXPECT_EQ(r.exit_code, 3) << r.out << r.err;

    daemon_->write_config("[server]\ncontrol_socket = \"\"\n");
    r = calloutd({"status"});
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    r = calloutd({"cache", "get", "alice@ctl.test"});
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    daemon_->write_config("[server]\ncontrol_socket = \"inet:127.0.0.1:9000\"\n");
    r = calloutd({"status"});
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    EXPECT_NE(r.err.find("server.control_socket must be an absolute path"), std::string::npos)
        << r.err;
}

}  // namespace
}  // namespace calloutd::test
