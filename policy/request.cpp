// Postfix policy protocol codec (SMTPD_POLICY_README): name=value lines, empty line ends.
#include "policy/request.hpp"

#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <utility>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "util/byte_words.hpp"

namespace calloutd {

namespace {

struct AttributeField {
    std::string_view name;
    std::string PolicyRequest::*field;  // null: known (a repeat is refused) but not kept
};

constexpr std::array<AttributeField, kPolicyAttributes> kAttributes = {{
    {"request", &PolicyRequest::request},
    {"protocol_state", &PolicyRequest::protocol_state},
    {"protocol_name", nullptr},
    {"sender", &PolicyRequest::sender},
    {"recipient", nullptr},
    {"recipient_count", nullptr},
    {"client_address", &PolicyRequest::client_address},
    {"client_name", nullptr},
    {"reverse_client_name", nullptr},
    {"helo_name", nullptr},
    {"queue_id", &PolicyRequest::queue_id},
    {"instance", &PolicyRequest::instance},
    {"sasl_method", &PolicyRequest::sasl_method},
    {"sasl_username", &PolicyRequest::sasl_username},
    {"sasl_sender", nullptr},
    {"encryption_protocol", nullptr},
    {"server_address", nullptr},
    {"server_port", nullptr},
    {"policy_context", nullptr},
}};

// The attributes with a field: what complete_request() copies out.
struct KeptAttribute {
    uint8_t index;  // in kAttributes
    std::string PolicyRequest::*field;
};
constexpr size_t kKeptAttributes = [] {
    size_t n = 0;
    for (const auto& a : kAttributes) n += a.field != nullptr;
    return n;
}();
constexpr std::array<KeptAttribute, kKeptAttributes> kKept = [] {
    std::array<KeptAttribute, kKeptAttributes> out{};
    size_t k = 0;
    for (size_t i = 0; i < kAttributes.size(); ++i) {
        if (kAttributes[i].field != nullptr)
            out[k++] = {static_cast<uint8_t>(i), kAttributes[i].field};
    }
    return out;
}();

// The decoder looks at a block of bytes at a time: 16 with SSE2 (x86-64's baseline), eight in
// a 64-bit word elsewhere. stop_mask() has one bit per byte of the block (bit 8k + 7 of a word,
// bit k of an SSE2 mask) set where the byte is a control byte (below 0x20, or 0x7f) or an '=':
// the only bytes the decoder has to look at one by one.
#if defined(__SSE2__)
constexpr size_t kBlock = 16;
constexpr int kBitShift = 0;
#else
constexpr size_t kBlock = 8;
constexpr int kBitShift = 3;
#endif

constexpr uint64_t bit_of_byte(size_t k) {
    return uint64_t{1} << ((k << kBitShift) + (kBitShift == 0 ? 0 : 7));
}
inline size_t byte_of_lowest_bit(uint64_t mask) {
    return static_cast<size_t>(std::countr_zero(mask)) >> kBitShift;
}

// The stop mask of the block at p + i (bytes at or past n are not looked at); the high bits of
// the bytes are ORed into `high`, which tells the decoder whether the request may hold bytes
// >= 0x80 (a false "yes" would only cost a UTF-8 check).
inline uint64_t stop_mask(const char* p, size_t n, size_t i, uint64_t& high) {
    if (i + kBlock <= n) {
#if defined(__SSE2__)
        __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
        high |= static_cast<unsigned>(_mm_movemask_epi8(x));
        __m128i control = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x1f)), x);
        __m128i del_or_eq = _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8(0x7f)),
                                         _mm_cmpeq_epi8(x, _mm_set1_epi8('=')));
        return static_cast<unsigned>(_mm_movemask_epi8(_mm_or_si128(control, del_or_eq)));
#else
        // Every stop counts, not only the first: the exact byte classes.
        using namespace byte_words;
        uint64_t x = load(p + i);
        high |= x & kHigh;
        return below_exact(x, 0x20) | equal_exact(x, 0x7f) | equal_exact(x, '=');
