// Batched socket I/O through io_uring (see io_batch.hpp).
#include "daemon/io_batch.hpp"

#include <liburing.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "daemon/log.hpp"

namespace calloutd {

namespace {

// The user_data of the cancellation run() sends when an operation did not complete at once.
constexpr uint64_t kCancelTag = ~uint64_t{0};

int flags_of(bool send) {
    return send ? MSG_DONTWAIT | MSG_NOSIGNAL : MSG_DONTWAIT;
}

struct SocketPair {
    int fd[2] = {-1, -1};
    ~SocketPair() {
        for (int f : fd)
            if (f >= 0) ::close(f);
    }
};

}  // namespace

IoBatch::IoBatch(std::unique_ptr<io_uring> ring) : ring_(std::move(ring)) {
    entries_ = ring_->sq.ring_entries;
}

IoBatch::~IoBatch() {
    if (ring_) io_uring_queue_exit(ring_.get());
}

std::unique_ptr<IoBatch> IoBatch::open(unsigned entries, std::string& why) {
    auto ring = std::make_unique<io_uring>();
    if (int rc = io_uring_queue_init(entries, ring.get(), 0); rc < 0) {
        why = std::string("io_uring_queue_init: ") + std::strerror(-rc);
        return nullptr;
    }
    std::unique_ptr<IoBatch> batch(new IoBatch(std::move(ring)));
    io_uring_probe* probe = io_uring_get_probe_ring(batch->ring_.get());
    const bool ops = probe != nullptr && io_uring_opcode_supported(probe, IORING_OP_SEND) &&
                     io_uring_opcode_supported(probe, IORING_OP_RECV) &&
                     io_uring_opcode_supported(probe, IORING_OP_ASYNC_CANCEL);
    if (probe != nullptr) io_uring_free_probe(probe);
    if (!ops) {
        why = "the kernel's io_uring has no socket send/recv";
        return nullptr;
    }
    // What run() relies on, tried on a socket pair: a receive with nothing to read completes
    // at once with -EAGAIN (it does not wait for data), and a send and a receive complete in
    // the system call that submits them. One operation at a time, and without run()'s
    // cancellation: an operation that waits is ended by shutting the pair down.
    SocketPair sp;
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp.fd) != 0) {
        why = std::string("socketpair: ") + std::strerror(errno);
        return nullptr;
    }
    io_uring* r = batch->ring_.get();
    bool waited = false;
    auto once = [&](bool send, int fd, char* buf, size_t len) {
        io_uring_sqe* sqe = io_uring_get_sqe(r);
        if (send)
            io_uring_prep_send(sqe, fd, buf, len, flags_of(true));
        else
            io_uring_prep_recv(sqe, fd, buf, len, flags_of(false));
        if (io_uring_submit(r) != 1) return -EIO;
        io_uring_cqe* cqe = nullptr;
        if (io_uring_peek_cqe(r, &cqe) != 0) {
            waited = true;
            ::shutdown(sp.fd[0], SHUT_RDWR);
            ::shutdown(sp.fd[1], SHUT_RDWR);
            if (io_uring_wait_cqe(r, &cqe) != 0) return -EIO;
        }
        int res = cqe->res;
        io_uring_cqe_seen(r, cqe);
        return res;
    };
    char in[8];
    char out[] = "probe";
    const int empty = once(false, sp.fd[1], in, sizeof in);
    const int sent = waited ? 0 : once(true, sp.fd[0], out, 5);
    const int got = waited ? 0 : once(false, sp.fd[1], in, sizeof in);
    if (waited || empty != -EAGAIN || sent != 5 || got != 5 || std::memcmp(in, out, 5) != 0) {
        why = "nonblocking socket operations do not complete at once";
        return nullptr;
    }
    batch->system_calls_ = batch->operations_ = 0;
    return batch;
}

std::unique_ptr<IoBatch> IoBatch::direct() {
    return std::unique_ptr<IoBatch>(new IoBatch());
}

void IoBatch::add_recv(int fd, char* buf, size_t len) {
    ops_.push_back({fd, false, flags_of(false), buf, len});
}

void IoBatch::add_send(int fd, const char* data, size_t len) {
    // io_uring_prep_send takes a const buffer; the cast only shares Op's one pointer field.
    ops_.push_back({fd, true, flags_of(true), const_cast<char*>(data), len});
}

