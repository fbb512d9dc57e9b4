// Parsing of durations, rates, listen addresses, file modes and Postfix actions.
#include "daemon/config_values.hpp"

#include <array>
#include <charconv>
#include <cstdint>

#include "util/host_port.hpp"

namespace calloutd {

namespace {

struct Unit {
    std::string_view suffix;
    int64_t ms;
};

// Longest suffix first so "ms" is not read as "m".
constexpr std::array<Unit, 6> kUnits = {{
    {"ms", 1},
    {"s", 1000},
    {"m", 60'000},
    {"h", 3'600'000},
    {"d", 86'400'000},
    {"w", 604'800'000},
}};

constexpr int64_t kMaxDurationMs = int64_t{10} * 366 * 86'400'000;  // ten years

void set_error(std::string* error, std::string msg) {
    if (error != nullptr) *error = std::move(msg);
}

std::optional<int64_t> parse_uint(std::string_view digits) {
    if (digits.empty() || digits.size() > 12) return std::nullopt;
    int64_t v = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
    if (ec != std::errc() || end != digits.data() + digits.size() || v < 0) return std::nullopt;
    return v;
}

}  // namespace

std::optional<Duration> parse_duration(std::string_view text, std::string* error) {
    size_t digits_end = 0;
    while (digits_end < text.size() && text[digits_end] >= '0' && text[digits_end] <= '9') {
        ++digits_end;
    }
    auto number = parse_uint(text.substr(0, digits_end));
    std::string_view suffix = text.substr(digits_end);
    for (const auto& u : kUnits) {
        if (suffix != u.suffix) continue;
        if (!number) break;
        if (*number > kMaxDurationMs / u.ms) {
            set_error(error, "duration '" + std::string(text) + "' is too long");
            return std::nullopt;
        }
        return Duration(*number * u.ms);
    }
    set_error(error, "'" + std::string(text) +
                         "' is not a duration (a number with unit ms, s, m, h, d or w, e.g. "
                         "\"15s\")");
    return std::nullopt;
}

std::string format_duration(Duration d) {
    int64_t ms = d.count();
    if (ms == 0) return "0s";
    for (auto it = kUnits.rbegin(); it != kUnits.rend(); ++it) {
        if (ms % it->ms == 0) return std::to_string(ms / it->ms) + std::string(it->suffix);
    }
    return std::to_string(ms) + "ms";
}

std::optional<Rate> parse_rate(std::string_view text, std::string* error) {
    if (text == "unlimited") return Rate{0, Duration(0), true};
    auto slash = text.find('/');
    auto count = parse_uint(text.substr(0, slash));
    std::string why;
    std::optional<Duration> period;
    if (slash != std::string_view::npos) period = parse_duration(text.substr(slash + 1), &why);
    if (!count || *count < 1 || *count > 100'000'000 || !period || period->count() <= 0) {
        set_error(error, "'" + std::string(text) +
                             "' is not a rate (COUNT/PERIOD with COUNT >= 1 and a duration, "
                             "e.g. \"10/1m\", or \"unlimited\")");
        return std::nullopt;
    }
    return Rate{static_cast<uint32_t>(*count), *period, false};
}

std::optional<ListenAddress> parse_listen_address(std::string_view text, std::string* error) {
    ListenAddress out;
    out.text = std::string(text);
    if (text.starts_with("unix:")) {
        out.kind = ListenAddress::Kind::unix_socket;
        out.path = std::string(text.substr(5));
        // sun_path holds 108 bytes including the terminator.
        if (out.path.empty() || out.path.size() > 107) {
            set_error(error, "unix socket path in '" + out.text + "' is empty or too long");
            return std::nullopt;
        }
        // A leading NUL would name a Linux abstract socket, one inside would cut the path.
        for (char c : out.path) {
            if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
                set_error(error, "unix socket path in listen address contains a control byte");
                return std::nullopt;
            }
        }
        return out;
    }
    if (!text.starts_with("inet:")) {
        set_error(error, "'" + out.text +
                             "' is not a listen address (inet:HOST:PORT, inet:[V6]:PORT or "
                             "unix:PATH)");
        return std::nullopt;
    }
    std::string why;
    auto hp = parse_host_port(text.substr(5), {.min_port = 0}, &why);
    if (hp && !hp->bracketed && hp->host.find(':') != std::string_view::npos) {
        why = "IPv6 host must be written [ADDR]:PORT";
        hp.reset();
    } else if (hp && !hp->port) {
        why = "no port";
        hp.reset();
    }
    if (!hp) {
        set_error(error, "'" + out.text + "': " + why);
        return std::nullopt;
    }
    std::string_view host = hp->host == "localhost" ? "127.0.0.1" : hp->host;
    auto ip = IpAddress::parse(host);
    if (!ip || hp->bracketed == ip->is_v4()) {
        set_error(error, "'" + out.text + "': host must be an IP address or localhost");
        return std::nullopt;
    }
    out.host = ip->to_string();
    out.port = *hp->port;
    return out;
}

std::optional<int64_t> parse_file_mode(std::string_view text, std::string* error) {
    int64_t mode = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), mode, 8);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size() || mode < 0 ||
        mode > 0777) {
        set_error(error, "'" + std::string(text) + "' is not an octal file mode like \"0660\"");
        return std::nullopt;
    }
    return mode;
}

