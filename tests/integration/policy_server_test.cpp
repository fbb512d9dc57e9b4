// The real calloutd binary over TCP and unix sockets: pipelining, concurrency, half-close,
// protocol violations, limits, SIGHUP reload and SIGTERM drain.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "daemon/io_batch.hpp"
#include "support/daemon_process.hpp"
#include "support/metrics_scrape.hpp"
#include "support/paths.hpp"
#include "support/policy_client.hpp"
#include "support/text.hpp"

namespace calloutd::test {
namespace {

using namespace std::chrono_literals;

// These tests are about the protocol, not verification: the test domain is a skip domain and
// DNS points at a closed loopback port, so nothing ever leaves the machine.
const char* kQuietEngine =
    "[dns]\nservers = [\"127.0.0.1:9\"]\n[policy]\nskip_domains = [\"example.org\"]\n";

std::string config(const std::string& extra_server = "", const std::string& rest = "") {
    return "[server]\nlisten = [\"inet:127.0.0.1:0\", \"unix:@DIR@/policy.sock\"]\n"
           "reply_timeout = \"2s\"\n" +
           extra_server + "\n[log]\nlevel = \"debug\"\n" + kQuietEngine + rest;
}

// Every test runs twice: with server.io_uring = "auto" (batched io_uring where the kernel
// allows it, as on the machines this is developed on) and "off" (one recv/send each).
class PolicyServer : public ::testing::TestWithParam<const char*> {
  protected:
    static std::string with_io(std::string cfg) {
        size_t at = cfg.find("[server]\n");
        if (at != std::string::npos)
            cfg.insert(at + 9, std::string("io_uring = \"") + GetParam() + "\"\n");
        return cfg;
    }
    // A new configuration file for a reload, with the same server.io_uring.
    void rewrite(const std::string& cfg) { daemon_->write_config(with_io(cfg)); }
    void start(const std::string& cfg) {
        daemon_ = std::make_unique<DaemonProcess>("server", with_io(cfg));
        ASSERT_TRUE(daemon_->started()) << daemon_->log();
        port_ = daemon_->tcp_port();
        ASSERT_NE(port_, 0) << daemon_->log();
    }
    PolicyClient tcp() { return PolicyClient::inet("127.0.0.1", port_); }
    PolicyClient unix_client() {
        return PolicyClient::unix_socket(daemon_->dir() + "/policy.sock");
    }

    std::unique_ptr<DaemonProcess> daemon_;
    uint16_t port_ = 0;
};

TEST_P(PolicyServer, AnswersOverTcpAndUnixAndKeepsConnectionOpen) {
    start(config());
    for (bool use_unix : {false, true}) {
        PolicyClient c = use_unix ? unix_client() : tcp();
        ASSERT_TRUE(c.connected());
        for (int i = 0; i < 3; ++i) {
            ASSERT_TRUE(c.send(policy_request("alice@example.org")));
            EXPECT_EQ(c.read_action(), "DUNNO");
        }
    }
    // Log lines follow the replies within milliseconds (written in batches, off the loop).
    EXPECT_TRUE(
        daemon_->wait_for_log("class=skipped reason=skip-domain action=DUNNO source=skip", 5s))
        << daemon_->log();
}

TEST_P(PolicyServer, UnixSocketModeAndStaleSocketReplaced) {
    std::string dir = "/tmp/calloutd-stale-" + std::to_string(getpid());
    ::mkdir(dir.c_str(), 0700);
    std::string path = dir + "/policy.sock";
    // Leave a dead socket file behind, as a crashed daemon would.
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0);
    ::close(fd);
    start("[server]\nlisten = [\"inet:127.0.0.1:0\", \"unix:" + path +
          "\"]\nsocket_mode = \"0620\"\n" + kQuietEngine);
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0620u);
    PolicyClient c = PolicyClient::unix_socket(path);
    ASSERT_TRUE(c.send(policy_request("a@example.org")));
    EXPECT_EQ(c.read_action(), "DUNNO");
    daemon_->signal(SIGTERM);
    EXPECT_EQ(daemon_->wait_exit(5s), 0);
    ::unlink(path.c_str());
    ::rmdir(dir.c_str());
}

