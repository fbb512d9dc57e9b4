// Postfix policy protocol codec (SMTPD_POLICY_README): name=value lines, empty line ends.
#include "policy/request.hpp"

#include <array>
#include <cstdint>

#include "util/byte_words.hpp"

namespace calloutd {

namespace {

struct AttributeField {
    std::string_view name;
    std::string PolicyRequest::*field;
};

constexpr std::array<AttributeField, 19> kAttributes = {{
    {"request", &PolicyRequest::request},
    {"protocol_state", &PolicyRequest::protocol_state},
    {"protocol_name", &PolicyRequest::protocol_name},
    {"sender", &PolicyRequest::sender},
    {"recipient", &PolicyRequest::recipient},
    {"recipient_count", &PolicyRequest::recipient_count},
    {"client_address", &PolicyRequest::client_address},
    {"client_name", &PolicyRequest::client_name},
    {"reverse_client_name", &PolicyRequest::reverse_client_name},
    {"helo_name", &PolicyRequest::helo_name},
    {"queue_id", &PolicyRequest::queue_id},
    {"instance", &PolicyRequest::instance},
    {"sasl_method", &PolicyRequest::sasl_method},
    {"sasl_username", &PolicyRequest::sasl_username},
    {"sasl_sender", &PolicyRequest::sasl_sender},
    {"encryption_protocol", &PolicyRequest::encryption_protocol},
    {"server_address", &PolicyRequest::server_address},
    {"server_port", &PolicyRequest::server_port},
    {"policy_context", &PolicyRequest::policy_context},
}};

// The index of the first control byte (below 0x20, or 0x7f) at or after i in [p, p + n), or n.
// Every byte of every request passes here, so it looks at eight bytes at a time. Every byte
// looked at is ORed into `seen` (whole words, so some after the one returned), which tells the
// request's parser whether any byte was >= 0x80 without a second pass.
size_t next_control_byte(const char* p, size_t n, size_t i, uint64_t& seen) {
    using namespace byte_words;
    for (; i + 8 <= n; i += 8) {
        uint64_t x = load(p + i);
        seen |= x;
        if (uint64_t m = below(x, 0x20) | equal(x, 0x7f)) return i + first(m);
    }
    for (; i < n; ++i) {
        auto c = static_cast<unsigned char>(p[i]);
        seen |= c;
        if (c < 0x20 || c == 0x7f) break;
    }
    return i;
}

// One pass over the bytes of a line: where its '\n' is (n when not received yet) and whether a
// forbidden byte comes before it. Control bytes other than TAB never occur in a Postfix
// request; they mean binary garbage or an injection attempt. Bytes >= 0x80 are allowed
// (SMTPUTF8 addresses). A CR right before the '\n', or ending the bytes received so
// far, is not judged here (next() leaves that CR for the next round).
struct LineScan {
    size_t newline;
    bool forbidden;
};
LineScan scan_line(const char* p, size_t n, uint64_t& seen) {
    for (size_t i = next_control_byte(p, n, 0, seen); i < n;
         i = next_control_byte(p, n, i + 1, seen)) {
        char c = p[i];
        if (c == '\n') return {i, false};
        bool tolerated = c == '\t' || (c == '\r' && (i + 1 == n || p[i + 1] == '\n'));
        if (!tolerated) return {i, true};
    }
    return {n, false};
}

// kAttributes indexes by name length, so a line is compared with at most four names.
constexpr size_t kMaxAttributeName = 19;
constexpr size_t kMaxSameLength = 4;
using AttributesByLength = std::array<std::array<int8_t, kMaxSameLength>, kMaxAttributeName + 1>;

constexpr AttributesByLength index_by_length() {
    AttributesByLength t{};
    for (auto& row : t)
        for (auto& i : row) i = -1;
    for (size_t i = 0; i < kAttributes.size(); ++i) {
        auto& row = t[kAttributes[i].name.size()];
        size_t k = 0;
        while (row[k] >= 0) ++k;  // a fifth name of one length fails to compile (out of bounds)
        row[k] = static_cast<int8_t>(i);
    }
    return t;
}
constexpr AttributesByLength kByLength = index_by_length();

// The index in kAttributes of `name`, or -1 for an attribute calloutd does not use.
int attribute_index(std::string_view name) {
    if (name.size() > kMaxAttributeName) return -1;
    for (int8_t i : kByLength[name.size()]) {
        if (i < 0) break;
        std::string_view candidate = kAttributes[static_cast<size_t>(i)].name;
        if (candidate[0] == name[0] && candidate == name) return i;
    }
    return -1;
}

// Whether every byte is below 0x80, eight at a time (finish() only: next() learns it while
// scanning).
bool is_ascii(std::string_view s) {
    using namespace byte_words;
    uint64_t seen = 0;
    size_t i = 0;
    for (; i + 8 <= s.size(); i += 8) seen |= load(s.data() + i);
    for (; i < s.size(); ++i) seen |= static_cast<unsigned char>(s[i]);
    return (seen & kHigh) == 0;
}

// RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF.
bool is_utf8(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            ++i;
            continue;
        }
        size_t len = c >= 0xc2 && c <= 0xdf   ? 2
                     : c >= 0xe0 && c <= 0xef ? 3
                     : c >= 0xf0 && c <= 0xf4 ? 4
                                              : 0;
        if (len == 0 || i + len > s.size()) return false;
        auto c1 = static_cast<unsigned char>(s[i + 1]);
        unsigned lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
        unsigned hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
        if (c1 < lo || c1 > hi) return false;
        for (size_t k = 2; k < len; ++k) {
            auto ck = static_cast<unsigned char>(s[i + k]);
            if (ck < 0x80 || ck > 0xbf) return false;
        }
        i += len;
    }
    return true;
}

}  // namespace

