// LogWriter against real destinations: a file, a pipe nobody reads, syslog and journald sockets.
#include "daemon/log_writer.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>
#include <uv.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/page_cache.hpp"

namespace calloutd {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class LogWriterTest : public ::testing::Test {
  protected:
    void SetUp() override {
        uv_loop_init(&loop_);
        char tmpl[] = "/tmp/calloutd-logwriter-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override {
        // Close whatever a test left open so the loop closes cleanly.
        uv_walk(
            &loop_,
            [](uv_handle_t* h, void*) {
                if (!uv_is_closing(h)) uv_close(h, nullptr);
            },
            nullptr);
        uv_run(&loop_, UV_RUN_DEFAULT);
        EXPECT_EQ(uv_loop_close(&loop_), 0);
        std::system(("rm -rf " + dir_).c_str());
    }

    // Runs the loop until `done` holds or the deadline passes; the writer's handles are unref'd,
    // so a timer keeps the loop turning.
    template <class Pred>
    bool run_until(Pred done, std::chrono::milliseconds timeout = 10s) {
        uv_timer_t tick;
        uv_timer_init(&loop_, &tick);
        uv_timer_start(
            &tick, [](uv_timer_t*) {}, 1, 1);
        auto deadline = Clock::now() + timeout;
        bool ok = false;
        while (Clock::now() < deadline) {
            uv_run(&loop_, UV_RUN_ONCE);
            if (done()) {
                ok = true;
                break;
            }
        }
        uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
        uv_run(&loop_, UV_RUN_NOWAIT);
        return ok;
    }

    // A datagram socket standing in for /dev/log or the journal.
    int bind_datagram(const std::string& path) {
        int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_un sun{};
        sun.sun_family = AF_UNIX;
        std::snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path.c_str());
        ::unlink(path.c_str());
        EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0);
        return fd;
    }

    static std::vector<std::string> receive_all(int fd) {
        std::vector<std::string> out;
        char buf[65536];
        for (;;) {
            ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n < 0) break;
            out.emplace_back(buf, static_cast<size_t>(n));
        }
        return out;
    }

    static std::string read_available(int fd) {
        std::string out;
        char buf[65536];
        for (;;) {
            ssize_t n = ::read(fd, buf, sizeof buf);
            if (n <= 0) break;
            out.append(buf, static_cast<size_t>(n));
        }
        return out;
    }

    static std::vector<std::string> lines_of(const std::string& text) {
        std::vector<std::string> out;
        std::istringstream in(text);
        for (std::string line; std::getline(in, line);) out.push_back(line);
        return out;
    }

    static std::string slurp(const std::string& path) {
        std::ifstream in(path);
        std::ostringstream s;
        s << in.rdbuf();
        return s.str();
    }

    uv_loop_t loop_;
    std::string dir_;
};

// The message of a stderr-format line ("TIMESTAMP LEVEL MESSAGE").
std::string message_of(const std::string& line) {
    static const std::regex re(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+) (.*)$)");
    std::smatch m;
    if (!std::regex_match(line, m, re)) return "BAD FORMAT: " + line;
    return m[1].str() + " " + m[2].str();
}

TEST_F(LogWriterTest, FileGetsEveryLineInOrderOffTheLoop) {
    std::string path = dir_ + "/calloutd.log";
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    auto w = LogWriter::for_fd(fd);
    w->attach(&loop_);
    EXPECT_EQ(w->mode(), "file");
    constexpr int kLines = 20000;
    for (int i = 0; i < kLines; ++i) w->write(LogLevel::info, "decision seq=" + std::to_string(i));
    // Nothing was written from inside write(): a regular file is written on its own thread.
    EXPECT_GT(w->queued_bytes(), 0u);
    ASSERT_TRUE(run_until([&] { return w->queued_bytes() == 0; }));
    w->detach();
    uv_run(&loop_, UV_RUN_NOWAIT);
    auto lines = lines_of(slurp(path));
    ASSERT_EQ(lines.size(), static_cast<size_t>(kLines));
    for (int i = 0; i < kLines; ++i) {
        ASSERT_EQ(message_of(lines[static_cast<size_t>(i)]),
                  "info decision seq=" + std::to_string(i));
    }
    EXPECT_EQ(w->dropped_lines(), 0u);
    ::close(fd);
}

