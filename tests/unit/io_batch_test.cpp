// IoBatch on socket pairs: results in order, end of stream, -EAGAIN, errors, short sends, more
// operations than the ring holds; and the same results without io_uring.
#include "daemon/io_batch.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

namespace calloutd {
namespace {

struct Pair {
    int fd[2] = {-1, -1};
    Pair() { EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd), 0); }
    ~Pair() {
        for (int f : fd)
            if (f >= 0) ::close(f);
    }
    void close_end(int i) {
        ::close(fd[i]);
        fd[i] = -1;
    }
};

std::unique_ptr<IoBatch> open_ring() {
    std::string why;
    auto batch = IoBatch::open(8, why);
    if (!batch) {
        ADD_FAILURE() << "io_uring unavailable here: " << why;
        return nullptr;
    }
    EXPECT_TRUE(why.empty());
    return batch;
}

TEST(IoBatch, ReceivesAndSendsOfManySocketsInOneSystemCall) {
    auto batch = open_ring();
    ASSERT_TRUE(batch);
    std::vector<Pair> pairs(5);
    // Three sockets have bytes waiting, one is empty, one's peer has gone.
    for (int i = 0; i < 3; ++i) {
        std::string msg = "request " + std::to_string(i);
        ASSERT_EQ(::send(pairs[i].fd[0], msg.data(), msg.size(), 0), ssize_t(msg.size()));
    }
    pairs[4].close_end(0);
    std::vector<std::string> bufs(5, std::string(64, '\0'));
    for (int i = 0; i < 5; ++i) batch->add_recv(pairs[i].fd[1], bufs[i].data(), bufs[i].size());
    EXPECT_EQ(batch->size(), 5u);
    std::vector<ssize_t> got = batch->run();
    EXPECT_EQ(batch->size(), 0u);
    ASSERT_EQ(got.size(), 5u);
    for (int i = 0; i < 3; ++i) {
        std::string msg = "request " + std::to_string(i);
        ASSERT_EQ(got[i], ssize_t(msg.size())) << i;
        EXPECT_EQ(bufs[i].substr(0, msg.size()), msg);
    }
    EXPECT_EQ(got[3], -EAGAIN);  // nothing to read: answered at once, not waited for
    EXPECT_EQ(got[4], 0);        // end of stream
    EXPECT_EQ(batch->system_calls(), 1u);
    EXPECT_EQ(batch->operations(), 5u);
    EXPECT_EQ(batch->late_completions(), 0u);

    // Sends, in the order added; one to a peer that has gone is an error, not a SIGPIPE.
    batch->add_send(pairs[0].fd[1], "one", 3);
    batch->add_send(pairs[1].fd[1], "two", 3);
    batch->add_send(pairs[4].fd[1], "gone", 4);
    got = batch->run();
    ASSERT_EQ(got.size(), 3u);
    EXPECT_EQ(got[0], 3);
    EXPECT_EQ(got[1], 3);
    EXPECT_EQ(got[2], -EPIPE);
    char back[8] = {};
    ASSERT_EQ(::recv(pairs[1].fd[0], back, sizeof back, 0), 3);
    EXPECT_EQ(std::string(back, 3), "two");
    EXPECT_EQ(batch->system_calls(), 2u);
}

TEST(IoBatch, AnOperationThatWaitsIsCancelledNotWaitedFor) {
    // Not expected of MSG_DONTWAIT operations (open() checks), but if one ever waits in the
    // kernel run() must not hold the loop: it is cancelled by its own tag and reported as
    // -EAGAIN, and it reads nothing that arrives later; the others in the batch complete as
    // usual.
    auto batch = open_ring();
    ASSERT_TRUE(batch);
    constexpr int kWaiting = 6;
    std::vector<Pair> idle(kWaiting);
    Pair ready;
    ASSERT_EQ(::send(ready.fd[0], "here", 4, 0), 4);
    std::vector<std::string> bufs(kWaiting + 1, std::string(16, '\0'));
    for (int i = 0; i < kWaiting; ++i) {
        batch->add_waiting_recv_for_test(idle[i].fd[1], bufs[i].data(), bufs[i].size());
    }
    batch->add_recv(ready.fd[1], bufs[kWaiting].data(), bufs[kWaiting].size());
    std::vector<ssize_t> got = batch->run();
    ASSERT_EQ(got.size(), static_cast<size_t>(kWaiting + 1));
    for (int i = 0; i < kWaiting; ++i) EXPECT_EQ(got[i], -EAGAIN) << i;
    EXPECT_EQ(got[kWaiting], 4);
    EXPECT_EQ(bufs[kWaiting].substr(0, 4), "here");
    EXPECT_EQ(batch->late_completions(), static_cast<uint64_t>(kWaiting));

    // What arrives afterwards is still in the socket for the next receive.
    ASSERT_EQ(::send(idle[0].fd[0], "later", 5, 0), 5);
    char back[8] = {};
    ASSERT_EQ(::recv(idle[0].fd[1], back, sizeof back, MSG_DONTWAIT), 5);
    EXPECT_EQ(std::string(back, 5), "later");
    // And the ring is in order for the next batch.
    batch->add_recv(idle[1].fd[1], bufs[1].data(), bufs[1].size());
    got = batch->run();
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0], -EAGAIN);
}

