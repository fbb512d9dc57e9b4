// Batched, non-blocking log output: queue, flush policy, per-destination writing, drop counting.
// Over 500 lines as one concept: one writer; queue, flush policy and the three destinations share
// the one rule that the loop never blocks and every dropped line is counted.
#include "daemon/log_writer.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "daemon/config_values.hpp"
#include "util/panic.hpp"

namespace calloutd {

namespace {

using SteadyClock = std::chrono::steady_clock;

// A destination that refused a connection is asked again at most this often.
constexpr auto kReconnectInterval = std::chrono::seconds(1);
// A retired writer (the destination changed on reload) gives its queue this long.
constexpr auto kRetireTimeout = std::chrono::seconds(5);
// Records per sendmmsg(2) call.
constexpr size_t kDatagramBatch = 64;
// Room kept for the framing of one record beyond the message itself.
constexpr size_t kRecordOverhead = 128;

int syslog_severity(LogLevel l) {
    switch (l) {
        case LogLevel::debug:
            return 7;
        case LogLevel::info:
            return 6;
        case LogLevel::notice:
            return 5;
        case LogLevel::warning:
            return 4;
        case LogLevel::error:
            return 3;
    }
    return 6;
}

void append_number(std::string& out, long long v) {
    char buf[24];
    int n = std::snprintf(buf, sizeof buf, "%lld", v);
    out.append(buf, static_cast<size_t>(n));
}

// "Mmm dd hh:mm:ss " in local time, as syslog(3) writes it; formatted once a second.
void append_syslog_timestamp(std::string& out) {
    static time_t cached_second = -1;
    static char cached[20];
    static size_t cached_len = 0;
    time_t now = time(nullptr);
    if (now != cached_second) {
        struct tm tm;
        localtime_r(&now, &tm);
        cached_len = strftime(cached, sizeof cached, "%b %e %H:%M:%S ", &tm);
        cached_second = now;
    }
    out.append(cached, cached_len);
}

size_t count_lines(std::string_view text) {
    return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

// Journal field values must not hold a newline (that would need the binary framing): the
// identifier comes from the configuration, so replace anything odd.
std::string sanitized_ident(const std::string& ident) {
    std::string out = ident.empty() ? std::string("calloutd") : ident;
    for (char& c : out) {
        auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f || c == ' ' || c == ':' || c == '[') c = '_';
    }
    return out;
}

}  // namespace

namespace {
constexpr size_t kTimestampBytes = 26;  // "YYYY-mm-ddTHH:MM:SS.mmmZ "

// Writes the timestamp and its trailing space at out (kTimestampBytes). The date and time to
// the second are formatted once a second, the milliseconds each time.
void write_utc_timestamp(char* out) {
    static long long cached_second = -1;
    static char cached[21];  // "YYYY-mm-ddTHH:MM:SS." and strftime's terminator
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long second = ts.tv_sec;
    if (second != cached_second) {
        time_t t = static_cast<time_t>(second);
        struct tm tm;
        gmtime_r(&t, &tm);
        if (strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S.", &tm) != sizeof cached - 1) {
            // A year past 9999 (or before 1000): never a torn line, just an honest placeholder.
            std::memcpy(cached, "0000-00-00T00:00:00.", sizeof cached);
        }
        cached_second = second;
    }
    std::memcpy(out, cached, sizeof cached - 1);
    auto ms = static_cast<unsigned>(ts.tv_nsec / 1000000);
    out[20] = static_cast<char>('0' + ms / 100);
    out[21] = static_cast<char>('0' + ms / 10 % 10);
    out[22] = static_cast<char>('0' + ms % 10);
    out[23] = 'Z';
    out[24] = ' ';
}
}  // namespace

LogWriter::LogWriter(LogWriterOptions options) : options_(options) {}

LogWriter::~LogWriter() {
    // A handle still active (not even closing) would be freed under libuv's feet. Closing ones
    // are fine once the loop will not run again (process exit, or a loop closed by uv_walk).
    if (open_handles_ > 0 && !uv_is_closing(reinterpret_cast<uv_handle_t*>(&timer_))) {
        panic("LogWriter::~LogWriter",
              "destroyed with " + std::to_string(open_handles_) + " handles open");
    }
    if (own_write_fd_) ::close(write_fd_);
    if (own_fd_) ::close(fd_);
}

std::unique_ptr<LogWriter> LogWriter::for_fd(int fd, LogWriterOptions options) {
    std::unique_ptr<LogWriter> w(new LogWriter(options));
    w->fd_ = fd;
    w->write_fd_ = fd;
    w->mode_ = Mode::blocking;
    return w;
}

std::unique_ptr<LogWriter> LogWriter::for_socket(LogProtocol protocol, const std::string& path,
                                                 int facility, const std::string& ident,
                                                 std::string& error, LogWriterOptions options) {
    std::unique_ptr<LogWriter> w(new LogWriter(options));
    w->mode_ = Mode::datagram;
    w->protocol_ = protocol;
    w->path_ = path;
    w->facility_ = facility;
    w->ident_ = sanitized_ident(ident);
    w->pid_ = std::to_string(getpid());
    w->fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (w->fd_ < 0) {
        error = std::string("socket: ") + std::strerror(errno);
    } else {
        w->own_fd_ = true;
        w->write_fd_ = w->fd_;
        w->connect_socket(error);
    }
    return w;
}

bool LogWriter::connect_socket(std::string& error) {
    next_connect_ = SteadyClock::now() + kReconnectInterval;
    if (fd_ < 0) return false;
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    if (path_.size() >= sizeof sun.sun_path) {
        error = "socket path too long: " + path_;
        return false;
    }
    std::memcpy(sun.sun_path, path_.c_str(), path_.size() + 1);
    // A datagram socket may connect again: that is how a restarted syslog daemon is found.
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0) {
        error = path_ + ": " + std::strerror(errno);
        return false;
    }
    return true;
}