TEST_F(LogWriterTest, FileThatRefusesWritesCountsEveryLineAsDropped) {
    // A regular file opened read-only: the file thread's write fails (EBADF), the loop learns
    // it at its next look and counts the batch's lines.
    std::string path = dir_ + "/readonly.log";
    int fd = ::open(path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    auto w = LogWriter::for_fd(fd);
    w->attach(&loop_);
    EXPECT_EQ(w->mode(), "file");
    for (int i = 0; i < 10; ++i) w->write(LogLevel::info, "lost " + std::to_string(i));
    ASSERT_TRUE(run_until([&] { return w->dropped_lines() == 10; }));
    EXPECT_EQ(w->queued_bytes(), 0u);
    w->detach();
    uv_run(&loop_, UV_RUN_NOWAIT);
    ::close(fd);
}

TEST_F(LogWriterTest, RetiredFileWriterFinishesItsQueueThenIsDone) {
    std::string path = dir_ + "/retired.log";
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    auto w = LogWriter::for_fd(fd);
    w->attach(&loop_);
    for (int i = 0; i < 1000; ++i) w->write(LogLevel::info, "line " + std::to_string(i));
    w->retire();
    w->write(LogLevel::info, "ignored");
    ASSERT_TRUE(run_until([&] { return w->done(); }));
    auto lines = lines_of(slurp(path));
    ASSERT_EQ(lines.size(), 1000u);
    EXPECT_EQ(message_of(lines[999]), "info line 999");
    EXPECT_EQ(w->dropped_lines(), 0u);
    w.reset();
    uv_run(&loop_, UV_RUN_NOWAIT);
    ::close(fd);
}

// log.write_behind reaches the file thread: with it the file's early pages leave the page
// cache as the log grows, without it they stay.
TEST_F(LogWriterTest, WriteBehindIsTheWritersOptionAndCanBeTurnedOff) {
    if (!test::page_cache_can_drop(dir_)) GTEST_SKIP() << dir_ << " is on tmpfs";
    for (bool behind : {true, false}) {
        std::string path = dir_ + (behind ? "/behind.log" : "/kept.log");
        int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        ASSERT_GE(fd, 0);
        auto w = LogWriter::for_fd(fd);
        w->set_write_behind(behind);
        w->attach(&loop_);
        std::string pad(1000, 'w');
        for (int mib = 0; mib < 20; ++mib) {
            for (int i = 0; i < 1049; ++i) w->write(LogLevel::info, pad);  // about 1 MiB
            ASSERT_TRUE(run_until([&] { return w->queued_bytes() == 0; }));
            std::this_thread::sleep_for(5ms);  // the disk catches up
        }
        EXPECT_EQ(w->dropped_lines(), 0u);
        w->detach();
        uv_run(&loop_, UV_RUN_NOWAIT);
        double early = test::cached_share(fd, 12 << 20);
        ASSERT_GE(early, 0.0);
        if (behind) {
            EXPECT_LT(early, 0.25);
        } else {
            EXPECT_GT(early, 0.9);
        }
        ::close(fd);
    }
}

TEST_F(LogWriterTest, RetiredWhileTheFileThreadHoldsABatchStillFinishes) {
    // flush() hands the batch to the file thread at once; retire() right after finds it (most
    // likely) still there, and must wait for it rather than close and never look again. The
    // long flush interval means only the completion poll can notice the thread is done.
    std::string path = dir_ + "/retired-busy.log";
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    LogWriterOptions o;
    o.flush_delay = std::chrono::hours(1);
    for (int round = 0; round < 20; ++round) {
        auto w = LogWriter::for_fd(fd, o);
        w->attach(&loop_);
        std::string pad(100, 'z');  // one batch, well below flush_bytes: nothing written yet
        for (int i = 0; i < 100; ++i) w->write(LogLevel::info, pad);
        w->write(LogLevel::info, "last of round " + std::to_string(round));
        w->flush();
        w->retire();
        ASSERT_TRUE(run_until([&] { return w->done(); }, 5s)) << "round " << round;
        EXPECT_EQ(w->dropped_lines(), 0u);
        w.reset();
        uv_run(&loop_, UV_RUN_NOWAIT);
    }
    auto lines = lines_of(slurp(path));
    ASSERT_EQ(lines.size(), 20u * 101u);
    EXPECT_EQ(message_of(lines.back()), "info last of round 19");
    ::close(fd);
}

TEST_F(LogWriterTest, BlockedPipeNeverBlocksCountsDropsAndSaysSoOnce) {
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    LogWriterOptions o;
    o.max_pending_bytes = 256 * 1024;
    auto w = LogWriter::for_fd(p[1], o);
    w->attach(&loop_);
    EXPECT_EQ(w->mode(), "nonblocking");
    // Nobody reads: the pipe (64 KiB) fills, then the queue, then lines are dropped. Had any
    // write blocked, this test would hang here.
    constexpr int kLines = 20000;
    std::string pad(80, 'x');
    for (int i = 0; i < kLines; ++i) {
        w->write(LogLevel::info, "decision seq=" + std::to_string(i) + " pad=" + pad);
        if (i % 100 == 0) uv_run(&loop_, UV_RUN_NOWAIT);
    }
    uv_run(&loop_, UV_RUN_NOWAIT);
    uint64_t dropped = w->dropped_lines();
    EXPECT_GT(dropped, 0u);
    EXPECT_LE(w->queued_bytes(), o.max_pending_bytes);
    // The reader comes back: everything queued arrives, then the warning, then new lines.
    ::fcntl(p[0], F_SETFL, O_NONBLOCK);
    std::string got;
    ASSERT_TRUE(run_until([&] {
        got += read_available(p[0]);
        return w->queued_bytes() == 0;
    }));
    w->write(LogLevel::info, "after the gap");
    ASSERT_TRUE(run_until([&] {
        got += read_available(p[0]);
        return got.find("after the gap") != std::string::npos;
    })) << got.size();
    auto lines = lines_of(got);
    // Complete lines only, in order, with exactly one warning that counts what is missing.
    int expect_next = 0;
    size_t warnings = 0;
    uint64_t received = 0;
    for (const auto& line : lines) {
        std::string m = message_of(line);
        if (m.starts_with("info decision seq=")) {
            int seq = std::stoi(m.substr(18));
            ASSERT_GE(seq, expect_next) << "out of order: " << line;
            ASSERT_EQ(m, "info decision seq=" + std::to_string(seq) + " pad=" + pad);
            expect_next = seq + 1;
            ++received;
        } else if (m.starts_with("warning log-dropped lines=")) {
            ++warnings;
            EXPECT_EQ(m.substr(0, m.find(' ', 26)),
                      "warning log-dropped lines=" + std::to_string(dropped));
        } else {
            EXPECT_EQ(m, "info after the gap");
        }
    }
    EXPECT_EQ(warnings, 1u);
    EXPECT_EQ(received + dropped, static_cast<uint64_t>(kLines));
    EXPECT_EQ(w->dropped_lines(), dropped);
    w->detach();
    uv_run(&loop_, UV_RUN_NOWAIT);
    ::close(p[0]);
    ::close(p[1]);
}

TEST_F(LogWriterTest, StreamSocketLikeTheJournalsStdoutIsWrittenWithoutBlocking) {
    // systemd connects stderr to the journal with a stream socket, shared with stdout.
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int flags_before = ::fcntl(sv[0], F_GETFL);
    LogWriterOptions o;
    o.max_pending_bytes = 256 * 1024;
    auto w = LogWriter::for_fd(sv[0], o);
    w->attach(&loop_);
    EXPECT_EQ(w->mode(), "socket");
    // libuv's poll sets O_NONBLOCK; the shared descriptor gets its flags back.
    EXPECT_EQ(::fcntl(sv[0], F_GETFL), flags_before);
    constexpr int kLines = 20000;
    for (int i = 0; i < kLines; ++i) {
        w->write(LogLevel::info, "decision seq=" + std::to_string(i) + std::string(60, 'z'));
        if (i % 100 == 0) uv_run(&loop_, UV_RUN_NOWAIT);
    }
    uint64_t dropped = w->dropped_lines();
    EXPECT_GT(dropped, 0u) << "nobody read: the socket buffer and the queue filled";
    ::fcntl(sv[1], F_SETFL, O_NONBLOCK);
    std::string got;
    ASSERT_TRUE(run_until([&] {
        got += read_available(sv[1]);
        return w->queued_bytes() == 0;
    }));
    w->write(LogLevel::info, "after the gap");
    ASSERT_TRUE(run_until([&] {
        got += read_available(sv[1]);
        return got.find("after the gap\n") != std::string::npos;
    }));
    auto lines = lines_of(got);
    size_t decisions = 0;
    for (const auto& line : lines) {
        std::string m = message_of(line);
        ASSERT_FALSE(m.starts_with("BAD FORMAT")) << m;
        if (m.starts_with("info decision seq=")) ++decisions;
    }
    EXPECT_EQ(decisions + dropped, static_cast<size_t>(kLines));
    EXPECT_EQ(::fcntl(sv[0], F_GETFL), flags_before);
    w->detach();
    uv_run(&loop_, UV_RUN_NOWAIT);
    ::close(sv[0]);
    ::close(sv[1]);
}

TEST_F(LogWriterTest, FlushWritesAtOnceAndDetachDrainsTheQueue) {
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    ::fcntl(p[0], F_SETFL, O_NONBLOCK);
    LogWriterOptions o;
    o.flush_delay = std::chrono::hours(1);  // only flush() and detach() write
    auto w = LogWriter::for_fd(p[1], o);
    w->attach(&loop_);
    w->write(LogLevel::info, "one");
    w->write(LogLevel::notice, "two");
    uv_run(&loop_, UV_RUN_NOWAIT);
    EXPECT_EQ(read_available(p[0]), "");
    w->flush();  // what SIGHUP does
    auto lines = lines_of(read_available(p[0]));
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_EQ(message_of(lines[0]), "info one");
    EXPECT_EQ(message_of(lines[1]), "notice two");
    w->write(LogLevel::info, "three");
    w->detach();  // shutdown: written before detach returns
    lines = lines_of(read_available(p[0]));
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(message_of(lines[0]), "info three");
    // Detached: a line is written at once.
    w->write(LogLevel::error, "four");
    lines = lines_of(read_available(p[0]));
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(message_of(lines[0]), "error four");
    uv_run(&loop_, UV_RUN_NOWAIT);
    ::close(p[0]);
    ::close(p[1]);
}

TEST_F(LogWriterTest, DetachGivesUpOnABlockedPipeWithinItsTimeout) {
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    LogWriterOptions o;
    o.drain_timeout = 300ms;
    auto w = LogWriter::for_fd(p[1], o);
    w->attach(&loop_);
    std::string pad(200, 'y');
    for (int i = 0; i < 2000; ++i) w->write(LogLevel::info, pad);
    uv_run(&loop_, UV_RUN_NOWAIT);
    auto start = Clock::now();
    w->detach();
    auto took = Clock::now() - start;
    EXPECT_GE(took, 250ms);
    EXPECT_LT(took, 5s);
    EXPECT_GT(w->dropped_lines(), 0u);
    EXPECT_EQ(w->queued_bytes(), 0u);
    uv_run(&loop_, UV_RUN_NOWAIT);
    ::close(p[0]);
    ::close(p[1]);
}

TEST_F(LogWriterTest, SyslogDatagramsCarryPriorityIdentAndPid) {
    std::string path = dir_ + "/log.sock";
    int rx = bind_datagram(path);
    std::string error;
    auto w = LogWriter::for_socket(LogProtocol::syslog, path, LOG_MAIL, "calloutd-test", error);
    EXPECT_EQ(error, "");
    w->attach(&loop_);
    EXPECT_EQ(w->mode(), "datagram");
    for (int i = 0; i < 300; ++i) w->write(LogLevel::info, "decision seq=" + std::to_string(i));
    w->write(LogLevel::warning, "something odd");
    std::vector<std::string> got;
    ASSERT_TRUE(run_until([&] {
        for (auto& d : receive_all(rx)) got.push_back(d);
        return got.size() >= 301;
    }));
    static const std::regex re(
        R"(^<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d calloutd-test\[(\d+)\]: (.*)$)");
    for (int i = 0; i <= 300; ++i) {
        std::smatch m;
        ASSERT_TRUE(std::regex_match(got[static_cast<size_t>(i)], m, re))
            << got[static_cast<size_t>(i)];
        EXPECT_EQ(m[2].str(), std::to_string(getpid()));
        if (i < 300) {
            EXPECT_EQ(m[1].str(), std::to_string(LOG_MAIL | LOG_INFO));
            EXPECT_EQ(m[3].str(), "decision seq=" + std::to_string(i));
        } else {
            EXPECT_EQ(m[1].str(), std::to_string(LOG_MAIL | LOG_WARNING));
            EXPECT_EQ(m[3].str(), "something odd");
        }
    }
    w->detach();
    uv_run(&loop_, UV_RUN_NOWAIT);
    ::close(rx);
}

TEST_F(LogWriterTest, JournaldGetsNativeFields) {
    std::string path = dir_ + "/journal.sock";
    int rx = bind_datagram(path);
    std::string error;
    auto w = LogWriter::for_socket(LogProtocol::journald, path, LOG_LOCAL3, "cd", error);
    w->attach(&loop_);
    w->write(LogLevel::error, "decision sender=\"a b\"");
    std::vector<std::string> got;
    ASSERT_TRUE(run_until([&] {
        for (auto& d : receive_all(rx)) got.push_back(d);
        return !got.empty();
    }));
    EXPECT_EQ(got[0], "PRIORITY=3\nSYSLOG_FACILITY=19\nSYSLOG_IDENTIFIER=cd\nSYSLOG_PID=" +
                          std::to_string(getpid()) + "\nMESSAGE=decision sender=\"a b\"\n");
    w->detach();
    uv_run(&loop_, UV_RUN_NOWAIT);
    ::close(rx);
}

TEST_F(LogWriterTest, FullSyslogSocketDropsInsteadOfBlocking) {
    std::string path = dir_ + "/log.sock";
    int rx = bind_datagram(path);  // never read until the end
    LogWriterOptions o;
    o.max_pending_bytes = 64 * 1024;
    std::string error;
    auto w = LogWriter::for_socket(LogProtocol::syslog, path, LOG_MAIL, "calloutd", error, o);
    w->attach(&loop_);
    constexpr int kLines = 20000;
    for (int i = 0; i < kLines; ++i) {
        w->write(LogLevel::info, "decision seq=" + std::to_string(i));
        if (i % 100 == 0) uv_run(&loop_, UV_RUN_NOWAIT);
    }
    uint64_t dropped = w->dropped_lines();
    EXPECT_GT(dropped, 0u);
    std::vector<std::string> got;
    ASSERT_TRUE(run_until([&] {
        for (auto& d : receive_all(rx)) got.push_back(d);
        return w->queued_bytes() == 0;
    }));
    w->write(LogLevel::info, "after the gap");
    ASSERT_TRUE(run_until([&] {
        for (auto& d : receive_all(rx)) got.push_back(d);
        return !got.empty() && got.back().ends_with("after the gap");
    }));
    uint64_t received = 0;
    size_t warnings = 0;
    int expect_next = 0;
    for (const auto& d : got) {
        auto at = d.find("]: ");
        std::string m = d.substr(at + 3);
        if (m.starts_with("decision seq=")) {
            int seq = std::stoi(m.substr(13));
            ASSERT_GE(seq, expect_next);
            expect_next = seq + 1;
            ++received;
        } else if (m.starts_with("log-dropped lines=")) {
            ++warnings;
            EXPECT_TRUE(m.starts_with("log-dropped lines=" + std::to_string(dropped) + " ")) << m;
        }
    }
    EXPECT_EQ(warnings, 1u);
    EXPECT_EQ(received + dropped, static_cast<uint64_t>(kLines));
    w->detach();
    uv_run(&loop_, UV_RUN_NOWAIT);
    ::close(rx);
}

TEST_F(LogWriterTest, SyslogDaemonRestartIsFoundAgain) {
    std::string path = dir_ + "/log.sock";
    int rx = bind_datagram(path);
    std::string error;
    auto w = LogWriter::for_socket(LogProtocol::syslog, path, LOG_MAIL, "calloutd", error);
    w->attach(&loop_);
    w->write(LogLevel::info, "before");
    std::vector<std::string> got;
    ASSERT_TRUE(run_until([&] {
        for (auto& d : receive_all(rx)) got.push_back(d);
        return got.size() == 1;
    }));
    // The daemon goes away; lines wait in the queue; a new daemon binds the same path.
    ::close(rx);
    ::unlink(path.c_str());
    w->write(LogLevel::info, "while away");
    run_until([] { return false; }, 100ms);
    rx = bind_datagram(path);
    w->write(LogLevel::info, "back");
    got.clear();
    ASSERT_TRUE(run_until([&] {
        for (auto& d : receive_all(rx)) got.push_back(d);
        return got.size() >= 2;
    }));
    EXPECT_TRUE(got[0].ends_with("]: while away")) << got[0];
    EXPECT_TRUE(got[1].ends_with("]: back")) << got[1];
    EXPECT_EQ(w->dropped_lines(), 0u);
    w->detach();
    uv_run(&loop_, UV_RUN_NOWAIT);
    ::close(rx);
}

TEST_F(LogWriterTest, UnreachableSocketIsReportedAndRetried) {
    std::string path = dir_ + "/nothing.sock";
    std::string error;
    auto w = LogWriter::for_socket(LogProtocol::syslog, path, LOG_MAIL, "calloutd", error);
    EXPECT_NE(error.find("nothing.sock"), std::string::npos) << error;
    w->attach(&loop_);
    w->write(LogLevel::info, "waiting for syslog");
    int rx = bind_datagram(path);
    std::vector<std::string> got;
    ASSERT_TRUE(run_until([&] {
        for (auto& d : receive_all(rx)) got.push_back(d);
        return !got.empty();
    }));
    EXPECT_TRUE(got[0].ends_with("]: waiting for syslog")) << got[0];
    w->detach();
    uv_run(&loop_, UV_RUN_NOWAIT);
    ::close(rx);
}

TEST_F(LogWriterTest, RetiredWriterFinishesItsQueueThenIsDone) {
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    ::fcntl(p[0], F_SETFL, O_NONBLOCK);
    LogWriterOptions o;
    o.flush_delay = std::chrono::hours(1);
    auto w = LogWriter::for_fd(p[1], o);
    w->attach(&loop_);
    w->write(LogLevel::info, "last words");
    w->retire();
    w->write(LogLevel::info, "ignored");
    ASSERT_TRUE(run_until([&] { return w->done(); }));
    auto lines = lines_of(read_available(p[0]));
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(message_of(lines[0]), "info last words");
    ::close(p[0]);
    ::close(p[1]);
}

}  // namespace
}  // namespace calloutd