TEST_P(PolicyServer, RefusesToStartOnALiveSocketOrBadConfig) {
    start(config());
    DaemonProcess second("second",
                         "[server]\nlisten = [\"unix:" + daemon_->dir() + "/policy.sock\"]\n");
    EXPECT_FALSE(second.started());
    EXPECT_NE(second.wait_exit(5s), 0);
    EXPECT_NE(second.log().find("another process is listening"), std::string::npos) << second.log();

    DaemonProcess bad("bad", "[server]\nlisten = [\"inet:127.0.0.1:0\"]\nbogus = 1\n");
    EXPECT_FALSE(bad.started());
    EXPECT_EQ(bad.wait_exit(5s), 1);
    EXPECT_NE(bad.log().find("calloutd.toml:3:1: unknown key 'server.bogus'"), std::string::npos)
        << bad.log();
}

// libuv reports a socket path in a missing directory as "permission denied"; the admin is told
// which directory is missing instead (policy listener and control socket alike).
TEST_P(PolicyServer, SocketInAMissingDirectoryNamesTheDirectory) {
    DaemonProcess policy("nodir",
                         "[server]\nlisten = [\"unix:/nonexistent-calloutd-test/policy.sock\"]\n");
    EXPECT_FALSE(policy.started());
    EXPECT_NE(policy.wait_exit(5s), 0);
    EXPECT_NE(policy.log().find("directory /nonexistent-calloutd-test does not exist"),
              std::string::npos)
        << policy.log();

    start(config("control_socket = \"/nonexistent-calloutd-test/control.sock\"\n"));
    EXPECT_TRUE(daemon_->wait_for_log(
        "control-socket-failed reason=\"/nonexistent-calloutd-test/control.sock: directory "
        "/nonexistent-calloutd-test does not exist\"",
        5s))
        << daemon_->log();
}

TEST_P(PolicyServer, HundredPipelinedRequestsAnsweredInOrder) {
    // Requests alternate between three answers so order is visible.
    start(config("",
                 "[actions]\n"
                 "skipped = \"WARN skipped\"\n"));
    PolicyClient c = tcp();
    std::string batch;
    std::vector<std::string> want;
    for (int i = 0; i < 100; ++i) {
        std::string req =
            policy_request(i % 3 == 0 ? "" : "user" + std::to_string(i) + "@example.org");
        if (i % 3 == 2) {
            // Not a request the daemon verifies at all: answered from the protocol_state rule.
            req.replace(req.find("RCPT"), 4, "DATA");
        }
        batch += req;
        want.push_back("WARN skipped");
    }
    ASSERT_TRUE(c.send(batch));
    for (int i = 0; i < 100; ++i) ASSERT_EQ(c.read_action(), want[static_cast<size_t>(i)]) << i;
    // The log shows the three kinds in request order (log lines are flushed per loop turn).
    ASSERT_TRUE(daemon_->wait_for_log("sender=user98@example.org", 2s));
    std::string log = daemon_->log();
    size_t pos = 0;
    for (int i = 0; i < 6; ++i) {
        const char* reason = i % 3 == 0   ? "reason=null-sender"
                             : i % 3 == 1 ? "reason=skip-domain"
                                          : "reason=protocol-state";
        pos = log.find(reason, pos);
        ASSERT_NE(pos, std::string::npos) << i << log;
    }
}

