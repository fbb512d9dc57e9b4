// Incremental SMTP reply parser: line framing, code checks, size caps, enhanced codes.
#include "callout/smtp_reply.hpp"

#include <cstdio>
#include <utility>

namespace calloutd {

namespace {

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

// Length of a run of 1..3 digits at `pos`, 0 if none or more than three.
std::size_t digit_run(std::string_view s, std::size_t pos) {
    std::size_t n = 0;
    while (pos + n < s.size() && is_digit(s[pos + n])) ++n;
    return n >= 1 && n <= 3 ? n : 0;
}

std::string hex_byte(unsigned char c) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02x", static_cast<unsigned>(c));
    return buf;
}

}  // namespace

// RFC 3463: class "." subject "." detail, class in {2,4,5}, subject and detail 1-3 digits,
// followed by a space or the end of the text.
std::string parse_enhanced_code(int code, std::string_view text) {
    if (text.size() < 5) return {};
    char cls = text[0];
    if (cls != '2' && cls != '4' && cls != '5') return {};
    if (cls - '0' != code / 100) return {};
    if (text[1] != '.') return {};
    std::size_t subject = digit_run(text, 2);
    if (subject == 0) return {};
    std::size_t dot2 = 2 + subject;
    if (dot2 >= text.size() || text[dot2] != '.') return {};
    std::size_t detail = digit_run(text, dot2 + 1);
    if (detail == 0) return {};
    std::size_t end = dot2 + 1 + detail;
    if (end < text.size() && text[end] != ' ') return {};
    return std::string(text.substr(0, end));
}

void SmtpReplyParser::reset() {
    line_.clear();
    saw_cr_ = false;
    cur_.reset();
    cur_bytes_ = 0;
    ready_.clear();
    error_.clear();
}

void SmtpReplyParser::fail(std::string reason) {
    error_ = std::move(reason);
    line_.clear();
    line_.shrink_to_fit();
    cur_.reset();
}

void SmtpReplyParser::feed(std::string_view bytes) {
    for (std::size_t i = 0; i < bytes.size() && !failed(); ++i) {
        auto c = static_cast<unsigned char>(bytes[i]);
        if (saw_cr_) {
            if (c != '\n') {
                fail("bare CR in reply");
                return;
            }
            saw_cr_ = false;
            end_line();
            continue;
        }
        if (c == '\r') {
            saw_cr_ = true;
            continue;
        }
        if (c == '\n') {
            end_line();
            continue;
        }
        if (c == 0) {
            fail("NUL byte in reply");
            return;
        }
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            fail("control character " + hex_byte(c) + " in reply");
            return;
        }
        line_.push_back(static_cast<char>(c));
        if (line_.size() > limits_.max_line) {
            fail("line too long (over " + std::to_string(limits_.max_line) + " octets)");
            return;
        }
        // Checked per byte so a huge reply is refused before its last line completes.
        if (cur_bytes_ + line_.size() > limits_.max_reply) {
            fail("reply too large (over " + std::to_string(limits_.max_reply) + " octets)");
            return;
        }
    }
}

// One complete line in line_: validate the code, extend or start the current reply.
void SmtpReplyParser::end_line() {
    const std::string_view l = line_;
    if (l.size() < 3 || !is_digit(l[0]) || !is_digit(l[1]) || !is_digit(l[2]) || l[0] < '2' ||
        l[0] > '5') {
        fail("line without 3-digit reply code");
        return;
    }
    const int code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
    bool last = true;
    std::string_view text;
    if (l.size() > 3) {
        if (l[3] == '-') {
            last = false;
        } else if (l[3] != ' ') {
            fail("malformed reply line (no space or '-' after code)");
            return;
        }
        text = l.substr(4);
    }
    if (cur_ && cur_->code != code) {
        fail("reply code mismatch in multi-line reply (" + std::to_string(cur_->code) + " then " +
             std::to_string(code) + ")");
        return;
    }
    cur_bytes_ += l.size() + 2;
    if (cur_bytes_ > limits_.max_reply) {
        fail("reply too large (over " + std::to_string(limits_.max_reply) + " octets)");
        return;
    }
    if (!cur_) {
        cur_.emplace();
        cur_->code = code;
        cur_->enhanced = parse_enhanced_code(code, text);
    }
    cur_->lines.emplace_back(text);
    line_.clear();
    if (!last) return;
    // Complete replies are not counted against max_reply: whether they were taken yet depends
    // on when the caller reads, and the limits must not (see the header).
    ready_.push_back(std::move(*cur_));
    cur_.reset();
    cur_bytes_ = 0;
}

std::optional<SmtpReply> SmtpReplyParser::next() {
    if (ready_.empty()) return std::nullopt;
    SmtpReply reply = std::move(ready_.front());
    ready_.pop_front();
    return reply;
}

bool SmtpReplyParser::has_pending() const {
    return !ready_.empty() || cur_.has_value() || !line_.empty() || saw_cr_;
}

}  // namespace calloutd
