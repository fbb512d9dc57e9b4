// Logging: key=value lines to stderr (batched per loop iteration) or syslog, with levels.
#pragma once

#include <string>
#include <string_view>

#include "daemon/config.hpp"

struct uv_loop_s;

namespace calloutd {

class Log {
  public:
    // Applies [log]; safe to call again on reload.
    static void configure(const LogSettings& settings);
    // While attached, stderr lines are buffered and written once per loop iteration.
    static void attach(uv_loop_s* loop);
    static void detach();
    static bool enabled(LogLevel level);
    static void write(LogLevel level, std::string_view message);
    static void flush();
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
    std::string text_;
};

// Appends value to out, quoted if it is empty or holds spaces, quotes, '=' or non-printables.
void append_log_value(std::string& out, std::string_view value);

}  // namespace calloutd