// A client that pipelines without reading its answers: the daemon keeps what the socket does
// not take (up to its bound), stops reading that client, keeps answering everyone else, and
// once the client reads, every answer arrives, none twice. Over a unix socket, whose small
// buffers the answers overflow at once; over TCP the kernel's autotuned buffers (megabytes) take
// them all, and only the answers are checked.
TEST_P(PolicyServer, AClientThatDoesNotReadIsPausedThenGetsEveryAnswer) {
    start(config());
    constexpr int kRequests = 40000;
    std::string batch;
    for (int i = 0; i < kRequests; ++i)
        batch += policy_request("user" + std::to_string(i % 50) + "@example.org");
    for (bool use_unix : {true, false}) {
        SCOPED_TRACE(use_unix ? "unix" : "tcp");
        PolicyClient greedy = use_unix ? unix_client() : tcp();
        ASSERT_TRUE(greedy.connected());
        std::atomic<bool> sent_all{false};
        std::thread sender([&] {
            EXPECT_TRUE(greedy.send(batch));
            sent_all = true;
        });
        // Meanwhile: others are answered at once, and the greedy client's requests stop being
        // read (its send blocks) instead of piling up in the daemon.
        for (int i = 0; i < 10; ++i) {
            PolicyClient other = use_unix ? unix_client() : tcp();
            ASSERT_TRUE(other.send(policy_request("bob@example.org")));
            ASSERT_EQ(other.read_action(2s), "DUNNO") << i;
            std::this_thread::sleep_for(100ms);
        }
        if (use_unix) {
            EXPECT_FALSE(sent_all.load()) << "the daemon read " << batch.size()
                                          << " bytes of requests whose answers nobody read";
        }
        int answered = 0;
        while (answered < kRequests && greedy.read_action(5s) == "DUNNO") ++answered;
        sender.join();
        EXPECT_EQ(answered, kRequests);
        EXPECT_EQ(greedy.unread(200ms), "");
    }
}

TEST_P(PolicyServer, FiveHundredConcurrentConnectionsAllAnswered) {
    start(config());
    std::vector<PolicyClient> clients;
    for (int i = 0; i < 500; ++i) {
        clients.push_back(i % 2 == 0 ? tcp() : unix_client());
        ASSERT_TRUE(clients.back().connected()) << i;
    }
    for (auto& c : clients) ASSERT_TRUE(c.send(policy_request("bob@example.org")));
    int answered = 0;
    for (auto& c : clients) answered += c.read_action() == "DUNNO";
    EXPECT_EQ(answered, 500);
}

TEST_P(PolicyServer, HalfClosedClientGetsItsReply) {
    start(config());
    PolicyClient c = tcp();
    ASSERT_TRUE(c.send(policy_request("alice@example.org")));
    c.shutdown_write();
    EXPECT_EQ(c.read_action(), "DUNNO");
    EXPECT_TRUE(c.wait_closed());
    // Exim's readsocket string may also lack the final empty line.
    PolicyClient u = unix_client();
    std::string req = policy_request("alice@example.org");
    ASSERT_TRUE(u.send(req.substr(0, req.size() - 1)));
    u.shutdown_write();
    EXPECT_EQ(u.read_action(), "DUNNO");
    EXPECT_TRUE(u.wait_closed());
}