std::string_view LogWriter::mode() const {
    switch (mode_) {
        case Mode::blocking:
            return "blocking";
        case Mode::file:
            return "file";
        case Mode::nonblocking:
            return "nonblocking";
        case Mode::socket:
            return "socket";
        case Mode::datagram:
            return "datagram";
    }
    return "blocking";
}

void LogWriter::append_record(LogLevel level, std::string_view message) {
    if (mode_ != Mode::datagram) {
        // "TIMESTAMP LEVEL " formatted on the stack, then two appends: every decision line
        // passes here.
        std::string_view name = to_string(level);
        char prefix[kTimestampBytes + 16];
        write_utc_timestamp(prefix);
        size_t n = kTimestampBytes - 1;
        if (name.size() < sizeof prefix - n) {
            std::memcpy(prefix + n, name.data(), name.size());
            n += name.size();
            prefix[n++] = ' ';
        }
        pending_.append(prefix, n).append(message) += '\n';
        ++pending_lines_;
        return;
    }
    if (protocol_ == LogProtocol::syslog) {
        pending_ += '<';
        append_number(pending_, facility_ | syslog_severity(level));
        pending_ += '>';
        append_syslog_timestamp(pending_);
        pending_ += ident_;
        pending_ += '[';
        pending_ += pid_;
        pending_ += "]: ";
        pending_ += message;
    } else {
        pending_ += "PRIORITY=";
        append_number(pending_, syslog_severity(level));
        pending_ += "\nSYSLOG_FACILITY=";
        append_number(pending_, facility_ >> 3);
        pending_ += "\nSYSLOG_IDENTIFIER=";
        pending_ += ident_;
        pending_ += "\nSYSLOG_PID=";
        pending_ += pid_;
        pending_ += "\nMESSAGE=";
        pending_ += message;
        pending_ += '\n';
    }
    pending_ends_.push_back(static_cast<uint32_t>(pending_.size()));
    ++pending_lines_;
}