#endif
    }
    uint64_t mask = 0;
    for (size_t k = 0; i + k < n; ++k) {
        auto c = static_cast<unsigned char>(p[i + k]);
        high |= c & 0x80;
        if (c < 0x20 || c == 0x7f || c == '=') mask |= bit_of_byte(k);
    }
    return mask;
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

// The names of length N compared with a name of that length: with N known at compile time the
// compiler compares in a few word loads instead of calling memcmp (a request has ~20 lines).
template <size_t N>
int attribute_of_length(const char* name) {
    for (int8_t i : kByLength[N]) {
        if (i < 0) break;
        if (std::memcmp(name, kAttributes[static_cast<size_t>(i)].name.data(), N) == 0) return i;
    }
    return -1;
}

template <size_t... N>
constexpr auto attribute_matchers(std::index_sequence<N...>) {
    return std::array<int (*)(const char*), sizeof...(N)>{&attribute_of_length<N>...};
}
constexpr auto kMatchers = attribute_matchers(std::make_index_sequence<kMaxAttributeName + 1>());

// The index in kAttributes of `name`, or -1 for an attribute calloutd does not use.
int attribute_index(std::string_view name) {
    if (name.size() > kMaxAttributeName) return -1;
    return kMatchers[name.size()](name.data());
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
    // Attribute spans are relative to consumed_ and survive this unchanged.
    if (consumed_ > 0 && (consumed_ == buf_.size() || consumed_ >= 4096)) {
        buf_.erase(0, consumed_);
        scanned_ -= consumed_;
        line_start_ -= consumed_;
        if (eq_ != kNone) eq_ -= consumed_;
        consumed_ = 0;
    }
}

// One pass in stream order, a block at a time: only control bytes and '=' are looked at one
// by one, so each line is judged when its '\n' arrives (limits, '=', name, duplicate, UTF-8)
// and a request is complete at its empty line with the spans of its values already known.
// The first byte that breaks a rule names the error, whatever the split of the stream into
// reads.
RequestReader::Status RequestReader::next(PolicyRequest& out) {
    if (dead_) return Status::error;
    compact();
    const char* p = buf_.data();
    const size_t n = buf_.size();
    // The scan's state is kept in locals (registers) and stored back where the scan stops.
    size_t line_start = line_start_;
    size_t eq = eq_;
    uint64_t high = high_;
    const size_t too_large_at = consumed_ + limits_.max_request_bytes;
    // A limit counts when it is passed before the byte judged at `at`.
    auto over_limit = [&](size_t at) {
        size_t too_long_at = line_start + limits_.max_line_bytes;
        if (too_long_at < at && too_long_at <= too_large_at)
            return fail(ProtocolError::line_too_long, "line too long");
        if (too_large_at < at) return fail(ProtocolError::request_too_large, "request too large");
        return Status::need_more;
    };
    for (size_t i = scanned_; i < n; i += kBlock) {
        for (uint64_t mask = stop_mask(p, n, i, high); mask != 0; mask &= mask - 1) {
            const size_t at = i + byte_of_lowest_bit(mask);
            const char c = p[at];
            if (c == '=') {  // the line's first '=' ends its name
                if (eq == kNone) eq = at;
                continue;
            }
            if (c == '\t') continue;
            if (c == '\r') {
                // Tolerated right before the LF (CRLF from hand-written clients); a CR that
                // ends the bytes received so far is judged when the next byte arrives. A stray
                // CR is judged by the byte after it and counts against the limits itself.
                if (at + 1 == n || p[at + 1] == '\n') continue;
                if (over_limit(at + 1) == Status::error) return Status::error;
                return fail(ProtocolError::binary, "binary or control byte in request");
            }
            if (over_limit(at) == Status::error) return Status::error;
            if (c != '\n') return fail(ProtocolError::binary, "binary or control byte in request");
            // A complete line [line_start, at), CRLF cut.
            const size_t start = line_start;
            const size_t end = at > start && p[at - 1] == '\r' ? at - 1 : at;
            line_start = at + 1;
            if (end == start) {  // the empty line: no '=' was seen in it
                scanned_ = line_start_ = line_start;
                eq_ = kNone;
                return complete_request(out);
            }
            if (take_line(start, end, eq, high != 0) == Status::error) return Status::error;
            eq = kNone;
        }
    }
    line_start_ = line_start;
    eq_ = eq;
    high_ = high;
    if (over_limit(n) == Status::error) return Status::error;
    scanned_ = n > 0 && p[n - 1] == '\r' ? n - 1 : n;
    return Status::need_more;
}