TEST_P(PolicyServer, ViolationsCloseOnlyTheirConnection) {
    start(config("max_request_bytes = 1024\nmax_line_bytes = 512\n"));
    PolicyClient good = tcp();
    ASSERT_TRUE(good.send(policy_request("a@example.org")));
    ASSERT_EQ(good.read_action(), "DUNNO");

    struct Bad {
        const char* name;
        std::string bytes;
        const char* logged;
    };
    const Bad bads[] = {
        {"oversize line", "request=smtpd_access_policy\nsender=" + std::string(600, 'a'),
         "line too long"},
        {"oversize request",
         "request=smtpd_access_policy\n" + std::string(30, 'x') + "=" + std::string(400, 'y') +
             "\n" + std::string(30, 'z') + "=" + std::string(400, 'y') + "\n" +
             std::string(30, 'w') + "=" + std::string(400, 'y') + "\n",
         "request too large"},
        {"binary", std::string("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 11),
         "binary or control byte"},
        {"http", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "attribute line without"},
        {"not a policy request", "request=junk\n\n", "unsupported request type"},
    };
    for (const auto& b : bads) {
        PolicyClient bad = tcp();
        ASSERT_TRUE(bad.send(b.bytes));
        EXPECT_TRUE(bad.wait_closed()) << b.name;
        EXPECT_TRUE(daemon_->wait_for_log(b.logged, 2s)) << b.name;
        // The parallel good connection is still served.
        ASSERT_TRUE(good.send(policy_request("a@example.org")));
        EXPECT_EQ(good.read_action(), "DUNNO") << b.name;
    }
    std::string log = daemon_->log();
    EXPECT_NE(log.find("protocol-violation peer=127.0.0.1:"), std::string::npos) << log;
}

TEST_P(PolicyServer, GoodRequestsBeforeAViolationAreStillAnswered) {
    start(config());
    PolicyClient c = tcp();
    ASSERT_TRUE(
        c.send(policy_request("a@example.org") + policy_request("b@example.org") + "garbage\n\n"));
    EXPECT_EQ(c.read_action(), "DUNNO");
    EXPECT_EQ(c.read_action(), "DUNNO");
    EXPECT_TRUE(c.wait_closed());
}

TEST_P(PolicyServer, MaxConnectionsAndIdleTimeout) {
    start(config("max_connections = 3\nidle_timeout = \"1s\"\n"));
    std::vector<PolicyClient> held;
    for (int i = 0; i < 3; ++i) {
        held.push_back(tcp());
        ASSERT_TRUE(held.back().send(policy_request("a@example.org")));
        ASSERT_EQ(held.back().read_action(), "DUNNO");
    }
    PolicyClient extra = tcp();
    EXPECT_TRUE(extra.wait_closed(2s));
    EXPECT_TRUE(daemon_->wait_for_log("server.max_connections reached", 2s));
    // Idle connections are closed after idle_timeout; then there is room again.
    for (auto& h : held) EXPECT_TRUE(h.wait_closed(3s));
    PolicyClient again = tcp();
    ASSERT_TRUE(again.send(policy_request("a@example.org")));
    EXPECT_EQ(again.read_action(), "DUNNO");
}

TEST_P(PolicyServer, SighupReloadsAndKeepsOldConfigWhenBroken) {
    start(config("", "[actions]\nskipped = \"WARN first\"\n"));
    PolicyClient c = tcp();
    ASSERT_TRUE(c.send(policy_request("a@example.org")));
    EXPECT_EQ(c.read_action(), "WARN first");

    rewrite(config("", "[actions]\nskipped = \"WARN second\"\nbogus = 1\n"));
    daemon_->signal(SIGHUP);
    ASSERT_TRUE(daemon_->wait_for_log("reload-failed", 5s)) << daemon_->log();
    EXPECT_NE(daemon_->log().find("unknown key 'actions.bogus'"), std::string::npos);
    ASSERT_TRUE(c.send(policy_request("a@example.org")));
    EXPECT_EQ(c.read_action(), "WARN first");

    rewrite(config("", "[actions]\nskipped = \"WARN third\"\n"));
    daemon_->signal(SIGHUP);
    ASSERT_TRUE(daemon_->wait_for_log("reloaded", 5s)) << daemon_->log();
    ASSERT_TRUE(c.send(policy_request("a@example.org")));
    EXPECT_EQ(c.read_action(), "WARN third");
}

// A reload applies what it can and names, in one warning, the changed keys that need a restart.
TEST_P(PolicyServer, SighupNamesTheChangedKeysThatNeedARestart) {
    start(config());
    rewrite(config("max_connections = 5\n",
                   "[actions]\nskipped = \"WARN reloaded\"\n[callout]\nport = "
                   "2525\n[metrics]\nlisten = \"inet:127.0.0.1:0\"\n"));
    daemon_->signal(SIGHUP);
    ASSERT_TRUE(daemon_->wait_for_log(" reloaded ", 5s)) << daemon_->log();
    EXPECT_NE(daemon_->log().find("warning reload reason=\"these changes take effect after a "
                                  "restart\" keys=callout.port,metrics.listen\n"),
              std::string::npos)
        << daemon_->log();
    PolicyClient c = tcp();
    ASSERT_TRUE(c.send(policy_request("a@example.org")));
    EXPECT_EQ(c.read_action(), "WARN reloaded");

    // The old values stay in force, so reloading the same file again says so again.
    daemon_->signal(SIGHUP);
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (occurrences(daemon_->log(), " reloaded ") < 2 &&
           std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(20ms);
    EXPECT_EQ(occurrences(daemon_->log(), "keys=callout.port,metrics.listen\n"), 2u)
        << daemon_->log();
}

TEST_P(PolicyServer, SigtermDrainsAndExits) {
    start(config("shutdown_timeout = \"3s\"\n"));
    PolicyClient idle = tcp();
    PolicyClient busy = tcp();
    ASSERT_TRUE(idle.send(policy_request("a@example.org")));
    ASSERT_EQ(idle.read_action(), "DUNNO");
    // A request already sent when the signal arrives is still answered.
    ASSERT_TRUE(busy.send(policy_request("b@example.org")));
    daemon_->signal(SIGTERM);
    EXPECT_EQ(busy.read_action(), "DUNNO");
    EXPECT_TRUE(idle.wait_closed(3s));
    EXPECT_EQ(daemon_->wait_exit(5s), 0) << daemon_->log();
    EXPECT_FALSE(tcp().connected());
    EXPECT_NE(daemon_->log().find("shutdown signal=TERM"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Io, PolicyServer, ::testing::Values("auto", "off"),
                         [](const auto& info) { return std::string(info.param); });

// calloutd_io_uring_* from a daemon that has answered requests: whether the ring is in use, and
// that it did the work (or, without it, that nothing went through it).
void expect_io_metrics(const DaemonProcess& d, bool ring) {
    const std::string text = scrape(d);
    ASSERT_FALSE(text.empty()) << d.log();
    EXPECT_EQ(sample_value(text, "calloutd_io_uring_up"), ring ? 1 : 0) << text;
    const double enters = sample_value(text, "calloutd_io_uring_enters_total").value_or(-1);
    const double ops = sample_value(text, "calloutd_io_uring_operations_total").value_or(-1);
    if (ring) {
        EXPECT_GT(enters, 0);
        EXPECT_GE(ops, 2);  // at least the request's receive and the reply's send
    } else {
        EXPECT_EQ(enters, 0);
        EXPECT_EQ(ops, 0);
    }
    EXPECT_EQ(sample_value(text, "calloutd_io_uring_late_operations_total"), 0);
}

// The `started` line says how the sockets are read and written; "on" refuses to start where
// io_uring cannot be used, "auto" then falls back and says why.
TEST(IoMode, StartedLineSaysWhichIsUsedAndOnRefusesWithoutIt) {
    std::string why;
    const bool available = IoBatch::open(8, why) != nullptr;
    auto cfg = [](const char* mode) {
        return std::string("[server]\nlisten = [\"inet:127.0.0.1:0\"]\nio_uring = \"") + mode +
               "\"\n[metrics]\nlisten = \"inet:127.0.0.1:0\"\n" + kQuietEngine;
    };
    auto answers = [](DaemonProcess& d) {
        PolicyClient c = PolicyClient::inet("127.0.0.1", d.tcp_port());
        return c.send(policy_request("a@example.org")) && c.read_action() == "DUNNO";
    };
    {
        DaemonProcess off("io-off", cfg("off"));
        ASSERT_TRUE(off.started()) << off.log();
        EXPECT_NE(off.log().find(" io=syscalls"), std::string::npos) << off.log();
        EXPECT_TRUE(answers(off));
        expect_io_metrics(off, false);
    }
    {
        DaemonProcess automatic("io-auto", cfg("auto"));
        ASSERT_TRUE(automatic.started()) << automatic.log();
        EXPECT_NE(automatic.log().find(available ? " io=io_uring" : " io=syscalls"),
                  std::string::npos)
            << automatic.log();
        if (!available) {
            EXPECT_NE(automatic.log().find("io-uring-unavailable reason="), std::string::npos);
        }
        EXPECT_TRUE(answers(automatic));
        expect_io_metrics(automatic, available);
    }
    DaemonProcess on("io-on", cfg("on"));
    if (available) {
        ASSERT_TRUE(on.started()) << on.log();
        EXPECT_NE(on.log().find(" io=io_uring"), std::string::npos) << on.log();
        EXPECT_TRUE(answers(on));
        expect_io_metrics(on, true);
    } else {
        EXPECT_FALSE(on.started());
        EXPECT_EQ(on.wait_exit(5s), 1);
        EXPECT_NE(on.log().find("io-uring-failed reason="), std::string::npos) << on.log();
    }
}

// Under a seccomp filter that refuses io_uring with EPERM (a hardened unit or container):
// "auto" says why and serves with one system call per operation; "on" refuses to start.
TEST(IoMode, RefusedIoUringFallsBackOrStopsAsConfigured) {
    auto cfg = [](const char* mode) {
        return std::string("[server]\nlisten = [\"inet:127.0.0.1:0\"]\nio_uring = \"") + mode +
               "\"\n[metrics]\nlisten = \"inet:127.0.0.1:0\"\n" + kQuietEngine;
    };
    DaemonProcess automatic("io-refused-auto", cfg("auto"), CALLOUTD_WITHOUT_IO_URING);
    ASSERT_TRUE(automatic.started()) << automatic.log();
    EXPECT_NE(automatic.log().find("info io-uring-unavailable reason=\"io_uring_queue_init: "
                                   "Operation not permitted\" io=syscalls"),
              std::string::npos)
        << automatic.log();
    EXPECT_NE(automatic.log().find(" io=syscalls"), std::string::npos) << automatic.log();
    for (int i = 0; i < 3; ++i) {
        PolicyClient c = PolicyClient::inet("127.0.0.1", automatic.tcp_port());
        ASSERT_TRUE(c.send(policy_request("a@example.org") + policy_request("b@example.org")));
        EXPECT_EQ(c.read_action(), "DUNNO");
        EXPECT_EQ(c.read_action(), "DUNNO");
    }
    expect_io_metrics(automatic, false);

    DaemonProcess on("io-refused-on", cfg("on"), CALLOUTD_WITHOUT_IO_URING);
    EXPECT_FALSE(on.started());
    EXPECT_EQ(on.wait_exit(5s), 1);
    EXPECT_NE(on.log().find("error io-uring-failed reason=\"io_uring_queue_init: Operation not "
                            "permitted\""),
              std::string::npos)
        << on.log();
}

TEST(Cli, CheckConfigAndVersion) {
    std::string bin = daemon_binary();
    std::string sample = source_dir() + "/etc/calloutd.toml";
    EXPECT_EQ(std::system((bin + " check-config -c " + sample + " >/dev/null").c_str()), 0);
    EXPECT_EQ(std::system((bin + " version >/dev/null").c_str()), 0);
    EXPECT_NE(std::system((bin + " check-config -c /nonexistent.toml 2>/dev/null").c_str()), 0);
    EXPECT_NE(std::system((bin + " 2>/dev/null >/dev/null").c_str()), 0);
    for (const char* sub : {"run", "check-config", "version"}) {
        EXPECT_EQ(std::system((bin + " " + sub + " --help >/dev/null").c_str()), 0) << sub;
    }
}

}  // namespace
}  // namespace calloutd::test
