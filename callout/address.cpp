// Sender address parsing: RFC 5321 Mailbox syntax, IDNA2008 domains via libidn2, hard length
// limits, and refusal of anything (controls, CR/LF, brackets) that could break the SMTP line.
#include "callout/address.hpp"
#include "util/ascii.hpp"

#include <idn2.h>

#include <array>
#include <string>

namespace calloutd {
namespace {

// Refusing is cheap and the input is untrusted, so bound the work before looking closely.
constexpr size_t kMaxInputOctets = 1024;

AddressParse refuse(std::string_view why) {
    return {std::nullopt, "bad-address: " + std::string(why)};
}

// RFC 5322 atext (ASCII part).
constexpr bool is_atext(unsigned char c) {
    if (is_alnum(static_cast<char>(c))) return true;
    constexpr std::string_view kSpecials = "!#$%&'*+-/=?^_`{|}~";
    return kSpecials.find(static_cast<char>(c)) != std::string_view::npos;
}

// Length of the well-formed UTF-8 sequence at s[i] (s[i] >= 0x80), or 0 when it is malformed,
// overlong, a surrogate, beyond U+10FFFF or a C1 control (U+0080..U+009F).
size_t utf8_sequence(std::string_view s, size_t i) {
    auto at = [&](size_t k) -> unsigned {
        return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u;
    };
    auto cont = [](unsigned c) { return c >= 0x80 && c <= 0xbf; };
    unsigned c0 = at(0);
    unsigned c1 = at(1);
    if (c0 == 0xc2) return (c1 >= 0xa0 && c1 <= 0xbf) ? 2 : 0;  // excludes C1 controls
    if (c0 >= 0xc3 && c0 <= 0xdf) return cont(c1) ? 2 : 0;
    if (c0 >= 0xe0 && c0 <= 0xef) {
        unsigned lo = c0 == 0xe0 ? 0xa0 : 0x80;
        unsigned hi = c0 == 0xed ? 0x9f : 0xbf;
        return (c1 >= lo && c1 <= hi && cont(at(2))) ? 3 : 0;
    }
    if (c0 >= 0xf0 && c0 <= 0xf4) {
        unsigned lo = c0 == 0xf0 ? 0x90 : 0x80;
        unsigned hi = c0 == 0xf4 ? 0x8f : 0xbf;
        return (c1 >= lo && c1 <= hi && cont(at(2)) && cont(at(3))) ? 4 : 0;
    }
    return 0;
}

// Scans the local part (dot-atom or quoted string) up to the '@'. Returns the refusal, or
// empty with `end` at the '@'.
std::string scan_local(std::string_view text, size_t& end) {
    size_t i = 0;
    if (!text.empty() && text[0] == '"') {
        i = 1;
        bool closed = false;
        while (i < text.size()) {
            auto c = static_cast<unsigned char>(text[i]);
            if (c == '"') {
                closed = true;
                ++i;
                break;
            }
            if (c == '\\') {
                // RFC 5321 quoted-pairSMTP: backslash followed by printable ASCII only.
                if (i + 1 >= text.size()) return "unbalanced quotes";
                auto d = static_cast<unsigned char>(text[i + 1]);
                if (d < 0x20 || d > 0x7e) return "bad escape in quoted local part";
                i += 2;
                continue;
            }
            if (c >= 0x80) {
                size_t len = utf8_sequence(text, i);
                if (len == 0) return "invalid UTF-8 in local part";
                i += len;
                continue;
            }
            ++i;  // qtextSMTP: every other printable ASCII octet, space included
        }
        if (!closed) return "unbalanced quotes";
        if (i == 2) return "empty local part";
        if (i >= text.size()) return "missing @";
        if (text[i] != '@') return "text after quoted local part";
        end = i;
        return {};
    }

    bool after_dot = true;  // at the start a dot would be a leading dot
    while (i < text.size() && text[i] != '@') {
        auto c = static_cast<unsigned char>(text[i]);
        if (c == '.') {
            if (i == 0) return "leading dot in local part";
            if (after_dot) return "double dot in local part";
            after_dot = true;
            ++i;
            continue;
        }
        after_dot = false;
        if (c >= 0x80) {
            size_t len = utf8_sequence(text, i);
            if (len == 0) return "invalid UTF-8 in local part";
            i += len;
            continue;
        }
        if (c == '<' || c == '>') return "angle bracket outside quotes";
        if (c == '"') return "unbalanced quotes";
        if (c == ' ') return "space outside quotes";
        if (!is_atext(c))
            return std::string("character '") + static_cast<char>(c) + "' outside quotes";
        ++i;
    }
    if (i == 0) return "empty local part";
    if (i >= text.size()) return "missing @";
    if (after_dot) return "trailing dot in local part";
    end = i;
    return {};
}

// Runs libidn2 (IDNA2008 with UTS-46 non-transitional mapping, NFC); nullopt with `why` set on
// failure.
std::optional<std::string> to_a_labels(const std::string& domain, std::string& why) {
    char* out = nullptr;
    int rc = idn2_to_ascii_8z(domain.c_str(), &out, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
    if (rc != IDN2_OK) {
        why = std::string("invalid IDN domain (") + idn2_strerror_name(rc) + ")";
        idn2_free(out);
        return std::nullopt;
    }
    std::string result(out);
    idn2_free(out);
    return result;
}

// The U-label form of a valid A-label domain; empty if libidn2 cannot convert it back.
std::string to_u_labels(const std::string& a_labels) {
    char* out = nullptr;
    if (idn2_to_unicode_8z8z(a_labels.c_str(), &out, 0) != IDN2_OK) {
        idn2_free(out);
        return {};
    }
    std::string result(out);
    idn2_free(out);
    return result;
}

// Validates and normalises the domain into lower-case A-labels; returns the refusal or empty.
// `idna` is set when the refusal comes from the IDNA mapping rather than plain syntax.
std::string normalise_domain(std::string_view text, std::string& domain, bool& idna) {
    idna = false;
    if (text.empty()) return "empty domain";
    if (text.back() == '.') return "trailing dot in domain";
    bool ascii = true;
    for (size_t i = 0; i < text.size();) {
        auto c = static_cast<unsigned char>(text[i]);
        if (c < 0x80) {
            ++i;
            continue;
        }
        ascii = false;
        size_t len = utf8_sequence(text, i);
        if (len == 0) return "invalid UTF-8 in domain";
        i += len;
    }
    std::string why;
    if (ascii) {
        domain = ascii_lower(text);
    } else {
        auto converted = to_a_labels(std::string(text), why);
        if (!converted) {
            idna = true;
            return why;
        }
        domain = std::move(*converted);
    }
    if (domain.size() > kMaxDomainOctets) return "domain longer than 253 octets";

    std::string_view rest = domain;
    std::string_view label;
    while (true) {
        size_t dot = rest.find('.');
        label = rest.substr(0, dot);
        if (label.empty()) return "empty label in domain";
        if (label.size() > kMaxLabelOctets) return "domain label longer than 63 octets";
        for (char c : label) {
            // RFC 5321 sub-domain is LDH: '_' and everything else is refused.
            if (!is_alnum(c) && c != '-') return "character not allowed in domain";
        }
        if (label.front() == '-' || label.back() == '-') return "hyphen at start or end of label";
        // An ASCII "xn--" label claims to be an A-label: it must decode to a valid U-label.
        if (ascii && label.size() > 4 && label.substr(0, 4) == "xn--" &&
            !to_a_labels(std::string(label), why)) {
            idna = true;
            return why;
        }
        if (dot == std::string_view::npos) break;
        rest.remove_prefix(dot + 1);
    }
    // "user@192.0.2.1" is an IP in disguise (resolvers return it as is): top-level labels
    // are never all-numeric (RFC 3696 2).
    if (label.find_first_not_of("0123456789") == std::string_view::npos)
        return "numeric top-level label";
    return {};
}

// RFC 5322 atext in ASCII, for the one-pass parse below.
constexpr std::array<bool, 256> kAtext = [] {
    std::array<bool, 256> t{};
    for (int c = 0; c < 256; ++c)
        t[static_cast<size_t>(c)] = is_atext(static_cast<unsigned char>(c));
    return t;
}();

// The domains nearly every request carries, in one pass: LDH labels without an "xn--" one,
// within the length limits, written to `out` in lower case. False for anything else, valid or
// not: the full parse then decides and names the refusal. Where this accepts a domain, `out`
// is what the full parse gives (tests/unit/address_test.cpp checks both against each other,
// and so does the address fuzzer).
bool parse_plain_domain(std::string_view text, std::string& out) {
    const size_t n = text.size();
    if (n > kMaxDomainOctets) return false;
    char lower[kMaxDomainOctets];
    const char* p = text.data();
    size_t label = 0;     // length of the label so far
    bool numeric = true;  // the label so far is all digits
    char previous = '.';
    for (size_t i = 0; i < n; ++i) {
        char c = p[i];
        if (c == '.') {
            if (label == 0 || previous == '-') return false;
            label = 0;
            numeric = true;
        } else {
            c = ascii_lower(c);
            if (!is_alnum(c) && c != '-') return false;
            if ((label == 0 && c == '-') || ++label > kMaxLabelOctets) return false;
            // "xn--": an A-label, which only libidn2 may judge.
            if (label == 4 && c == '-' && lower[i - 1] == '-' && lower[i - 2] == 'n' &&
                lower[i - 3] == 'x')
                return false;
            numeric = numeric && c >= '0' && c <= '9';
        }
        lower[i] = c;
        previous = c;
    }
    if (label == 0 || previous == '-' || numeric) return false;
    out.assign(lower, n);
    return true;
}

// The senders nearly every request carries, in one pass: a dot-atom local part of ASCII atext
// and a plain domain (above), within every length limit, written to `out` (its local part and
// domain; nothing else is touched). False for anything else: the full parse then decides.
bool parse_plain_sender(std::string_view text, SenderAddress& out) {
    const size_t n = text.size();
    if (n > kMaxAddressOctets) return false;
    size_t at = 0;
    bool after_dot = true;  // a dot at the start would be a leading dot
    for (; at < n && text[at] != '@'; ++at) {
        auto c = static_cast<unsigned char>(text[at]);
        if (c == '.') {
            if (after_dot) return false;
            after_dot = true;
        } else if (kAtext[c]) {
            after_dot = false;
        } else {
            return false;
        }
    }
    if (at == 0 || at == n || after_dot || at > kMaxLocalPartOctets) return false;
    if (!parse_plain_domain(text.substr(at + 1), out.domain)) return false;
    out.local.assign(text.data(), at);
    return true;
}

}  // namespace

DomainParse parse_domain(std::string_view text) {
    DomainParse out;
    if (parse_plain_domain(text, out.domain)) return out;
    return parse_domain_fully(text);
}

DomainParse parse_domain_fully(std::string_view text) {
    DomainParse out;
    bool idna = false;
    if (text.size() > kMaxInputOctets) {
        out.refusal = "bad-address: domain longer than 253 octets";
        return out;
    }
    if (std::string why = normalise_domain(text, out.domain, idna); !why.empty()) {
        out.domain.clear();
        out.refusal = (idna ? "bad-domain: " : "bad-address: ") + why;
    }
    return out;
}

std::string SenderAddress::address() const {
    return local + "@" + domain;
}

bool SenderAddress::needs_smtputf8() const {
    for (char c : local) {
        if (static_cast<unsigned char>(c) >= 0x80) return true;
    }
    return false;
}

std::string SenderAddress::wire_address() const {
    if (needs_smtputf8() && !domain_unicode.empty()) return local + "@" + domain_unicode;
    return address();
}

AddressParse parse_sender(std::string_view text) {
    // Built in place: every request's sender passes here.
    AddressParse out;
    if (parse_plain_sender(text, out.address.emplace())) return out;
    return parse_sender_fully(text);
}

void parse_sender_into(std::string_view text, AddressParse& out) {
    if (!out.address) out.address.emplace();
    out.refusal.clear();
    out.address->domain_unicode.clear();
    if (parse_plain_sender(text, *out.address)) return;
    out = parse_sender_fully(text);
}

// Order: cheap global refusals (size, controls), local part, domain, final length.
AddressParse parse_sender_fully(std::string_view text) {
    if (text.empty()) return refuse("empty");
    if (text.size() > kMaxInputOctets) return refuse("longer than 254 octets");
    for (char ch : text) {
        auto c = static_cast<unsigned char>(ch);
        if (c == '\r' || c == '\n') return refuse("CR or LF");
        if (c == 0) return refuse("NUL");
        if (c < 0x20 || c == 0x7f) return refuse("control character");
    }

    size_t at = 0;
    if (std::string why = scan_local(text, at); !why.empty()) return refuse(why);
    std::string_view local = text.substr(0, at);
    std::string_view domain_text = text.substr(at + 1);
    if (local.size() > kMaxLocalPartOctets) return refuse("local part longer than 64 octets");

    if (!domain_text.empty() && domain_text.front() == '[') {
        if (domain_text.back() != ']') return refuse("unbalanced bracket in domain");
        return {std::nullopt, "address-literal"};
    }
    if (domain_text.find('@') != std::string_view::npos) return refuse("more than one @");

    SenderAddress addr;
    addr.local.assign(local);
    DomainParse domain = parse_domain(domain_text);
    if (!domain) return {std::nullopt, std::move(domain.refusal)};
    addr.domain = std::move(domain.domain);
    if (addr.local.size() + 1 + addr.domain.size() > kMaxAddressOctets)
        return refuse("longer than 254 octets");
    for (char c : domain_text) {
        if (static_cast<unsigned char>(c) >= 0x80) {
            addr.domain_unicode = to_u_labels(addr.domain);
            // The U-label form is only ever an alternative: too long for a path, keep A-labels.
            if (addr.local.size() + 1 + addr.domain_unicode.size() > kMaxAddressOctets)
                addr.domain_unicode.clear();
            break;
        }
    }
    return {std::move(addr), {}};
}

}  // namespace calloutd
