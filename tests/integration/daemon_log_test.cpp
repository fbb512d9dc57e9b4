// The daemon binary's log: into a pipe whose reader stops reading, policy answers never stall
// (lines are dropped and counted instead, with one warning), what arrives is whole lines in
// order, and queued lines are written on SIGHUP and at shutdown; the syslog and journald
// targets send datagrams to their sockets.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/http_client.hpp"
#include "support/metrics_scrape.hpp"
#include "support/paths.hpp"
#include "support/policy_burst.hpp"
#include "support/policy_client.hpp"

namespace calloutd::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// calloutd with stderr on a pipe this test reads only when it wants to.
class PipeLoggedDaemon {
  public:
    explicit PipeLoggedDaemon(const std::string& config_toml) : dir_(make_temp_dir("logpipe")) {
        ignore_sigpipe();
        std::string config = dir_ + "/calloutd.toml";
        FILE* f = std::fopen(config.c_str(), "w");
        std::fputs(config_toml.c_str(), f);
        std::fclose(f);
        int p[2];
        if (::pipe2(p, O_CLOEXEC) != 0) return;
        std::string binary = daemon_binary();
        pid_ = fork();
        if (pid_ == 0) {
            dup2(p[1], STDERR_FILENO);
            dup2(p[1], STDOUT_FILENO);
            execl(binary.c_str(), binary.c_str(), "run", "-c", config.c_str(),
                  static_cast<char*>(nullptr));
            _exit(127);
        }
        ::close(p[1]);
        fd_ = p[0];
        ::fcntl(fd_, F_SETFL, O_NONBLOCK);
        started_ = read_until(" started ", 10s);
    }
    ~PipeLoggedDaemon() {
        if (pid_ > 0 && !exited_) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        if (fd_ >= 0) ::close(fd_);
    }

    bool started() const { return started_; }
    const std::string& text() const { return text_; }
    pid_t pid() const { return pid_; }

    // Reads what the pipe holds until `needle` has arrived (or EOF, or the timeout).
    bool read_until(const std::string& needle, std::chrono::milliseconds timeout) {
        auto deadline = Clock::now() + timeout;
        while (text_.find(needle) == std::string::npos) {
            auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            if (left.count() <= 0) return false;
            pollfd pfd{fd_, POLLIN, 0};
            ::poll(&pfd, 1, static_cast<int>(std::min<long long>(left.count(), 100)));
            char buf[65536];
            ssize_t n = ::read(fd_, buf, sizeof buf);
            if (n == 0) return text_.find(needle) != std::string::npos;  // EOF
            if (n > 0) text_.append(buf, static_cast<size_t>(n));
        }
        return true;
    }

    uint16_t port(const std::string& event) const {
        std::smatch m;
        std::regex re(event + R"( listen=inet:127\.0\.0\.1:([0-9]+))");
        if (!std::regex_search(text_, m, re)) return 0;
        return static_cast<uint16_t>(std::stoi(m[1]));
    }

    // SIGTERM, everything the daemon still writes, and its exit code (-1: it did not exit).
    int stop() {
        ::kill(pid_, SIGTERM);
        read_until("\x01never\x01", 10s);  // up to EOF: the daemon closes the pipe by exiting
        int status = 0;
        for (auto deadline = Clock::now() + 10s; Clock::now() < deadline;) {
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                exited_ = true;
                return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            }
            std::this_thread::sleep_for(10ms);
        }
        return -1;
    }

  private:
    std::string dir_;
    pid_t pid_ = -1;
    int fd_ = -1;
    bool started_ = false;
    bool exited_ = false;
    std::string text_;
};

std::string config(const std::string& log_extra = "") {
    // A skip domain and DNS on a closed port: every request is answered at once, nothing probed.
    return "[server]\nlisten = [\"inet:127.0.0.1:0\"]\ncontrol_socket = \"\"\n"
           "[log]\nlevel = \"info\"\n" +
           log_extra +
           "[metrics]\nlisten = \"inet:127.0.0.1:0\"\n"
           "[dns]\nservers = [\"127.0.0.1:9\"]\n[policy]\nskip_domains = [\"example.org\"]\n";
}

