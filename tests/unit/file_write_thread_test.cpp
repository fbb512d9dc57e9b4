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

namespace calloutd {
namespace {

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
            t.submit(batch);
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
    t.submit(batch);
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
        t.submit(batch);
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

TEST_F(FileWriteThreadTest, AStuckWriteHoldsNeitherWaitNorTheDestructor) {
    // A pipe nobody reads stands in for a disk that hangs: the write blocks in the thread.
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    auto t = std::make_unique<FileWriteThread>(p[1]);
    std::string batch(1 << 20, 'y');  // far more than the pipe holds
    t->submit(batch);
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
