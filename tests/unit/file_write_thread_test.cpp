// FileWriteThread: batches written whole and in order, errors and partial writes reported, and
// a thread stuck in a write never holds up its owner.
#include "daemon/file_write_thread.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "support/page_cache.hpp"

namespace calloutd {
namespace {

using test::cached_share;
using test::page_cache_can_drop;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class FileWriteThreadTest : public ::testing::Test {
  protected:
    void SetUp() override {
        char tmpl[] = "/tmp/calloutd-filewrite-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }

    static std::string slurp(const std::string& path) {
        std::ifstream in(path);
        std::ostringstream s;
        s << in.rdbuf();
        return s.str();
    }

    // Writes `mib` MiB through t in 256 KiB batches, letting the disk catch up after each MiB
    // (write-behind only drops pages the disk already has).
    static void write_mib(FileWriteThread& t, int mib, bool write_behind, bool pause = true) {
        std::string batch;
        for (int i = 0; i < mib * 4; ++i) {
            batch.assign(256 << 10, static_cast<char>('a' + i % 26));
            t.submit(batch, write_behind);
            ASSERT_TRUE(t.wait(10s));
            size_t written = 0;
            int error = -1;
            t.take_back(batch, written, error);
            ASSERT_EQ(error, 0);
            if (pause && i % 4 == 3) std::this_thread::sleep_for(5ms);
        }
    }

    std::string dir_;
};

TEST_F(FileWriteThreadTest, WritesEveryBatchWholeAndInOrder) {
    std::string path = dir_ + "/out.log";
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    std::string expected;
    {
        FileWriteThread t(fd);
        EXPECT_FALSE(t.busy());
        std::string batch;
        for (int b = 0; b < 200; ++b) {
            batch.clear();
            for (int i = 0; i < 50; ++i) batch += "batch " + std::to_string(b) + " line\n";
            expected += batch;
            size_t size = batch.size();
            t.submit(batch, false);
            EXPECT_TRUE(batch.empty());  // the thread has the bytes now
            ASSERT_TRUE(t.wait(10s));
            size_t written = 1;
            int error = -1;
            t.take_back(batch, written, error);
            EXPECT_EQ(written, size);
            EXPECT_EQ(error, 0);
            EXPECT_EQ(batch.size(), size);  // given back whole, for the caller to reuse
        }
    }
    EXPECT_EQ(slurp(path), expected);
    ::close(fd);
}

TEST_F(FileWriteThreadTest, ReportsTheErrorOfAWriteThatFails) {
    std::string path = dir_ + "/ro.log";
    int fd = ::open(path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0644);  // not writable
    ASSERT_GE(fd, 0);
    FileWriteThread t(fd);
    std::string batch = "a line that cannot be written\n";
    t.submit(batch, false);
    ASSERT_TRUE(t.wait(10s));
    size_t written = 1;
    int error = 0;
    t.take_back(batch, written, error);
    EXPECT_EQ(written, 0u);
    EXPECT_EQ(error, EBADF);
    ::close(fd);
}

TEST_F(FileWriteThreadTest, PartialWriteThenFailureSaysHowMuchWasWritten) {
    // A file size limit: the write stops at the limit and the next one fails with EFBIG (the
    // thread blocks SIGXFSZ, so it is an error, not a dead process).
    std::string path = dir_ + "/limited.log";
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    rlimit old{};
    ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
    rlimit small = old;
    small.rlim_cur = 1000;
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
    size_t written = 0;
    int error = 0;
    {
        FileWriteThread t(fd);
        std::string batch(4096, 'x');
        t.submit(batch, false);
        bool done = t.wait(10s);
        ::setrlimit(RLIMIT_FSIZE, &old);
        ASSERT_TRUE(done);
        t.take_back(batch, written, error);
    }
    ::setrlimit(RLIMIT_FSIZE, &old);
    EXPECT_EQ(written, 1000u);
    EXPECT_EQ(error, EFBIG);
    EXPECT_EQ(slurp(path).size(), 1000u);
    ::close(fd);
}

TEST_F(FileWriteThreadTest, WriteBehindKeepsOnlyTheEndOfTheFileInThePageCache) {
    if (!page_cache_can_drop(dir_))
        GTEST_SKIP() << dir_ << " is on tmpfs, whose pages are the file";
    std::string path = dir_ + "/behind.log";
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    {
        FileWriteThread t(fd);
        write_mib(t, 24, true);
    }
    EXPECT_EQ(::lseek(fd, 0, SEEK_END), 24 << 20);
    // Everything but the last 4 MiB (and the MiB being written out) is gone from memory; the
    // end, which tail -f reads, is still there.
    double early = cached_share(fd, 18 << 20);
    EXPECT_GE(early, 0.0);
    EXPECT_LT(early, 0.25);
    ::close(fd);

    // The same without write-behind: the file stays cached (the measurement can see pages).
    std::string kept = dir_ + "/kept.log";
    fd = ::open(kept.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    {
        FileWriteThread t(fd);
        write_mib(t, 24, false);
    }
    EXPECT_GT(cached_share(fd, 18 << 20), 0.9);
    ::close(fd);
}

TEST_F(FileWriteThreadTest, WriteBehindAsksAgainForPagesTheDiskDidNotHaveYet) {
    // Written as fast as the thread can: most pages are still dirty or on their way to the
    // disk when their range is first dropped. Once the disk has caught up, the later batches
    // drop them.
    if (!page_cache_can_drop(dir_))
        GTEST_SKIP() << dir_ << " is on tmpfs, whose pages are the file";
    std::string path = dir_ + "/fast.log";
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    {
        FileWriteThread t(fd);
        write_mib(t, 12, true, false);
        ASSERT_EQ(::fdatasync(fd), 0);  // the disk has everything written so far
        write_mib(t, 8, true);
    }
    EXPECT_LT(cached_share(fd, 12 << 20), 0.1);
    ::close(fd);
}

TEST_F(FileWriteThreadTest, WriteBehindFollowsAFileTruncatedUnderIt) {
    // logrotate's copytruncate: the file starts again at 0 while the descriptor stays open.
    if (!page_cache_can_drop(dir_))
        GTEST_SKIP() << dir_ << " is on tmpfs, whose pages are the file";
    std::string path = dir_ + "/rotated.log";
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    FileWriteThread t(fd);
    write_mib(t, 12, true);
    ASSERT_EQ(::ftruncate(fd, 0), 0);
    write_mib(t, 12, true);
    EXPECT_EQ(::lseek(fd, 0, SEEK_END), 12 << 20);
    // Write-behind started again from the new beginning (looked at before reading the file
    // brings its pages back).
    EXPECT_LT(cached_share(fd, 6 << 20), 0.25);
    std::string content = slurp(path);
    ASSERT_EQ(content.size(), 12u << 20);
    EXPECT_EQ(content.front(), 'a');  // the first batch after the truncation, at 0
    EXPECT_EQ(content[(256 << 10) * 5], 'f');
    ::close(fd);
}

TEST_F(FileWriteThreadTest, AStuckWriteHoldsNeitherWaitNorTheDestructor) {
    // A pipe nobody reads stands in for a disk that hangs: the write blocks in the thread.
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    auto t = std::make_unique<FileWriteThread>(p[1]);
    std::string batch(1 << 20, 'y');  // far more than the pipe holds
    t->submit(batch, false);
    auto start = Clock::now();
    EXPECT_FALSE(t->wait(200ms));
    auto took = Clock::now() - start;
    EXPECT_GE(took, 150ms);
    EXPECT_LT(took, 5s);
    EXPECT_TRUE(t->busy());
    start = Clock::now();
    t.reset();  // detaches the stuck thread instead of waiting for it
    EXPECT_LT(Clock::now() - start, 1s);
    // Unblock it: with the read end closed its write fails (SIGPIPE is blocked in the thread)
    // and it ends on its own; a crash or a hang here would fail the test binary.
    ::close(p[0]);
    std::this_thread::sleep_for(50ms);
    ::close(p[1]);
}

}  // namespace
}  // namespace calloutd