TEST(IoBatch, ASendToAFullSocketTakesWhatFitsAndSaysSo) {
    auto batch = open_ring();
    ASSERT_TRUE(batch);
    Pair p;
    int small = 4096;
    ASSERT_EQ(::setsockopt(p.fd[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    std::string big(1 << 20, 'x');
    batch->add_send(p.fd[0], big.data(), big.size());
    std::vector<ssize_t> got = batch->run();
    ASSERT_EQ(got.size(), 1u);
    ASSERT_GT(got[0], 0);
    EXPECT_LT(got[0], ssize_t(big.size()));  // partial, at once: the loop is never held
    // Nothing fits any more: -EAGAIN, at once.
    batch->add_send(p.fd[0], big.data(), big.size());
    got = batch->run();
    EXPECT_EQ(got[0], -EAGAIN);
    EXPECT_EQ(batch->late_completions(), 0u);
}

TEST(IoBatch, MoreOperationsThanTheRingHoldsAreRunInTurns) {
    auto batch = open_ring();
    ASSERT_TRUE(batch);  // a ring of 8
    std::vector<Pair> pairs(30);
    std::vector<std::string> bufs(30, std::string(16, '\0'));
    for (size_t i = 0; i < pairs.size(); ++i) {
        std::string msg = std::to_string(i);
        ASSERT_EQ(::send(pairs[i].fd[0], msg.data(), msg.size(), 0), ssize_t(msg.size()));
        batch->add_recv(pairs[i].fd[1], bufs[i].data(), bufs[i].size());
    }
    std::vector<ssize_t> got = batch->run();
    ASSERT_EQ(got.size(), pairs.size());
    for (size_t i = 0; i < pairs.size(); ++i) {
        std::string msg = std::to_string(i);
        ASSERT_EQ(got[i], ssize_t(msg.size())) << i;
        EXPECT_EQ(bufs[i].substr(0, msg.size()), msg) << i;
    }
    EXPECT_EQ(batch->system_calls(), 4u);  // 8 + 8 + 8 + 6
    EXPECT_EQ(batch->operations(), 30u);
}

TEST(IoBatch, ABadDescriptorIsThatOperationsErrorOnly) {
    auto batch = open_ring();
    ASSERT_TRUE(batch);
    Pair p;
    ASSERT_EQ(::send(p.fd[0], "x", 1, 0), 1);
    char buf[4];
    char other[4];
    batch->add_recv(-1, other, sizeof other);
    batch->add_recv(p.fd[1], buf, sizeof buf);
    std::vector<ssize_t> got = batch->run();
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0], -EBADF);
    EXPECT_EQ(got[1], 1);
}

// The fallback (a ring that failed, or none): the same results, one system call each.
TEST(IoBatch, WithoutARingTheResultsAreTheSame) {
    auto ring = open_ring();
    ASSERT_TRUE(ring);
    auto direct = IoBatch::direct();
    for (IoBatch* batch : {ring.get(), direct.get()}) {
        std::vector<Pair> pairs(4);
        ASSERT_EQ(::send(pairs[0].fd[0], "abc", 3, 0), 3);
        pairs[2].close_end(0);
        pairs[3].close_end(0);
        char bufs[3][8];
        for (int i = 0; i < 3; ++i) batch->add_recv(pairs[i].fd[1], bufs[i], sizeof bufs[i]);
        batch->add_send(pairs[3].fd[1], "x", 1);
        batch->add_send(pairs[1].fd[1], "yz", 2);
        std::vector<ssize_t> got = batch->run();
        EXPECT_EQ(got, (std::vector<ssize_t>{3, -EAGAIN, 0, -EPIPE, 2}))
            << (batch == direct.get() ? "direct" : "ring");
        EXPECT_EQ(std::string(bufs[0], 3), "abc");
        char back[4];
        EXPECT_EQ(::recv(pairs[1].fd[0], back, sizeof back, 0), 2);
    }
    EXPECT_EQ(direct->system_calls(), 0u);  // counts io_uring_enter(2) only
    EXPECT_EQ(ring->system_calls(), 1u);
}

}  // namespace
}  // namespace calloutd