std::optional<double> dropped_metric(uint16_t metrics_port) {
    auto r = http_get("127.0.0.1", metrics_port, "/metrics");
    if (!r || r->status != 200) return std::nullopt;
    return sample_value(r->body, "calloutd_log_dropped_lines_total");
}

std::vector<std::string> lines_with(const std::string& text, const std::string& needle) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (line.find(needle) != std::string::npos) out.push_back(line);
    }
    return out;
}

TEST(LogBackpressure, BlockedLogPipeNeverStallsAnswersAndDropsAreCountedInOrder) {
    PipeLoggedDaemon d(config());
    ASSERT_TRUE(d.started()) << d.text();
    uint16_t port = d.port("listening");
    uint16_t metrics = d.port("metrics-listener");
    ASSERT_NE(port, 0) << d.text();
    ASSERT_NE(metrics, 0) << d.text();
    EXPECT_NE(d.text().find(" log=nonblocking"), std::string::npos) << d.text();

    // Nobody reads the pipe from here on: ~150 bytes per decision line, 40,000 lines is more
    // than the pipe (64 KiB) and the daemon's queue (4 MiB) together.
    constexpr int kRequests = 40000;
    std::vector<std::string> requests;
    for (int i = 0; i < kRequests; ++i) {
        char qid[16];
        std::snprintf(qid, sizeof qid, "Q%06d", i);
        requests.push_back(policy_request("alice@example.org", "198.51.100.7", "", qid));
    }
    BurstOptions o;
    o.port = port;
    o.connections = 1;  // one connection: the log's order is the requests' order
    o.window = 64;
    o.timeout = 120s;  // had a write blocked the loop, nothing past the pipe's size would come
    BurstResult r = run_burst(requests, o);
    EXPECT_EQ(r.answered, static_cast<size_t>(kRequests));
    EXPECT_EQ(r.count("DUNNO"), static_cast<size_t>(kRequests));
    auto dropped = dropped_metric(metrics);
    ASSERT_TRUE(dropped.has_value());
    EXPECT_GT(*dropped, 0);

    // The reader is back: the queue drains, then the next line is preceded by the warning.
    PolicyClient c = PolicyClient::inet("127.0.0.1", port);
    std::this_thread::sleep_for(200ms);
    d.read_until("\x01not-there\x01", 2s);  // drain what was queued
    ASSERT_TRUE(c.send(policy_request("alice@example.org", "198.51.100.7", "", "AFTER")));
    EXPECT_EQ(c.read_action(), "DUNNO");
    ASSERT_TRUE(d.read_until("queue_id=AFTER ", 10s)) << d.text().size();

    auto decisions = lines_with(d.text(), " decision queue_id=Q");
    int previous = -1;
    for (const auto& line : decisions) {
        // Whole lines only, each exactly as formatted, in the order the requests came.
        static const std::regex re(
            R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info decision queue_id=Q(\d{6}) sender=alice@example\.org client=198\.51\.100\.7 class=skipped reason=skip-domain action=DUNNO source=skip ms=\d+$)");
        std::smatch m;
        ASSERT_TRUE(std::regex_match(line, m, re)) << line;
        int seq = std::stoi(m[1]);
        ASSERT_GT(seq, previous) << line;
        previous = seq;
    }
    auto warnings = lines_with(d.text(), " log-dropped ");
    ASSERT_EQ(warnings.size(), 1u) << d.text().substr(0, 2000);
    EXPECT_NE(warnings[0].find(" warning log-dropped lines=" +
                               std::to_string(static_cast<long long>(*dropped)) + " "),
              std::string::npos)
        << warnings[0] << " vs " << *dropped;
    EXPECT_EQ(decisions.size() + static_cast<size_t>(*dropped), static_cast<size_t>(kRequests));
    // The warning sits where the gap is: before the line that came after it.
    EXPECT_LT(d.text().find(" log-dropped "), d.text().find("queue_id=AFTER "));
    EXPECT_EQ(d.stop(), 0);
    // The shutdown stats line counts the drops too.
    auto stats = lines_with(d.text(), " info stats ");
    ASSERT_FALSE(stats.empty()) << d.text().substr(d.text().size() - 2000);
    EXPECT_NE(stats.back().find(" log_dropped=" + std::to_string(static_cast<long long>(*dropped))),
              std::string::npos)
        << stats.back();
    EXPECT_NE(d.text().find(" notice stopped"), std::string::npos)
        << d.text().substr(d.text().size() - 500);
}