void IoBatch::add_waiting_recv_for_test(int fd, char* buf, size_t len) {
    ops_.push_back({fd, false, 0, buf, len});
}

ssize_t IoBatch::run_directly(const Op& op) {
    ssize_t n;
    do {
        n = op.send ? ::send(op.fd, op.buf, op.len, op.flags)
                    : ::recv(op.fd, op.buf, op.len, op.flags);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

const std::vector<ssize_t>& IoBatch::run() {
    results_.assign(ops_.size(), -EAGAIN);
    size_t first = 0;
    while (first < ops_.size() && ring_) {
        size_t n = std::min<size_t>(entries_, ops_.size() - first);
        size_t done = run_chunk(first, n);
        first += done;
        if (done < n) {
            // The ring refused operations: it is not used again (closing it drops what it did
            // not take), and the rest is done one system call at a time.
            io_uring_queue_exit(ring_.get());
            ring_.reset();
        }
    }
    for (; first < ops_.size(); ++first) results_[first] = run_directly(ops_[first]);
    ops_.clear();
    return results_;
}

size_t IoBatch::run_chunk(size_t first, size_t n) {
    io_uring* ring = ring_.get();
    for (size_t i = first; i < first + n; ++i) {
        const Op& op = ops_[i];
        io_uring_sqe* sqe = io_uring_get_sqe(ring);  // never null: the ring is empty, n fits
        if (op.send)
            io_uring_prep_send(sqe, op.fd, op.buf, op.len, op.flags);
        else
            io_uring_prep_recv(sqe, op.fd, op.buf, op.len, op.flags);
        io_uring_sqe_set_data64(sqe, i);
    }
    // The kernel takes submissions in order; a transient refusal (-EAGAIN, -ENOMEM) takes
    // nothing and is tried again a few times.
    size_t submitted = 0;
    int rc = 0;
    for (int attempt = 0; attempt < 3 && submitted < n; ++attempt) {
        rc = io_uring_submit(ring);
        ++system_calls_;
        if (rc > 0) submitted += static_cast<size_t>(rc);
    }
    if (submitted < n) {
        // run() closes the ring after this, so this is said once.
        LogLine(LogLevel::warning, "io-uring-failed")
            .field("reason", rc < 0 ? std::string("io_uring_submit: ") + std::strerror(-rc)
                                    : "io_uring_submit took " + std::to_string(submitted) + " of " +
                                          std::to_string(n) + " operations")
            .field("io", "syscalls");
    }
    operations_ += submitted;
    size_t pending = submitted;
    bool cancelled = false;
    while (pending > 0) {
        unsigned head;
        unsigned seen = 0;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(ring, head, cqe) {
            ++seen;
            uint64_t tag = io_uring_cqe_get_data64(cqe);
            if (tag == kCancelTag) continue;
            // A cancelled operation did nothing: for a receive, nothing was read; for a send,
            // nothing was sent (the caller keeps the bytes and waits for writability).
            results_[tag] = cqe->res == -ECANCELED || cqe->res == -EINTR ? -EAGAIN : cqe->res;
            --pending;
        }
        io_uring_cq_advance(ring, seen);
        if (pending == 0) break;
        // Not expected (open() checked it): an operation waits in the kernel. It is cancelled
        // rather than waited for, so the loop is never held by a socket. When the ring also
        // refused submissions, those still sit in it and would go with the cancellation: the
        // caller closes the ring instead, which cancels what waits.
        if (submitted < n) break;
        if (!cancelled) {
            // A cancellation for each of the chunk's operations, by its tag (a 5.5 kernel has
            // that; the cancel-them-all flag needs 5.19); one for an operation that has
            // completed finds nothing (-ENOENT) and is ignored like the others. Never short of
            // entries: the submission queue is empty again and n fits.
            late_ += pending;
            for (size_t i = first; i < first + n; ++i) {
                io_uring_sqe* sqe = io_uring_get_sqe(ring);
                io_uring_prep_cancel64(sqe, i, 0);
                io_uring_sqe_set_data64(sqe, kCancelTag);
            }
            cancelled = true;
        }
        io_uring_submit_and_wait(ring, 1);
        ++system_calls_;
    }
    return submitted;
}

}  // namespace calloutd