// Only next() calls it, once a line: inlined there.
[[gnu::always_inline]] inline RequestReader::Status RequestReader::take_line(size_t start,
                                                                             size_t end, size_t eq,
                                                                             bool maybe_high) {
    if (eq == kNone) return fail(ProtocolError::bad_attribute, "attribute line without '='");
    if (eq == start) return fail(ProtocolError::bad_attribute, "attribute line with an empty name");
    std::string_view name(buf_.data() + start, eq - start);
    // Postfix sends UTF-8 (SMTPUTF8) or ASCII; anything else is answered (the address parser
    // refuses such a sender) and reported, and the client is then let go.
    if (maybe_high && pending_warning_.empty() &&
        (!is_utf8(name) || !is_utf8(std::string_view(buf_.data() + eq + 1, end - eq - 1)))) {
        std::string shown;
        for (char c : name) shown += static_cast<unsigned char>(c) < 0x80 ? c : '?';
        pending_warning_ = "invalid UTF-8 in attribute '" + shown + "'";
    }
    int i = attribute_index(name);
    if (i < 0) return Status::need_more;  // an attribute calloutd does not use
    // Postfix never repeats an attribute; a repeat is a confused or hostile client.
    const uint32_t bit = 1u << i;
    if (present_ & bit)
        return fail(ProtocolError::bad_attribute,
                    "duplicate attribute '" + std::string(name) + "'");
    present_ |= bit;
    values_[static_cast<size_t>(i)] = {static_cast<uint32_t>(eq + 1 - consumed_),
                                       static_cast<uint32_t>(end - consumed_)};
    return Status::need_more;
}

RequestReader::Status RequestReader::complete_request(PolicyRequest& out) {
    // Cleared, not replaced: the reader's caller reuses `out`, and the strings keep their capacity.
    const char* base = buf_.data() + consumed_;
    for (const KeptAttribute& kept : kKept) {
        std::string& field = out.*(kept.field);
        if (present_ & (1u << kept.index)) {
            const Span& v = values_[kept.index];
            field.assign(base + v.begin, v.end - v.begin);
        } else {
            field.clear();
        }
    }
    present_ = 0;
    high_ = 0;
    consumed_ = scanned_;
    warning_ = std::move(pending_warning_);
    pending_warning_.clear();
    if (out.request != "smtpd_access_policy") {
        return fail(ProtocolError::not_policy_request,
                    out.request.empty() ? "request without request=smtpd_access_policy"
                                        : "unsupported request type");
    }
    return Status::request;
}

RequestReader::Status RequestReader::finish(PolicyRequest& out) {
    if (dead_) return Status::error;
    if (Status st = next(out); st != Status::need_more) return st;
    if (pending_bytes() == 0) return Status::need_more;
    if (buf_.back() != '\n')
        return fail(ProtocolError::truncated, "connection closed in the middle of a line");
    // Every line has been taken by next(); what is missing is only the empty line.
    return complete_request(out);
}

std::string encode_reply(std::string_view action) {
    std::string out;
    encode_reply(action, out);
    return out;
}

void encode_reply(std::string_view action, std::string& out) {
    out.reserve(action.size() + 9);
    out.assign("action=").append(action).append("\n\n");
}

}  // namespace calloutd
