// Batched socket I/O: many nonblocking recv(2)/send(2) calls made with one system call.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

struct io_uring;

namespace calloutd {

// A list of nonblocking receives and sends on sockets, run together through io_uring: one
// io_uring_enter(2) does what would otherwise be one recv(2) or send(2) per socket. Every
// operation carries MSG_DONTWAIT, so none waits in the kernel: each completes (with its bytes,
// or -EAGAIN) before run() returns, and the buffers need to live only until then. io_uring is
// used as a batch of system calls, not as an event loop; libuv still says which sockets are
// ready.
//
// Why: on a virtual machine a system call's entry and exit can cost microseconds (2.2 us for
// getppid(2) on the 2-core PVM guest of bench/README.md), more than the rest of a cached answer.
class IoBatch {
  public:
    // A ring of `entries` operations per system call, or null with the reason in `why` when
    // the kernel has no io_uring, refuses it (kernel.io_uring_disabled, a seccomp filter), or
    // does not complete nonblocking socket operations at once (checked on a socket pair).
    static std::unique_ptr<IoBatch> open(unsigned entries, std::string& why);
    // A batch without a ring: one recv(2)/send(2) per operation, what open()'s batch falls
    // back to when its ring fails (for tests of that path).
    static std::unique_ptr<IoBatch> direct();
    ~IoBatch();
    IoBatch(const IoBatch&) = delete;
    IoBatch& operator=(const IoBatch&) = delete;

    // Adds an operation; results come back in the order of adding. The buffer must stay valid
    // until run() returns.
    void add_recv(int fd, char* buf, size_t len);
    void add_send(int fd, const char* data, size_t len);
    size_t size() const { return ops_.size(); }
    // For tests of run()'s guard: a receive without MSG_DONTWAIT, which waits in the kernel
    // when nothing has arrived (only through a ring: without one it would block).
    void add_waiting_recv_for_test(int fd, char* buf, size_t len);

    // Runs every operation added and forgets them: result i is the bytes received or sent by
    // operation i, 0 for end of stream, or -errno (-EAGAIN: nothing to read or no room).
    // Never fails as a whole: what the ring cannot take is done with recv(2)/send(2).
    const std::vector<ssize_t>& run();

    // Since open(): io_uring_enter(2) calls made by run(), and operations done through them.
    uint64_t system_calls() const { return system_calls_; }
    uint64_t operations() const { return operations_; }
    // Operations that did not complete at once (cancelled, and waited for); should stay 0.
    uint64_t late_completions() const { return late_; }
    // False once the ring has refused submissions (logged as io-uring-failed) and run() works
    // without it.
    bool uses_ring() const { return ring_ != nullptr; }

  private:
    struct Op {
        int fd;
        bool send;
        int flags;  // MSG_DONTWAIT, and MSG_NOSIGNAL for a send
        char* buf;
        size_t len;
    };
    explicit IoBatch(std::unique_ptr<io_uring> ring);
    IoBatch() = default;
    // Ops [first, first + n), n at most the ring's size, through the ring; returns how many
    // of them it did (fewer: the ring refused the rest).
    size_t run_chunk(size_t first, size_t n);
    static ssize_t run_directly(const Op& op);

    std::unique_ptr<io_uring> ring_;
    unsigned entries_ = 0;
    std::vector<Op> ops_;
    std::vector<ssize_t> results_;
    uint64_t system_calls_ = 0;
    uint64_t operations_ = 0;
    uint64_t late_ = 0;
};

}  // namespace calloutd
