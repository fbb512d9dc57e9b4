// Log output that never blocks the event loop: lines are queued and written in batches, each
// destination in the way that cannot stall the loop; past a bound, lines are dropped and counted.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/config.hpp"
#include "daemon/file_write_thread.hpp"

namespace calloutd {

struct LogWriterOptions {
    // Queued bytes (waiting and being written) beyond which new lines are dropped: a blocked
    // destination costs at most this much memory, never a stalled policy answer.
    size_t max_pending_bytes = 4 << 20;
    // A batch is written once this much is queued, or flush_delay after its first line.
    size_t flush_bytes = 64 << 10;
    std::chrono::milliseconds flush_delay{1};
    // How long detach() (shutdown) waits for a blocked destination before giving up.
    std::chrono::milliseconds drain_timeout{1000};
    // A regular file: start the disk write of each MiB at once and drop the cached pages of
    // what lies 4 MiB back (FileWriteThread::submit; log.write_behind).
    bool write_behind = true;
};

// How records are framed for a socket destination.
enum class LogProtocol {
    syslog,    // "<PRI>Mmm dd hh:mm:ss ident[pid]: message", one datagram per line (RFC 3164)
    journald,  // the journal's native protocol: PRIORITY=, SYSLOG_IDENTIFIER=, MESSAGE= fields
};

// Not thread-safe: used from the event loop's thread only.
//
// Unattached, every line is written at once and the call may block (command-line tools, start
// up). Attached to a loop, lines are queued and written at most once per loop iteration; how
// depends on the destination:
// - a regular file: write(2) on a thread of the writer's own (FileWriteThread), one batch at a
//   time, so a slow disk holds that thread, never the loop;
// - a pipe, FIFO or terminal: a private non-blocking descriptor (reopened through /proc, so the
//   flags of a descriptor shared with other processes are left alone) and a writable watcher;
// - a socket (journald's stdout stream, syslog, the journal): MSG_DONTWAIT sends and a writable
//   watcher; datagram sockets get a whole batch in one sendmmsg(2).
// When the queue would pass max_pending_bytes the line is dropped and counted; the first line
// accepted again is preceded by one `log-dropped` warning line with the count.
class LogWriter {
  public:
    // Lines go to `fd` (not owned) as "TIMESTAMP LEVEL MESSAGE\n".
    static std::unique_ptr<LogWriter> for_fd(int fd, LogWriterOptions options = {});
    // Lines go to the datagram socket at `path`. A socket that cannot be reached now is retried
    // (at most once a second) while lines queue up to the bound; `error` says why it failed.
    static std::unique_ptr<LogWriter> for_socket(LogProtocol protocol, const std::string& path,
                                                 int facility, const std::string& ident,
                                                 std::string& error, LogWriterOptions options = {});
    ~LogWriter();
    LogWriter(const LogWriter&) = delete;
    LogWriter& operator=(const LogWriter&) = delete;

    void write(LogLevel level, std::string_view message);
    // Starts batched, non-blocking output on `loop`.
    void attach(uv_loop_t* loop);
    // Writes what is queued, waiting up to drain_timeout for a blocked destination (the rest is
    // dropped and counted), and returns to unattached output. Call outside uv_run(); the
    // writer's handles finish closing on the loop's next run.
    void detach();
    // Starts writing everything queued now (SIGHUP); unattached: writes it, blocking.
    void flush();
    // Stops taking lines and writes the queue in the background (a reload switched the
    // destination); done() tells when it is finished and the writer may be destroyed.
    void retire();
    bool done() const { return open_handles_ == 0 && !fs_busy_; }

    void set_flush_delay(std::chrono::milliseconds delay) { options_.flush_delay = delay; }
    void set_write_behind(bool on) { options_.write_behind = on; }
    uint64_t dropped_lines() const { return dropped_; }
    // Bytes queued or being written.
    size_t queued_bytes() const {
        return pending_.size() + (inflight_.size() - inflight_off_) + (fs_busy_ ? fs_bytes_ : 0);
    }
    // How the destination is written: "blocking", "file", "nonblocking", "socket", "datagram".
    std::string_view mode() const;

  private:
    enum class Mode { blocking, file, nonblocking, socket, datagram };

    explicit LogWriter(LogWriterOptions options);
    void append_record(LogLevel level, std::string_view message);
    bool due() const;
    void schedule();
    void start_write();
    void write_stream();
    void write_datagrams();
    void inflight_done();
    void drop_inflight(int error);
    void stop_polling_and_drop();
    void wait_writable();
    void arm_timer(std::chrono::milliseconds delay);
    bool connect_socket(std::string& error);
    void drain_blocking(std::chrono::steady_clock::time_point deadline);
    void take_pending();
    void close_handles();
    // Mode::file: takes a batch the file thread has finished; false while it is still writing.
    bool reap_file_batch();
    std::chrono::milliseconds file_poll_interval() const;
    // Mode::file: gives up on a batch the thread cannot finish (a hung disk); counted as dropped.
    void abandon_file_batch();
    // Counts lines as lost for `reason`; the next accepted line says so (log-dropped).
    void count_dropped(size_t lines, std::string reason);
    // Loses what is queued and not yet being written (counted).
    void drop_pending();
    static void on_timer(uv_timer_t* t);
    static void on_writable(uv_poll_t* p, int status, int events);
    static void on_closed(uv_handle_t* h);

    LogWriterOptions options_;
    Mode mode_ = Mode::blocking;
    int fd_ = -1;        // the destination as given (or our socket)
    int write_fd_ = -1;  // what attached output writes to: fd_ or a private non-blocking copy
    bool own_write_fd_ = false;
    bool own_fd_ = false;
    // Socket destinations.
    LogProtocol protocol_ = LogProtocol::syslog;
    std::string path_;
    int facility_ = 0;
    std::string ident_;
    std::string pid_;
    std::chrono::steady_clock::time_point next_connect_{};

    // Records waiting, and the batch being written (swapped, so both keep their capacity).
    std::string pending_;
    std::vector<uint32_t> pending_ends_;  // datagram modes: end offset of each record
    std::string inflight_;
    std::vector<uint32_t> inflight_ends_;
    size_t inflight_off_ = 0;
    size_t inflight_record_ = 0;
    size_t pending_lines_ = 0;

    uint64_t dropped_ = 0;
    uint64_t episode_dropped_ = 0;  // dropped since the last line accepted
    std::string drop_reason_;

    uv_loop_t* loop_ = nullptr;
    uv_timer_t timer_;
    uv_poll_t poll_;
    // Mode::file: the thread that writes, and the batch it holds (bytes and lines) while busy.
    std::unique_ptr<FileWriteThread> file_thread_;
    size_t fs_bytes_ = 0;
    size_t fs_lines_ = 0;
    bool timer_armed_ = false;
    bool polling_ = false;
    bool poll_open_ = false;
    bool fs_busy_ = false;
    bool retiring_ = false;
    int open_handles_ = 0;
    std::chrono::steady_clock::time_point retire_deadline_{};
};

}  // namespace calloutd
