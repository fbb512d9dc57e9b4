// Log sink: stderr with timestamps (batched on the event loop) or syslog(3).
#include "daemon/log.hpp"

#include "daemon/config_values.hpp"

#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <chrono>
#include <cstdio>

namespace calloutd {

namespace {

struct Sink {
    LogLevel level = LogLevel::info;
    bool syslog = false;
    std::string ident;  // openlog keeps the pointer
    std::string buffer;
    uv_prepare_t flusher;
    bool attached = false;
};

Sink& sink() {
    static Sink s;
    return s;
}

int facility_code(std::string_view name) {
    if (name == "daemon") return LOG_DAEMON;
    if (name == "user") return LOG_USER;
    if (name.size() == 6 && name.starts_with("local") && name[5] >= '0' && name[5] <= '7') {
        return LOG_LOCAL0 + ((name[5] - '0') << 3);
    }
    return LOG_MAIL;
}

int syslog_priority(LogLevel l) {
    switch (l) {
        case LogLevel::debug:
            return LOG_DEBUG;
        case LogLevel::info:
            return LOG_INFO;
        case LogLevel::notice:
            return LOG_NOTICE;
        case LogLevel::warning:
            return LOG_WARNING;
        case LogLevel::error:
            return LOG_ERR;
    }
    return LOG_INFO;
}

void write_all(const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
        ssize_t n = ::write(STDERR_FILENO, data.data() + off, data.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;  // stderr gone: nothing useful left to do with the line
        off += static_cast<size_t>(n);
    }
}

void append_timestamp(std::string& out) {
    // strftime once per second; the milliseconds are appended each time.
    static time_t cached_second = -1;
    static char cached[32];
    auto now = std::chrono::system_clock::now();
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch());
    time_t secs = static_cast<time_t>(ms.count() / 1000);
    if (secs != cached_second) {
        struct tm tm;
        gmtime_r(&secs, &tm);
        strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
        cached_second = secs;
    }
    char buf[48];
    int n = snprintf(buf, sizeof buf, "%s.%03dZ ", cached, static_cast<int>(ms.count() % 1000));
    out.append(buf, static_cast<size_t>(n));
}

}  // namespace

void Log::configure(const LogSettings& settings) {
    Sink& s = sink();
    s.level = settings.level;
    bool want_syslog = settings.target == "syslog";
    if (s.syslog) closelog();
    s.syslog = want_syslog;
    if (want_syslog) {
        s.ident = settings.syslog_ident;
        openlog(s.ident.c_str(), LOG_PID | LOG_NDELAY, facility_code(settings.syslog_facility));
    }
}

void Log::attach(uv_loop_s* loop) {
    Sink& s = sink();
    if (s.attached) return;
    s.attached = true;
    uv_prepare_init(loop, &s.flusher);
    uv_prepare_start(&s.flusher, [](uv_prepare_t*) { Log::flush(); });
    // The prepare handle must not keep the loop alive on its own.
    uv_unref(reinterpret_cast<uv_handle_t*>(&s.flusher));
}

void Log::detach() {
    Sink& s = sink();
    flush();
    if (!s.attached) return;
    s.attached = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&s.flusher), nullptr);
}

bool Log::enabled(LogLevel level) {
    return level >= sink().level;
}

void Log::write(LogLevel level, std::string_view message) {
    if (!enabled(level)) return;
    Sink& s = sink();
    if (s.syslog) {
        syslog(syslog_priority(level), "%.*s", static_cast<int>(message.size()), message.data());
        return;
    }
    append_timestamp(s.buffer);
    s.buffer += to_string(level);
    s.buffer += ' ';
    s.buffer += message;
    s.buffer += '\n';
    if (!s.attached || s.buffer.size() > 64 * 1024) flush();
}

void Log::flush() {
    Sink& s = sink();
    if (s.buffer.empty()) return;
    write_all(s.buffer);
    s.buffer.clear();
}

void append_log_value(std::string& out, std::string_view value) {
    bool plain = !value.empty();
    for (char c : value) {
        auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u == 0x7f || c == '"' || c == '=' || c == '\\') {
            plain = false;
            break;
        }
    }
    if (plain) {
        out += value;
        return;
    }
    out += '"';
    for (char c : value) {
        auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (u < 0x20 || u == 0x7f) {
            char hex[5];
            snprintf(hex, sizeof hex, "\\x%02x", u);
            out += hex;
        } else {
            out += c;
        }
    }
    out += '"';
}

LogLine::LogLine(LogLevel level, std::string_view event)
    : level_(level), active_(Log::enabled(level)) {
    if (active_) {
        text_.reserve(256);
        text_ += event;
    }
}

LogLine& LogLine::field(std::string_view key, std::string_view value) {
    if (!active_) return *this;
    text_ += ' ';
    text_ += key;
    text_ += '=';
    append_log_value(text_, value);
    return *this;
}

LogLine& LogLine::field(std::string_view key, long long value) {
    if (!active_) return *this;
    text_ += ' ';
    text_ += key;
    text_ += '=';
    text_ += std::to_string(value);
    return *this;
}

void LogLine::emit() {
    if (!active_) return;
    active_ = false;
    Log::write(level_, text_);
}

LogLine::~LogLine() {
    emit();
}

}  // namespace calloutd