TEST(LogBackpressure, QueuedLinesAreWrittenOnSighupAndAtShutdown) {
    // An hour between batches: only SIGHUP, 64 KiB queued or shutdown write anything.
    PipeLoggedDaemon d(config("flush_interval = \"1h\"\n"));
    ASSERT_TRUE(d.started()) << d.text();
    uint16_t port = d.port("listening");
    ASSERT_NE(port, 0);
    PolicyClient c = PolicyClient::inet("127.0.0.1", port);
    ASSERT_TRUE(c.send(policy_request("alice@example.org", "198.51.100.7", "", "BEFOREHUP")));
    EXPECT_EQ(c.read_action(), "DUNNO");
    EXPECT_FALSE(d.read_until("queue_id=BEFOREHUP ", 500ms)) << "written without a flush";
    ::kill(d.pid(), SIGHUP);
    EXPECT_TRUE(d.read_until("queue_id=BEFOREHUP ", 5s)) << d.text();
    EXPECT_TRUE(d.read_until(" notice reloaded", 5s)) << d.text();

    ASSERT_TRUE(c.send(policy_request("alice@example.org", "198.51.100.7", "", "BEFORETERM")));
    EXPECT_EQ(c.read_action(), "DUNNO");
    EXPECT_FALSE(d.read_until("queue_id=BEFORETERM ", 500ms)) << "written without a flush";
    EXPECT_EQ(d.stop(), 0);
    EXPECT_NE(d.text().find("queue_id=BEFORETERM "), std::string::npos) << d.text();
    EXPECT_NE(d.text().find(" notice stopped"), std::string::npos) << d.text();
    EXPECT_LT(d.text().find("queue_id=BEFORETERM "), d.text().find(" notice stopped"));
}

// A datagram socket standing in for /dev/log or the journal's socket.
class DatagramSink {
  public:
    explicit DatagramSink(const std::string& path) : path_(path) {
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_un sun{};
        sun.sun_family = AF_UNIX;
        std::snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path.c_str());
        ::unlink(path.c_str());
        bound_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0;
    }
    ~DatagramSink() {
        ::close(fd_);
        ::unlink(path_.c_str());
    }
    bool bound() const { return bound_; }
    // Receives datagrams until one contains `needle`; all of them so far.
    const std::vector<std::string>& until(const std::string& needle,
                                          std::chrono::milliseconds timeout = 10s) {
        auto deadline = Clock::now() + timeout;
        auto has = [&] {
            for (const auto& d : got_)
                if (d.find(needle) != std::string::npos) return true;
            return false;
        };
        while (!has() && Clock::now() < deadline) {
            pollfd pfd{fd_, POLLIN, 0};
            ::poll(&pfd, 1, 50);
            char buf[65536];
            ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
            if (n > 0) got_.emplace_back(buf, static_cast<size_t>(n));
        }
        return got_;
    }
    std::string with(const std::string& needle) const {
        for (const auto& d : got_)
            if (d.find(needle) != std::string::npos) return d;
        return {};
    }

  private:
    std::string path_;
    int fd_ = -1;
    bool bound_ = false;
    std::vector<std::string> got_;
};

// Starts calloutd (stderr to /dev/null: every line goes to the socket); stopped by the test.
pid_t start_quiet(const std::string& dir, const std::string& config_toml) {
    std::string config = dir + "/calloutd.toml";
    FILE* f = std::fopen(config.c_str(), "w");
    std::fputs(config_toml.c_str(), f);
    std::fclose(f);
    std::string binary = daemon_binary();
    pid_t pid = fork();
    if (pid == 0) {
        int null = ::open("/dev/null", O_WRONLY);
        dup2(null, STDERR_FILENO);
        dup2(null, STDOUT_FILENO);
        execl(binary.c_str(), binary.c_str(), "run", "-c", config.c_str(),
              static_cast<char*>(nullptr));
        _exit(127);
    }
    return pid;
}