void LogWriter::write(LogLevel level, std::string_view message) {
    if (retiring_) return;
    if (loop_ == nullptr) {
        append_record(level, message);
        drain_blocking(SteadyClock::now() + options_.drain_timeout);
        return;
    }
    if (queued_bytes() + message.size() + kRecordOverhead > options_.max_pending_bytes) {
        ++dropped_;
        ++episode_dropped_;
        if (drop_reason_.empty()) drop_reason_ = "queue full: the log destination is too slow";
        return;
    }
    if (episode_dropped_ > 0) {
        // One line per episode, where the gap is: how many lines are missing and why.
        std::string text = "log-dropped lines=" + std::to_string(episode_dropped_) + " reason=\"" +
                           drop_reason_ +
                           "\" effect=\"lines were dropped rather than delay policy answers\"";
        episode_dropped_ = 0;
        drop_reason_.clear();
        append_record(LogLevel::warning, text);
    }
    append_record(level, message);
    schedule();
}

bool LogWriter::due() const {
    return pending_.size() >= options_.flush_bytes;
}

void LogWriter::schedule() {
    if (fs_busy_) reap_file_batch();
    bool writing = !inflight_.empty() || fs_busy_;
    if (!writing && due()) {
        start_write();
        return;
    }
    if (!timer_armed_) arm_timer(options_.flush_delay);
}

void LogWriter::arm_timer(std::chrono::milliseconds delay) {
    if (loop_ == nullptr || uv_is_closing(reinterpret_cast<uv_handle_t*>(&timer_))) return;
    // 0 ms: the timer phase of the next loop iteration.
    timer_armed_ = true;
    uv_timer_start(&timer_, on_timer, static_cast<uint64_t>(std::max<long long>(delay.count(), 0)),
                   0);
}

// Writability is watched where libuv can poll the descriptor; elsewhere a timer retries.
void LogWriter::wait_writable() {
    if (loop_ == nullptr) return;  // drain_blocking() waits in poll(2) itself
    if (poll_open_) {
        polling_ = true;
        uv_poll_start(&poll_, UV_WRITABLE, on_writable);
    } else if (!timer_armed_) {
        arm_timer(std::chrono::milliseconds(10));
    }
}

void LogWriter::on_timer(uv_timer_t* t) {
    auto* self = static_cast<LogWriter*>(t->data);
    self->timer_armed_ = false;
    if (self->retiring_ && SteadyClock::now() >= self->retire_deadline_) {
        // The old destination had its chance; what it did not take is lost and counted.
        self->stop_polling_and_drop();
        return;
    }
    if (self->fs_busy_ && !self->reap_file_batch()) {
        // The file thread is still writing: look again soon.
        self->arm_timer(self->file_poll_interval());
    } else if (self->inflight_.empty()) {
        self->start_write();
    } else if (!self->polling_ && !self->fs_busy_) {
        // A blocked destination without a watcher, or an unreachable socket: try again.
        if (self->mode_ == Mode::datagram) {
            self->write_datagrams();
        } else {
            self->write_stream();
        }
    }
    if (self->retiring_ && self->open_handles_ > 0 && !self->timer_armed_) {
        self->arm_timer(std::chrono::duration_cast<std::chrono::milliseconds>(
            self->retire_deadline_ - SteadyClock::now()));
    }
}

// The pending batch becomes the one in flight (buffers swapped, capacity kept).
void LogWriter::take_pending() {
    inflight_.swap(pending_);
    inflight_ends_.swap(pending_ends_);
    pending_.clear();
    pending_ends_.clear();
    pending_lines_ = 0;
    inflight_off_ = 0;
    inflight_record_ = 0;
}

