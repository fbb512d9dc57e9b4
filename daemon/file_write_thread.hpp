// A thread of its own that writes log batches to a regular file, so that a slow disk holds it
// and never the event loop.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

namespace calloutd {

// Used from one thread (the event loop's); the writing happens on the thread it owns, one batch
// at a time.
//
// libuv's thread pool did this before: every batch took a mutex the worker also took, signalled
// a condition variable, and came back through an eventfd and an extra loop wake-up; with the
// daemon on one CPU each of those was a context switch (about 2 % of a busy daemon's time at a
// batch a millisecond). Here the loop hands a batch over with one atomic store and a FUTEX_WAKE
// and learns that it is done by looking (busy()) when it next wants to write: completion costs
// the loop no system call.
class FileWriteThread {
  public:
    // Writes to fd (not owned; it must stay open while a batch is written). The thread starts
    // here with every signal blocked, so handlers keep running on the loop's thread.
    explicit FileWriteThread(int fd);
    // Stops the thread. A batch still being written (a disk that hangs) is left to finish on
    // its own: the thread is detached and frees what it shares with this object when it ends.
    ~FileWriteThread();
    FileWriteThread(const FileWriteThread&) = delete;
    FileWriteThread& operator=(const FileWriteThread&) = delete;

    // Takes the bytes of `batch` (swapped with an empty string that keeps the capacity of an
    // earlier batch) and writes all of them, continuing partial writes. Only when !busy().
    // With write_behind, the thread then starts the disk write of each MiB once the file has
    // grown by it (sync_file_range, not waiting for it) and drops from the page cache what
    // lies more than kKeepCachedBytes before the end (posix_fadvise DONTNEED; pages the disk
    // does not have yet are asked for again until kRetryBytes later), so the file's footprint
    // in memory stays a few MiB and new pages reuse the ones just freed.
    void submit(std::string& batch, bool write_behind);
    // A batch is being written.
    bool busy() const;
    // Waits up to `timeout` for the batch to be written; true when it is (or none was given).
    bool wait(std::chrono::milliseconds timeout) const;
    // Once !busy(): gives the last batch back (swapped into `batch`, which should be empty) with
    // how many of its bytes were written and the errno of the write that stopped it (0: all
    // written; a write of nothing counts as EIO).
    void take_back(std::string& batch, size_t& written, int& error);

    static constexpr long kWriteOutBytes = 1 << 20;
    static constexpr long kKeepCachedBytes = 4 << 20;
    static constexpr long kRetryBytes = 16 << 20;

  private:
    struct Shared;
    static void run(std::shared_ptr<Shared> shared);
    static void write_out_and_drop(Shared& s, size_t just_written);

    std::shared_ptr<Shared> shared_;
    std::thread thread_;
};

}  // namespace calloutd