int stop(pid_t pid) {
    ::kill(pid, SIGTERM);
    int status = 0;
    for (auto deadline = Clock::now() + 10s; Clock::now() < deadline;) {
        if (::waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        std::this_thread::sleep_for(10ms);
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return -1;
}

uint16_t port_in(const std::string& text) {
    std::smatch m;
    static const std::regex re(R"(listening listen=inet:127\.0\.0\.1:([0-9]+))");
    if (!std::regex_search(text, m, re)) return 0;
    return static_cast<uint16_t>(std::stoi(m[1]));
}

TEST(LogTargets, SyslogTargetSendsDatagramsWithFacilityAndSeverity) {
    std::string dir = make_temp_dir("logsyslog");
    DatagramSink sink(dir + "/log.sock");
    ASSERT_TRUE(sink.bound());
    pid_t pid = start_quiet(dir, config("target = \"syslog\"\nsyslog_facility = \"local5\"\n"
                                        "syslog_ident = \"cd-test\"\nsocket = \"" +
                                        dir + "/log.sock\"\n"));
    sink.until(" started ");
    uint16_t port = port_in(sink.with("listening listen=inet:"));
    ASSERT_NE(port, 0) << sink.with(" started ");
    PolicyClient c = PolicyClient::inet("127.0.0.1", port);
    ASSERT_TRUE(c.send(policy_request("alice@example.org", "198.51.100.7", "", "SYSLOGQ")));
    EXPECT_EQ(c.read_action(), "DUNNO");
    sink.until("queue_id=SYSLOGQ ");
    // local5 = 21 << 3 = 168; info = 6, notice = 5.
    static const std::regex decision(
        R"(^<174>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d cd-test\[\d+\]: decision queue_id=SYSLOGQ .*source=skip ms=\d+$)");
    std::string line = sink.with("queue_id=SYSLOGQ ");
    EXPECT_TRUE(std::regex_match(line, decision)) << line;
    EXPECT_TRUE(sink.with(" started ").starts_with("<173>")) << sink.with(" started ");
    EXPECT_NE(sink.with(" started ").find(" log=datagram"), std::string::npos);
    EXPECT_EQ(stop(pid), 0);
    EXPECT_FALSE(sink.until("stopped").empty());
    EXPECT_NE(sink.with(": stopped"), "");
}

TEST(LogTargets, JournaldTargetSendsNativeFields) {
    std::string dir = make_temp_dir("logjournal");
    DatagramSink sink(dir + "/journal.sock");
    ASSERT_TRUE(sink.bound());
    pid_t pid = start_quiet(dir, config("target = \"journald\"\nsyslog_ident = \"cd-test\"\n"
                                        "socket = \"" +
                                        dir + "/journal.sock\"\n"));
    sink.until("\nMESSAGE=started ");
    uint16_t port = port_in(sink.with("listening listen=inet:"));
    ASSERT_NE(port, 0) << sink.with("\nMESSAGE=started ");
    PolicyClient c = PolicyClient::inet("127.0.0.1", port);
    ASSERT_TRUE(c.send(policy_request("alice@example.org", "198.51.100.7", "", "JOURNALQ")));
    EXPECT_EQ(c.read_action(), "DUNNO");
    sink.until("queue_id=JOURNALQ ");
    std::string d = sink.with("queue_id=JOURNALQ ");
    EXPECT_TRUE(d.starts_with("PRIORITY=6\nSYSLOG_FACILITY=2\nSYSLOG_IDENTIFIER=cd-test\n")) << d;
    EXPECT_NE(d.find("\nMESSAGE=decision queue_id=JOURNALQ "), std::string::npos) << d;
    EXPECT_TRUE(d.ends_with("\n"));
    EXPECT_EQ(stop(pid), 0);
}

}  // namespace
}  // namespace calloutd::test