bool validate_action(std::string_view action, std::string* error) {
    for (char c : action) {
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
            set_error(error, "action contains a control character");
            return false;
        }
    }
    auto space = action.find(' ');
    std::string_view verb = action.substr(0, space);
    std::string_view text =
        space == std::string_view::npos ? std::string_view{} : action.substr(space + 1);
    while (!text.empty() && text.front() == ' ') text.remove_prefix(1);

    bool numeric = verb.size() == 3 && (verb[0] == '4' || verb[0] == '5') && verb[1] >= '0' &&
                   verb[1] <= '9' && verb[2] >= '0' && verb[2] <= '9';
    if (numeric) {
        // Postfix treats a bare "450" as OK: a code must be followed by text.
        if (text.empty()) {
            set_error(error, "action '" + std::string(action) + "' needs text after the code");
            return false;
        }
        return true;
    }
    static constexpr std::array<std::string_view, 9> kNoArgument = {
        "OK",   "DUNNO",   "REJECT", "DEFER", "DEFER_IF_REJECT", "DEFER_IF_PERMIT",
        "HOLD", "DISCARD", "INFO"};
    static constexpr std::array<std::string_view, 5> kNeedsArgument = {"WARN", "PREPEND", "FILTER",
                                                                       "REDIRECT", "BCC"};
    for (auto v : kNoArgument) {
        if (verb == v) return true;
    }
    for (auto v : kNeedsArgument) {
        if (verb != v) continue;
        if (text.empty()) {
            set_error(error, "action " + std::string(verb) + " needs an argument");
            return false;
        }
        return true;
    }
    set_error(error, "'" + std::string(action) +
                         "' is not a Postfix access action (DUNNO, OK, REJECT text, DEFER text, "
                         "DEFER_IF_PERMIT text, 4NN text, 5NN text, WARN text, ...)");
    return false;
}

std::optional<LogLevel> parse_log_level(std::string_view text) {
    for (auto l :
         {LogLevel::debug, LogLevel::info, LogLevel::notice, LogLevel::warning, LogLevel::error}) {
        if (to_string(l) == text) return l;
    }
    return std::nullopt;
}

std::string_view to_string(LogLevel level) {
    switch (level) {
        case LogLevel::debug:
            return "debug";
        case LogLevel::info:
            return "info";
        case LogLevel::notice:
            return "notice";
        case LogLevel::warning:
            return "warning";
        case LogLevel::error:
            return "error";
    }
    return "info";
}

}  // namespace calloutd
