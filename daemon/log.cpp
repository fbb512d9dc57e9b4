// Log sink: level filter and target choice in front of a LogWriter (stderr, syslog, journald).
#include "daemon/log.hpp"

#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "daemon/config_values.hpp"
#include "daemon/log_writer.hpp"
#include "util/byte_words.hpp"

namespace calloutd {

namespace {

struct Sink {
    LogLevel level = LogLevel::info;
    // What the writer was made for; a reload that keeps these keeps the writer.
    std::string target = "stderr";
    std::string facility;
    std::string ident;
    std::string socket;
    LogWriterOptions options;
    std::unique_ptr<LogWriter> writer = LogWriter::for_fd(STDERR_FILENO);
    // Writers of earlier targets still finishing their queue (or closing their handles).
    std::vector<std::unique_ptr<LogWriter>> retired;
    uint64_t retired_dropped = 0;
    uv_loop_t* loop = nullptr;
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

void prune_retired(Sink& s) {
    std::erase_if(s.retired, [&](const std::unique_ptr<LogWriter>& w) {
        if (!w->done()) return false;
        s.retired_dropped += w->dropped_lines();
        return true;
    });
}

}  // namespace

std::string default_log_socket(std::string_view target) {
    if (target == "syslog") return "/dev/log";
    if (target == "journald") return "/run/systemd/journal/socket";
    return {};
}

void Log::configure(const LogSettings& settings) {
    Sink& s = sink();
    s.level = settings.level;
    s.options.flush_delay =
        std::chrono::duration_cast<std::chrono::milliseconds>(settings.flush_interval);
    s.writer->set_flush_delay(s.options.flush_delay);
    s.options.write_behind = settings.write_behind;
    s.writer->set_write_behind(settings.write_behind);
    prune_retired(s);
    if (settings.target == s.target && settings.syslog_facility == s.facility &&
        settings.syslog_ident == s.ident && settings.socket == s.socket) {
        return;
    }
    std::unique_ptr<LogWriter> next;
    std::string error;
    if (settings.target == "syslog" || settings.target == "journald") {
        std::string path =
            settings.socket.empty() ? default_log_socket(settings.target) : settings.socket;
        next = LogWriter::for_socket(
            settings.target == "syslog" ? LogProtocol::syslog : LogProtocol::journald, path,
            facility_code(settings.syslog_facility), settings.syslog_ident, error, s.options);
    } else {
        next = LogWriter::for_fd(STDERR_FILENO, s.options);
    }
    // The old writer finishes its queue in the background; new lines go to the new one.
    s.writer->retire();
    s.retired.push_back(std::move(s.writer));
    s.writer = std::move(next);
    s.target = settings.target;
    s.facility = settings.syslog_facility;
    s.ident = settings.syslog_ident;
    s.socket = settings.socket;
    if (s.loop != nullptr) s.writer->attach(s.loop);
    prune_retired(s);
    if (!error.empty()) {
        // Said where it can be seen even while the log socket is unreachable.
        std::string line = "log-target-unreachable target=" + settings.target + " reason=";
        append_log_value(line, error);
        line += " effect=\"lines wait (up to a bound) and the socket is retried every second\"";
        std::fprintf(stderr, "%s\n", line.c_str());
        s.writer->write(LogLevel::warning, line);
    }
}

void Log::attach(uv_loop_s* loop) {
    Sink& s = sink();
    if (s.loop != nullptr) return;
    s.loop = loop;
    s.writer->attach(loop);
}

void Log::detach() {
    Sink& s = sink();
    if (s.loop == nullptr) return;
    s.writer->detach();
    for (auto& w : s.retired) w->detach();
    s.loop = nullptr;
}

bool Log::enabled(LogLevel level) {
    return level >= sink().level;
}

void Log::write(LogLevel level, std::string_view message) {
    if (!enabled(level)) return;
    sink().writer->write(level, message);
}

void Log::flush() {
    sink().writer->flush();
}

uint64_t Log::dropped_lines() {
    Sink& s = sink();
    uint64_t n = s.retired_dropped + s.writer->dropped_lines();
    for (const auto& w : s.retired) n += w->dropped_lines();
    return n;
}

std::string_view Log::output_mode() {
    return sink().writer->mode();
}

namespace {

// Bytes that make a value quoted: space and controls, DEL, '"', '=', '\\'.
constexpr std::array<unsigned char, 256> kQuoteBytes = [] {
    std::array<unsigned char, 256> t{};
    for (int c = 0; c <= 0x20; ++c) t[static_cast<size_t>(c)] = 1;
    t[0x7f] = t['"'] = t['='] = t['\\'] = 1;
    return t;
}();

// Bytes escaped inside quotes: controls and DEL as \xNN, '"' and '\\' with a backslash.
constexpr std::array<unsigned char, 256> kEscapeBytes = [] {
    std::array<unsigned char, 256> t{};
    for (int c = 0; c < 0x20; ++c) t[static_cast<size_t>(c)] = 1;
    t[0x7f] = t['"'] = t['\\'] = 1;
    return t;
}();

// One line is built at a time, so one buffer (keeping its capacity) serves every LogLine; a
// line started while another is being built gets its own.
thread_local LogText t_line_buffer;
thread_local bool t_line_buffer_busy = false;

// Copies n <= 16 bytes to w in at most two overlapping loads and stores of the widest size that
// fits: the pieces of a log line (keys, values, runs between escapes) are mostly that short, and
// for them a call to memcpy costs more than the copy.
inline void copy_short(char* w, const char* p, size_t n) {
    if (n >= 8) {
        uint64_t a, b;
        std::memcpy(&a, p, 8);
        std::memcpy(&b, p + n - 8, 8);
        std::memcpy(w, &a, 8);
        std::memcpy(w + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        std::memcpy(&a, p, 4);
        std::memcpy(&b, p + n - 4, 4);
        std::memcpy(w, &a, 4);
        std::memcpy(w + n - 4, &b, 4);
    } else if (n > 0) {
        w[0] = p[0];
        w[n / 2] = p[n / 2];
        w[n - 1] = p[n - 1];
    }
}

inline char* copy(char* w, const char* p, size_t n) {
    if (n > 16) {
        std::memcpy(w, p, n);
    } else {
        copy_short(w, p, n);
    }
    return w + n;
}

#if defined(__SSE2__)
// Sixteen bytes at a time (x86-64's baseline): the mask has bit k set where byte k is in the
// class. A tail shorter than 16 bytes is copied to a zeroed block first, so nothing past the
// value is read; the zero bytes are masked off.
template <class MaskOf>
size_t first_in_class(const char* p, size_t n, size_t i, MaskOf mask_of,
                      const std::array<unsigned char, 256>&) {
    for (; i + 16 <= n; i += 16) {
        __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
        if (unsigned m = mask_of(x)) return i + static_cast<size_t>(std::countr_zero(m));
    }
    if (i == n) return n;
    alignas(16) char tail[16] = {};
    copy_short(tail, p + i, n - i);
    unsigned m =
        mask_of(_mm_load_si128(reinterpret_cast<const __m128i*>(tail))) & ((1u << (n - i)) - 1);
    return m != 0 ? i + static_cast<size_t>(std::countr_zero(m)) : n;
}

inline unsigned byte_mask(__m128i x) {
    return static_cast<unsigned>(_mm_movemask_epi8(x));
}
inline __m128i equal_to(__m128i x, char c) {
    return _mm_cmpeq_epi8(x, _mm_set1_epi8(c));
}
inline __m128i at_most(__m128i x, char c) {  // unsigned x <= c
    return _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(c)), x);
}

size_t first_quote_byte(const char* p, size_t n) {
    return first_in_class(
        p, n, 0,
        [](__m128i x) {
            return byte_mask(_mm_or_si128(
                _mm_or_si128(at_most(x, 0x20), equal_to(x, 0x7f)),
                _mm_or_si128(_mm_or_si128(equal_to(x, '"'), equal_to(x, '=')), equal_to(x, '\\'))));
        },
        kQuoteBytes);
}

// Escaped bytes are a subset of the quoted ones, so a search can start at the first of those.
size_t first_escape_byte(const char* p, size_t n, size_t from) {
    return first_in_class(
        p, n, from,
        [](__m128i x) {
            return byte_mask(_mm_or_si128(_mm_or_si128(at_most(x, 0x1f), equal_to(x, 0x7f)),
                                          _mm_or_si128(equal_to(x, '"'), equal_to(x, '\\'))));
        },
        kEscapeBytes);
}
#else
// The index of the first byte of p[i, n) in the class `mask_of` finds eight bytes at a time
// (`table` byte by byte, for what is left), or n.
template <class MaskOf>
size_t first_in_class(const char* p, size_t n, size_t i, MaskOf mask_of,
                      const std::array<unsigned char, 256>& table) {
    using namespace byte_words;
    for (; i + 8 <= n; i += 8) {
        if (uint64_t m = mask_of(load(p + i))) return i + first(m);
    }
    for (; i < n; ++i) {
        if (table[static_cast<unsigned char>(p[i])]) break;
    }
    return i;
}

size_t first_quote_byte(const char* p, size_t n) {
    using namespace byte_words;
    return first_in_class(
        p, n, 0,
        [](uint64_t x) {
            return below(x, 0x21) | equal(x, 0x7f) | equal(x, '"') | equal(x, '=') | equal(x, '\\');
        },
        kQuoteBytes);
}

// Escaped bytes are a subset of the quoted ones, so a search can start at the first of those.
size_t first_escape_byte(const char* p, size_t n, size_t from) {
    using namespace byte_words;
    return first_in_class(
        p, n, from,
        [](uint64_t x) { return below(x, 0x20) | equal(x, 0x7f) | equal(x, '"') | equal(x, '\\'); },
        kEscapeBytes);
}
#endif

}  // namespace

void LogText::grow(size_t n) {
    size_t capacity = std::max<size_t>({256, 2 * capacity_, size_ + n});
    auto data = std::make_unique<char[]>(capacity);
    if (size_ > 0) std::memcpy(data.get(), data_.get(), size_);
    data_ = std::move(data);
    capacity_ = capacity;
}

char* write_log_value(char* w, std::string_view value) {
    // Every field of every decision line passes here: bytes are classified eight at a time and
    // copied in runs.
    const char* p = value.data();
    const size_t n = value.size();
    const size_t quote_at = first_quote_byte(p, n);
    if (quote_at == n && n > 0) return copy(w, p, n);
    *w++ = '"';
    size_t run = 0;
    for (size_t at = first_escape_byte(p, n, quote_at); at < n; at = first_escape_byte(p, n, run)) {
        w = copy(w, p + run, at - run);
        auto u = static_cast<unsigned char>(p[at]);
        *w++ = '\\';
        if (u == '"' || u == '\\') {
            *w++ = static_cast<char>(u);
        } else {
            static constexpr char kHex[] = "0123456789abcdef";
            *w++ = 'x';
            *w++ = kHex[u >> 4];
            *w++ = kHex[u & 15];
        }
        run = at + 1;
    }
    w = copy(w, p + run, n - run);
    *w++ = '"';
    return w;
}

void append_log_value(std::string& out, std::string_view value) {
    size_t old = out.size();
    out.resize(old + max_log_value_bytes(value.size()));
    char* end = write_log_value(out.data() + old, value);
    out.resize(static_cast<size_t>(end - out.data()));
}

LogLine::LogLine(LogLevel level, std::string_view event)
    : level_(level), active_(Log::enabled(level)) {
    if (!active_) return;
    if (!t_line_buffer_busy) {
        t_line_buffer_busy = true;
        text_ = &t_line_buffer;
    } else {
        text_ = &own_;
    }
    text_->clear();
    text_->commit(copy(text_->room(event.size()), event.data(), event.size()));
}

LogLine& LogLine::field(std::string_view key, std::string_view value) {
    if (!active_) return *this;
    char* w = text_->room(key.size() + 2 + max_log_value_bytes(value.size()));
    *w++ = ' ';
    w = copy(w, key.data(), key.size());
    *w++ = '=';
    text_->commit(write_log_value(w, value));
    return *this;
}

LogLine& LogLine::field(std::string_view key, long long value) {
    if (!active_) return *this;
    constexpr size_t kDigits = 24;
    char* w = text_->room(key.size() + 2 + kDigits);
    *w++ = ' ';
    w = copy(w, key.data(), key.size());
    *w++ = '=';
    text_->commit(std::to_chars(w, w + kDigits, value).ptr);
    return *this;
}

void LogLine::emit() {
    if (!active_) return;
    active_ = false;
    Log::write(level_, text_->view());
    if (text_ == &t_line_buffer) t_line_buffer_busy = false;
}

LogLine::~LogLine() {
    emit();
}

}  // namespace calloutd