std::string_view to_string(ProtocolError e) {
    switch (e) {
        case ProtocolError::binary:
            return "binary";
        case ProtocolError::line_too_long:
            return "line_too_long";
        case ProtocolError::request_too_large:
            return "request_too_large";
        case ProtocolError::truncated:
            return "truncated";
        case ProtocolError::bad_attribute:
            return "bad_attribute";
        case ProtocolError::not_policy_request:
            return "not_policy_request";
        case ProtocolError::invalid_utf8:
            return "invalid_utf8";
        case ProtocolError::request_timeout:
            return "request_timeout";
    }
    return "binary";
}

RequestReader::Status RequestReader::fail(ProtocolError kind, std::string reason) {
    dead_ = true;
    error_kind_ = kind;
    error_ = std::move(reason);
    return Status::error;
}

void RequestReader::compact() {
    // Drop consumed bytes once they dominate the buffer, keeping the copy cost amortised.
    if (consumed_ > 0 && (consumed_ == buf_.size() || consumed_ >= 4096)) {
        buf_.erase(0, consumed_);
        scanned_ -= consumed_;
        line_start_ -= consumed_;
        consumed_ = 0;
    }
}

// Bytes are judged in stream order (eight at a time while none is a control byte), and the
// first byte that breaks a rule names the error.
RequestReader::Status RequestReader::next(PolicyRequest& out) {
    if (dead_) return Status::error;
    compact();
    while (scanned_ < buf_.size()) {
        // A CR is tolerated only right before the LF (CRLF from hand-written clients); a CR
        // that ends the bytes received so far is judged when the next byte arrives.
        LineScan scan = scan_line(buf_.data() + scanned_, buf_.size() - scanned_, seen_);
        size_t stop = scanned_ + scan.newline;  // the '\n', the forbidden byte, or the end
        // The first byte that breaks a rule names the error, so the reason never depends on
        // how the stream was split into reads: a limit counts when it is passed before `stop`.
        // A stray CR is judged by the byte after it (a CR ending one read is still pending),
        // and the CR itself counts against the limits, whatever follows it.
        size_t judged_at = scan.forbidden && buf_[stop] == '\r' ? stop + 1 : stop;
        size_t too_long_at = line_start_ + limits_.max_line_bytes;
        size_t too_large_at = consumed_ + limits_.max_request_bytes;
        if (too_long_at < judged_at && too_long_at <= too_large_at)
            return fail(ProtocolError::line_too_long, "line too long");
        if (too_large_at < judged_at)
            return fail(ProtocolError::request_too_large, "request too large");
        if (scan.forbidden) return fail(ProtocolError::binary, "binary or control byte in request");
        if (stop == buf_.size()) {
            scanned_ = buf_[stop - 1] == '\r' ? stop - 1 : stop;
            return Status::need_more;
        }
        scanned_ = stop + 1;
        size_t start = line_start_;
        line_start_ = stop + 1;
        bool empty_line = stop == start || (stop == start + 1 && buf_[start] == '\r');
        if (empty_line) {
            std::string_view block(buf_.data() + consumed_, start - consumed_);
            consumed_ = scanned_;
            const bool ascii = (seen_ & byte_words::kHigh) == 0;
            seen_ = 0;
            return parse_request(block, ascii, out);
        }
    }
    return Status::need_more;
}