void LogWriter::start_write() {
    if (fs_busy_) reap_file_batch();
    if (!inflight_.empty() || fs_busy_ || pending_.empty()) return;
    if (timer_armed_) {
        uv_timer_stop(&timer_);
        timer_armed_ = false;
    }
    size_t lines = pending_lines_;
    take_pending();
    switch (mode_) {
        case Mode::file:
            // The thread takes the batch (inflight_ gets an empty buffer back) and the timer
            // looks for its completion.
            fs_busy_ = true;
            fs_bytes_ = inflight_.size();
            fs_lines_ = lines;
            file_thread_->submit(inflight_, options_.write_behind);
            arm_timer(file_poll_interval());
            return;
        case Mode::datagram:
            write_datagrams();
            return;
        case Mode::blocking:
        case Mode::nonblocking:
        case Mode::socket:
            write_stream();
            return;
    }
}

void LogWriter::write_stream() {
    while (inflight_off_ < inflight_.size()) {
        const char* p = inflight_.data() + inflight_off_;
        size_t len = inflight_.size() - inflight_off_;
        ssize_t n = mode_ == Mode::socket ? ::send(write_fd_, p, len, MSG_DONTWAIT | MSG_NOSIGNAL)
                                          : ::write(write_fd_, p, len);
        if (n > 0) {
            inflight_off_ += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            wait_writable();
            return;
        }
        drop_inflight(n < 0 ? errno : EIO);
        return;
    }
    inflight_done();
}

