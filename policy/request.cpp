// Postfix policy protocol codec (SMTPD_POLICY_README): name=value lines, empty line ends.
#include "policy/request.hpp"

#include <array>

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

// Control bytes other than TAB never occur in a Postfix request; they mean binary garbage
// or an injection attempt. Bytes >= 0x80 are allowed (SMTPUTF8 addresses).
bool is_forbidden_byte(unsigned char c) {
    return (c < 0x20 && c != '\t') || c == 0x7f;
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

// Bytes are judged one at a time in stream order, and the first byte that breaks a rule
// names the error, so the reason never depends on how the stream was split into reads.
RequestReader::Status RequestReader::next(PolicyRequest& out) {
    if (dead_) return Status::error;
    compact();
    while (scanned_ < buf_.size()) {
        size_t i = scanned_++;
        auto c = static_cast<unsigned char>(buf_[i]);
        // A CR is tolerated only right before the LF (CRLF from hand-written clients), so it
        // is judged by the byte after it.
        bool after_cr = i > line_start_ && buf_[i - 1] == '\r';
        if (c == '\n') {
            bool empty_line = i == line_start_ || (after_cr && i == line_start_ + 1);
            size_t start = line_start_;
            line_start_ = i + 1;
            if (!empty_line) continue;
            std::string_view block(buf_.data() + consumed_, start - consumed_);
            consumed_ = scanned_;
            return parse_request(block, out);
        }
        if (after_cr || (c != '\r' && is_forbidden_byte(c))) {
            return fail(ProtocolError::binary, "binary or control byte in request");
        }
        if (i + 1 - line_start_ > limits_.max_line_bytes)
            return fail(ProtocolError::line_too_long, "line too long");
        if (i + 1 - consumed_ > limits_.max_request_bytes)
            return fail(ProtocolError::request_too_large, "request too large");
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
    return parse_request(block, out);
}

RequestReader::Status RequestReader::parse_request(std::string_view block, PolicyRequest& out) {
    out = PolicyRequest{};
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
        if (warning_.empty() && (!is_utf8(name) || !is_utf8(value))) {
            std::string shown;
            for (char c : name) shown += static_cast<unsigned char>(c) < 0x80 ? c : '?';
            warning_ = "invalid UTF-8 in attribute '" + shown + "'";
        }
        for (size_t i = 0; i < kAttributes.size(); ++i) {
            if (kAttributes[i].name != name) continue;
            // Postfix never repeats an attribute; a repeat is a confused or hostile client.
            if (seen & (1u << i))
                return fail(ProtocolError::bad_attribute,
                            "duplicate attribute '" + std::string(name) + "'");
            seen |= 1u << i;
            out.*(kAttributes[i].field) = value;
            break;
        }
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
