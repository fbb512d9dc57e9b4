// Logging: key=value lines with levels to stderr, syslog or journald; never blocks the loop.
#pragma once

#include <cstdint>
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
    std::string* text_ = nullptr;  // a shared buffer, or own_ when that one is in use
    std::string own_;
};

// Appends value to out, quoted if it is empty or holds spaces, quotes, '=' or non-printables.
void append_log_value(std::string& out, std::string_view value);

}  // namespace calloutd
