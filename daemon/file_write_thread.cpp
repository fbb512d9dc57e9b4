// The log file's writing thread: a futex-published batch, written in full, completion seen by
// looking.
#include "daemon/file_write_thread.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>

namespace calloutd {

namespace {

constexpr uint32_t kIdle = 0;       // no batch, or the last one is written
constexpr uint32_t kSubmitted = 1;  // the thread owns the batch
constexpr uint32_t kStop = 2;       // the thread ends when it sees this

// Sleeps while *word == expected (or until timeout); spurious returns are fine for callers.
void futex_wait(std::atomic<uint32_t>* word, uint32_t expected, const timespec* timeout) {
    ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, timeout,
              nullptr, 0);
}

void futex_wake(std::atomic<uint32_t>* word) {
    ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr,
              0);
}

}  // namespace

// What the loop and the thread share. The batch and the results are plain fields: the batch is
// written before state becomes kSubmitted (release) and read by the thread after it saw that
// (acquire); the results the other way round with kIdle.
struct FileWriteThread::Shared {
    int fd = -1;
    std::string batch;
    size_t written = 0;
    int error = 0;
    bool write_behind = false;
    std::atomic<uint32_t> state{kIdle};
    // The loop sleeping in wait(): only then does the thread make a FUTEX_WAKE when done.
    std::atomic<uint32_t> waiters{0};
    // The thread's own: where the disk write was last started (-1: not yet known; -2: the file
    // refuses) and where our part of the file begins (what was there before is not ours to
    // drop).
    off_t written_out = -1;
    off_t ours_from = 0;
};

// After a batch of just_written bytes: the descriptor's offset is the end of the file (an
// O_APPEND write leaves it there; so does ours on a file nobody truncates).
void FileWriteThread::write_out_and_drop(Shared& s, size_t just_written) {
    // Whole pages only: fadvise leaves a partly covered page, which the next range would start
    // inside and leave again.
    static const off_t kPageMask = ~static_cast<off_t>(::sysconf(_SC_PAGESIZE) - 1);
    if (s.written_out == -2) return;
    off_t end = ::lseek(s.fd, 0, SEEK_CUR);
    if (end < 0) {
        s.written_out = -2;
        return;
    }
    // The first batch, or the file was truncated under us (logrotate's copytruncate): what was
    // there before is not ours to drop.
    if (s.written_out < 0 || end < s.written_out) {
        off_t start = end - static_cast<off_t>(just_written);
        s.written_out = s.ours_from = start < 0 ? 0 : start & kPageMask;
    }
    if (end - s.written_out < kWriteOutBytes) return;
    if (::sync_file_range(s.fd, s.written_out, end - s.written_out, SYNC_FILE_RANGE_WRITE) != 0) {
        s.written_out = -2;
        return;
    }
    s.written_out = end;
    // DONTNEED skips pages that are still dirty or being written out, so each range is asked
    // again until it lies kRetryBytes behind: a disk slower for a while than the log gets
    // that long to catch up. Pages already dropped cost the walk almost nothing.
    off_t keep_from = (end - kKeepCachedBytes) & kPageMask;
    off_t from = std::max(s.ours_from, keep_from - kRetryBytes);
    if (keep_from > from) ::posix_fadvise(s.fd, from, keep_from - from, POSIX_FADV_DONTNEED);
}

// glibc's pthread_sigmask never blocks the signals it uses itself (set*id across threads).
FileWriteThread::FileWriteThread(int fd) : shared_(std::make_shared<Shared>()) {
    shared_->fd = fd;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    thread_ = std::thread(run, shared_);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

FileWriteThread::~FileWriteThread() {
    std::atomic<uint32_t>& state = shared_->state;
    for (;;) {
        uint32_t seen = kIdle;
        if (state.compare_exchange_strong(seen, kStop)) {
            futex_wake(&state);
            thread_.join();
            return;
        }
        // Still writing (a hung disk): the thread ends once that batch is done, or with the
        // process; the batch and the rest of Shared are its own by then.
        if (seen == kSubmitted && state.compare_exchange_strong(seen, kStop)) {
            thread_.detach();
            return;
        }
    }
}

void FileWriteThread::submit(std::string& batch, bool write_behind) {
    Shared& s = *shared_;
    s.batch.swap(batch);
    s.write_behind = write_behind;
    s.written = 0;
    s.error = 0;
    s.state.store(kSubmitted, std::memory_order_release);
    futex_wake(&s.state);
}

bool FileWriteThread::busy() const {
    return shared_->state.load(std::memory_order_acquire) == kSubmitted;
}

bool FileWriteThread::wait(std::chrono::milliseconds timeout) const {
    Shared& s = *shared_;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    s.waiters.fetch_add(1);  // seq_cst: either the thread sees us or we see its kIdle
    while (s.state.load() == kSubmitted) {
        auto left = deadline - std::chrono::steady_clock::now();
        if (left <= std::chrono::steady_clock::duration::zero()) break;
        auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
        timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
        futex_wait(&s.state, kSubmitted, &ts);
    }
    s.waiters.fetch_sub(1);
    return !busy();
}

void FileWriteThread::take_back(std::string& batch, size_t& written, int& error) {
    Shared& s = *shared_;
    batch.swap(s.batch);
    written = s.written;
    error = s.error;
}

void FileWriteThread::run(std::shared_ptr<Shared> shared) {
    pthread_setname_np(pthread_self(), "calloutd-log");  // as top -H and ps -L show it
    Shared& s = *shared;
    for (;;) {
        uint32_t state = s.state.load(std::memory_order_acquire);
        if (state == kStop) return;
        if (state == kIdle) {
            futex_wait(&s.state, kIdle, nullptr);
            continue;
        }
        size_t off = 0;
        int error = 0;
        while (off < s.batch.size()) {
            ssize_t n = ::write(s.fd, s.batch.data() + off, s.batch.size() - off);
            if (n > 0) {
                off += static_cast<size_t>(n);
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            error = n < 0 ? errno : EIO;  // a write of nothing: a full disk says so this way
            break;
        }
        s.written = off;
        s.error = error;
        if (s.write_behind && off > 0) write_out_and_drop(s, off);
        uint32_t submitted = kSubmitted;
        // kStop may have replaced kSubmitted (the owner went away): then end here.
        if (!s.state.compare_exchange_strong(submitted, kIdle)) return;
        if (s.waiters.load() > 0) futex_wake(&s.state);
    }
}

}  // namespace calloutd