void LogWriter::write_datagrams() {
    std::array<mmsghdr, kDatagramBatch> msgs{};
    std::array<iovec, kDatagramBatch> iov{};
    while (inflight_record_ < inflight_ends_.size()) {
        size_t k = std::min(kDatagramBatch, inflight_ends_.size() - inflight_record_);
        for (size_t i = 0; i < k; ++i) {
            size_t r = inflight_record_ + i;
            size_t begin = r == 0 ? 0 : inflight_ends_[r - 1];
            iov[i].iov_base = inflight_.data() + begin;
            iov[i].iov_len = inflight_ends_[r] - begin;
            msgs[i].msg_hdr = msghdr{};
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = ::sendmmsg(write_fd_, msgs.data(), static_cast<unsigned>(k),
                           MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            inflight_record_ += static_cast<size_t>(n);
            continue;
        }
        int err = n < 0 ? errno : EIO;
        if (err == EINTR) continue;
        if (err == EAGAIN || err == EWOULDBLOCK) {
            wait_writable();
            return;
        }
        if (err == EMSGSIZE) {
            // One record too large for a datagram: lose that one, not the batch.
            count_dropped(1, std::strerror(err));
            ++inflight_record_;
            continue;
        }
        if (err == ECONNREFUSED || err == ENOTCONN || err == ENOENT || err == ECONNRESET ||
            err == EDESTADDRREQ) {
            // The log daemon restarted or is not running (yet): connect again, at most once a
            // second; the records wait in the queue meanwhile (up to the bound).
            std::string why;
            if (SteadyClock::now() >= next_connect_ && connect_socket(why)) continue;
            if (!timer_armed_) arm_timer(kReconnectInterval);
            if (drop_reason_.empty()) drop_reason_ = path_ + ": " + std::strerror(err);
            return;
        }
        drop_inflight(err);
        return;
    }
    inflight_done();
}

void LogWriter::on_writable(uv_poll_t* p, int status, int) {
    auto* self = static_cast<LogWriter*>(p->data);
    uv_poll_stop(&self->poll_);
    self->polling_ = false;
    if (status < 0) {
        self->drop_inflight(-status);
        return;
    }
    if (self->mode_ == Mode::datagram) {
        self->write_datagrams();
    } else {
        self->write_stream();
    }
}

// How often the loop looks whether the file thread is done: the flush interval, but never a
// 0 ms spin and never so long that a retired writer or detach() waits on it.
std::chrono::milliseconds LogWriter::file_poll_interval() const {
    return std::clamp(options_.flush_delay, std::chrono::milliseconds(1),
                      std::chrono::milliseconds(10));
}

bool LogWriter::reap_file_batch() {
    if (file_thread_->busy()) return false;
    size_t written = 0;
    int error = 0;
    file_thread_->take_back(inflight_, written, error);
    fs_busy_ = false;
    fs_bytes_ = 0;
    fs_lines_ = 0;
    if (error != 0) {
        // The lines the file did not take, from where the thread stopped.
        count_dropped(count_lines(std::string_view(inflight_).substr(written)),
                      std::strerror(error));
    }
    inflight_.clear();  // capacity kept for the next batch
    inflight_off_ = 0;
    if (retiring_ && pending_.empty()) close_handles();
    return true;
}

void LogWriter::abandon_file_batch() {
    // The batch stays with the thread (it may still reach the disk); it is counted as lost.
    count_dropped(fs_lines_, "the log file did not take a batch within the time given");
    file_thread_.reset();  // detaches a thread that is still writing
    fs_busy_ = false;
    fs_bytes_ = 0;
    fs_lines_ = 0;
}

void LogWriter::count_dropped(size_t lines, std::string reason) {
    dropped_ += lines;
    episode_dropped_ += lines;
    drop_reason_ = std::move(reason);
}

void LogWriter::drop_pending() {
    dropped_ += pending_lines_;
    pending_.clear();
    pending_ends_.clear();
    pending_lines_ = 0;
}

void LogWriter::drop_inflight(int error) {
    count_dropped(mode_ == Mode::datagram
                      ? inflight_ends_.size() - inflight_record_
                      : count_lines(std::string_view(inflight_).substr(inflight_off_)),
                  std::strerror(error));
    inflight_.clear();
    inflight_ends_.clear();
    inflight_off_ = 0;
    inflight_record_ = 0;
    inflight_done();
}

void LogWriter::stop_polling_and_drop() {
    if (polling_) {
        uv_poll_stop(&poll_);
        polling_ = false;
    }
    if (fs_busy_ && !reap_file_batch()) abandon_file_batch();
    drop_pending();
    drop_inflight(ETIMEDOUT);
}

void LogWriter::inflight_done() {
    inflight_.clear();
    inflight_ends_.clear();
    inflight_off_ = 0;
    inflight_record_ = 0;
    if (loop_ == nullptr) return;
    if (retiring_) {
        if (pending_.empty()) {
            close_handles();
        } else {
            start_write();
        }
        return;
    }
    if (pending_.empty()) return;
    if (due()) {
        start_write();
    } else if (!timer_armed_) {
        arm_timer(options_.flush_delay);
    }
}

void LogWriter::flush() {
    if (loop_ == nullptr) {
        drain_blocking(SteadyClock::now() + options_.drain_timeout);
        return;
    }
    start_write();
}

void LogWriter::attach(uv_loop_t* loop) {
    if (loop_ != nullptr || open_handles_ > 0) return;
    loop_ = loop;
    uv_timer_init(loop, &timer_);
    timer_.data = this;
    uv_unref(reinterpret_cast<uv_handle_t*>(&timer_));
    ++open_handles_;
    poll_.data = this;
    if (mode_ == Mode::datagram) {
        poll_open_ = uv_poll_init(loop, &poll_, write_fd_) == 0;
    } else {
        struct stat st {};
        if (::fstat(fd_, &st) == 0 && S_ISREG(st.st_mode)) {
            mode_ = Mode::file;
            file_thread_ = std::make_unique<FileWriteThread>(write_fd_);
        } else if (S_ISSOCK(st.st_mode)) {
            // MSG_DONTWAIT needs no flag on the descriptor; libuv sets O_NONBLOCK when it
            // polls, so the flags of the (possibly shared) descriptor are put back.
            int flags = ::fcntl(fd_, F_GETFL);
            poll_open_ = uv_poll_init(loop, &poll_, fd_) == 0;
            if (flags >= 0) ::fcntl(fd_, F_SETFL, flags);
            mode_ = poll_open_ ? Mode::socket : Mode::blocking;
        } else {
            // A pipe, FIFO or terminal: O_NONBLOCK on fd_ would change it for every process
            // sharing the descriptor (a terminal's shell), so write through a private one.
            std::string proc = "/proc/self/fd/" + std::to_string(fd_);
            int own = ::open(proc.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
            if (own >= 0) {
                poll_open_ = uv_poll_init(loop, &poll_, own) == 0;
                if (poll_open_) {
                    write_fd_ = own;
                    own_write_fd_ = true;
                    mode_ = Mode::nonblocking;
                } else {
                    ::close(own);
                }
            }
            // Otherwise (no /proc): blocking writes, once per batch, as before.
        }
    }
    if (poll_open_) {
        uv_unref(reinterpret_cast<uv_handle_t*>(&poll_));
        ++open_handles_;
    }
    if (!pending_.empty()) schedule();
}

void LogWriter::detach() {
    if (loop_ == nullptr) return;
    // A batch the file thread holds finishes first, within drain_timeout; a disk that holds it
    // longer loses that batch and what is queued behind it (counted), rather than the process
    // hanging at shutdown.
    auto deadline = SteadyClock::now() + options_.drain_timeout;
    bool hung = false;
    if (fs_busy_) {
        file_thread_->wait(options_.drain_timeout);
        if (!reap_file_batch()) {
            abandon_file_batch();
            hung = true;
        }
    }
    if (polling_) {
        uv_poll_stop(&poll_);
        polling_ = false;
    }
    if (timer_armed_) {
        uv_timer_stop(&timer_);
        timer_armed_ = false;
    }
    // A disk that held a batch past the timeout would hold a blocking write too.
    if (hung) drop_pending();
    drain_blocking(deadline);
    close_handles();
    file_thread_.reset();
    if (own_write_fd_) {
        ::close(write_fd_);
        own_write_fd_ = false;
    }
    write_fd_ = fd_;
    if (mode_ != Mode::datagram) mode_ = Mode::blocking;
    loop_ = nullptr;
}

void LogWriter::drain_blocking(SteadyClock::time_point deadline) {
    // Same writing code, waiting in poll(2) where the loop would have waited for writability.
    uv_loop_t* loop = loop_;
    bool polled = poll_open_;
    poll_open_ = false;  // so the writers report EAGAIN back here instead of arming a watcher
    loop_ = nullptr;
    for (;;) {
        if (inflight_.empty()) {
            if (pending_.empty()) break;
            take_pending();
        }
        if (mode_ == Mode::datagram) {
            write_datagrams();
        } else {
            write_stream();
        }
        if (inflight_.empty()) continue;
        // Blocked (EAGAIN, or a datagram destination not reachable): wait or give up.
        auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
        if (left.count() <= 0) {
            drop_pending();
            drop_inflight(ETIMEDOUT);
            break;
        }
        pollfd pfd{write_fd_, POLLOUT, 0};
        int wait = static_cast<int>(std::min<long long>(left.count(), 100));
        ::poll(&pfd, 1, wait);
        if (mode_ == Mode::datagram && SteadyClock::now() >= next_connect_) {
            std::string why;
            connect_socket(why);
        }
    }
    loop_ = loop;
    poll_open_ = polled;
}

void LogWriter::retire() {
    retiring_ = true;
    if (loop_ == nullptr) return;
    retire_deadline_ = SteadyClock::now() + kRetireTimeout;
    if (inflight_.empty() && !fs_busy_ && pending_.empty()) {
        close_handles();
        return;
    }
    start_write();
    if (fs_busy_) {
        arm_timer(file_poll_interval());  // the thread's batch first, then the rest
    } else if (!timer_armed_) {
        arm_timer(kRetireTimeout);
    }
}

void LogWriter::close_handles() {
    if (open_handles_ == 0 || uv_is_closing(reinterpret_cast<uv_handle_t*>(&timer_))) return;
    if (polling_) {
        uv_poll_stop(&poll_);
        polling_ = false;
    }
    timer_armed_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), on_closed);
    if (poll_open_) {
        uv_close(reinterpret_cast<uv_handle_t*>(&poll_), on_closed);
        poll_open_ = false;
    }
}

void LogWriter::on_closed(uv_handle_t* h) {
    auto* self = static_cast<LogWriter*>(h->data);
    --self->open_handles_;
}

}  // namespace calloutd