RequestReader::Status RequestReader::finish(PolicyRequest& out) {
    if (dead_) return Status::error;
    if (pending_bytes() == 0) return Status::need_more;
    if (buf_.back() != '\n')
        return fail(ProtocolError::truncated, "connection closed in the middle of a line");
    std::string_view block(buf_.data() + consumed_, buf_.size() - consumed_);
    consumed_ = scanned_ = line_start_ = buf_.size();
    return parse_request(block, is_ascii(block), out);
}

RequestReader::Status RequestReader::parse_request(std::string_view block, bool ascii,
                                                   PolicyRequest& out) {
    // Cleared, not replaced: the reader's caller reuses `out`, and the strings keep their capacity.
    for (const auto& a : kAttributes) (out.*(a.field)).clear();
    warning_.clear();
    uint32_t seen = 0;  // bit per known attribute, to catch duplicates
    while (!block.empty()) {
        auto nl = block.find('\n');
        std::string_view line = block.substr(0, nl);
        block = nl == std::string_view::npos ? std::string_view{} : block.substr(nl + 1);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        auto eq = line.find('=');
        if (eq == std::string_view::npos)
            return fail(ProtocolError::bad_attribute, "attribute line without '='");
        if (eq == 0) return fail(ProtocolError::bad_attribute, "attribute line with an empty name");
        std::string_view name = line.substr(0, eq);
        std::string_view value = line.substr(eq + 1);
        // Postfix sends UTF-8 (SMTPUTF8) or ASCII; anything else is answered (the address
        // parser refuses such a sender) and reported, and the client is then let go.
        if (!ascii && warning_.empty() && (!is_utf8(name) || !is_utf8(value))) {
            std::string shown;
            for (char c : name) shown += static_cast<unsigned char>(c) < 0x80 ? c : '?';
            warning_ = "invalid UTF-8 in attribute '" + shown + "'";
        }
        int i = attribute_index(name);
        if (i < 0) continue;
        // Postfix never repeats an attribute; a repeat is a confused or hostile client.
        if (seen & (1u << i))
            return fail(ProtocolError::bad_attribute,
                        "duplicate attribute '" + std::string(name) + "'");
        seen |= 1u << i;
        out.*(kAttributes[static_cast<size_t>(i)].field) = value;
    }
    if (out.request != "smtpd_access_policy") {
        return fail(ProtocolError::not_policy_request,
                    out.request.empty() ? "request without request=smtpd_access_policy"
                                        : "unsupported request type");
    }
    return Status::request;
}

std::string encode_reply(std::string_view action) {
    std::string out;
    out.reserve(action.size() + 9);
    out += "action=";
    out += action;
    out += "\n\n";
    return out;
}

}  // namespace calloutd
