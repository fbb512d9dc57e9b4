// Logging: key=value lines with levels to stderr, syslog or journald; never blocks the loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "daemon/config.hpp"

struct uv_loop_s;

namespace calloutd {

class Log {
  public:
    // Applies [log]; safe to call again on reload (a new target gets a new LogWriter, the old
    // one finishes its queue in the background).
    static void configure(const LogSettings& settings);
    // While attached, lines are queued and written in batches without ever blocking the loop
    // (see LogWriter); detached, each line is written at once.
    static void attach(uv_loop_s* loop);
    // Writes what is queued (waiting a bounded time for a blocked destination). Call it after
    // uv_run() has returned.
    static void detach();
    static bool enabled(LogLevel level);
    static void write(LogLevel level, std::string_view message);
    // Starts writing what is queued now (SIGHUP).
    static void flush();
    // Lines lost because the destination was blocked, failing or too slow (since start).
    static uint64_t dropped_lines();
    // How the current destination is written (LogWriter::mode()), for the `started` line.
    static std::string_view output_mode();
};

// The socket of log.target "syslog" or "journald" when log.socket is empty.
std::string default_log_socket(std::string_view target);

// The bytes of a log line being built: a plain growable buffer, so that a field costs one
// capacity check and a few copies (std::string checks capacity and writes a terminator on
// every append; a decision line has nine fields and is built for every request).
class LogText {
  public:
    // Room for at least n more bytes: where they go. commit() then says where they ended.
    char* room(size_t n) {
        if (capacity_ - size_ < n) grow(n);
        return data_.get() + size_;
    }
    void commit(const char* end) { size_ = static_cast<size_t>(end - data_.get()); }
    void clear() { size_ = 0; }
    std::string_view view() const { return {data_.get(), size_}; }

  private:
    void grow(size_t n);
    std::unique_ptr<char[]> data_;
    size_t size_ = 0;
    size_t capacity_ = 0;
};

// Builds one "event key=value key=value" line; values are quoted and escaped when needed so
// a hostile sender or SMTP reply can never forge a field or a line.
class LogLine {
  public:
    LogLine(LogLevel level, std::string_view event);
    LogLine& field(std::string_view key, std::string_view value);
    LogLine& field(std::string_view key, long long value);
    void emit();
    ~LogLine();

    LogLine(const LogLine&) = delete;
    LogLine& operator=(const LogLine&) = delete;

  private:
    LogLevel level_;
    bool active_;
    LogText* text_ = nullptr;  // a shared buffer, or own_ when that one is in use
    LogText own_;
};

// The most bytes write_log_value() writes for a value of n bytes.
constexpr size_t max_log_value_bytes(size_t n) {
    return 4 * n + 2;
}
// Writes value at w, quoted if it is empty or holds spaces, quotes, '=' or non-printables;
// returns the end of what it wrote (at most max_log_value_bytes(value.size()) bytes).
char* write_log_value(char* w, std::string_view value);
// Appends value to out, quoted if it is empty or holds spaces, quotes, '=' or non-printables.
void append_log_value(std::string& out, std::string_view value);

}  // namespace calloutd
