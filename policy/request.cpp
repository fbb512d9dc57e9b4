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
// Every byte of every request passes here, so it looks at eight bytes at a time.
size_t next_control_byte(const char* p, size_t n, size_t i) {
    using namespace byte_words;
    for (; i + 8 <= n; i += 8) {
        uint64_t x = load(p + i);
        if (uint64_t m = below(x, 0x20) | equal(x, 0x7f)) return i + first(m);
    }
    for (; i < n; ++i) {
        auto c = static_cast<unsigned char>(p[i]);
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
LineScan scan_line(const char* p, size_t n) {
    for (size_t i = next_control_byte(p, n, 0); i < n; i = next_control_byte(p, n, i + 1)) {
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
        consumed_ = 0;
    }
}

RequestReader::Status RequestReader::next(PolicyRequest& out) {
    if (dead_) return Status::error;
    compact();
    size_t line_start = scanned_;
    // Find the start of the line containing scanned_: it is after the last '\n' before it.
    if (line_start > consumed_) {
        auto prev = buf_.rfind('\n', line_start - 1);
        line_start = (prev == std::string::npos || prev < consumed_) ? consumed_ : prev + 1;
    }
    while (scanned_ < buf_.size()) {
        // A CR is tolerated only right before the LF (CRLF from hand-written clients); a CR
        // that ends the bytes received so far is judged when the next byte arrives.
        LineScan scan = scan_line(buf_.data() + scanned_, buf_.size() - scanned_);
        if (scan.forbidden) return fail(ProtocolError::binary, "binary or control byte in request");
        size_t nl =
            scanned_ + scan.newline < buf_.size() ? scanned_ + scan.newline : std::string::npos;
        size_t line_end = nl == std::string::npos ? buf_.size() : nl;
        size_t check_end = line_end;
        if (check_end > scanned_ && buf_[check_end - 1] == '\r') --check_end;
        if (line_end - line_start > limits_.max_line_bytes)
            return fail(ProtocolError::line_too_long, "line too long");
        if (line_end - consumed_ > limits_.max_request_bytes)
            return fail(ProtocolError::request_too_large, "request too large");
        if (nl == std::string::npos) {
            scanned_ = check_end;
            return Status::need_more;
        }
        scanned_ = nl + 1;
        bool empty_line = nl == line_start || (nl == line_start + 1 && buf_[line_start] == '\r');
        if (empty_line) {
            std::string_view block(buf_.data() + consumed_, line_start - consumed_);
            consumed_ = scanned_;
            return parse_request(block, out);
        }
        line_start = scanned_;
    }
    return Status::need_more;
}

RequestReader::Status RequestReader::finish(PolicyRequest& out) {
    if (dead_) return Status::error;
    if (pending_bytes() == 0) return Status::need_more;
    if (buf_.back() != '\n')
        return fail(ProtocolError::truncated, "connection closed in the middle of a line");
    std::string_view block(buf_.data() + consumed_, buf_.size() - consumed_);
    consumed_ = scanned_ = buf_.size();
    return parse_request(block, out);
}

RequestReader::Status RequestReader::parse_request(std::string_view block, PolicyRequest& out) {
    // Cleared, not replaced: the reader's caller reuses `out`, and the strings keep their capacity.
    for (const auto& a : kAttributes) (out.*(a.field)).clear();
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
