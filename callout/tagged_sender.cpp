// Canonical keys of tagged senders: strict recognisers for the forms in tagged_sender.hpp; an
// address that does not match a form exactly keeps its own key.
#include "callout/tagged_sender.hpp"

#include <optional>

#include "util/ascii.hpp"

namespace calloutd {

namespace {

bool all_of(std::string_view s, size_t min, size_t max, bool (*ok)(char)) {
    if (s.size() < min || s.size() > max) return false;
    for (char c : s) {
        if (!ok(c)) return false;
    }
    return true;
}

// What is left of a local part after a tag: a usable local part on its own.
bool usable_local(std::string_view s) {
    return !s.empty() && s.front() != '.' && s.back() != '.' && s.front() != '=';
}

// A host name as it appears encoded in SRS and VERP local parts ("example.org").
bool looks_like_domain(std::string_view s) {
    if (s.empty() || s.find('.') == std::string_view::npos) return false;
    if (s.front() == '.' || s.back() == '.' || s.front() == '-' || s.back() == '-') return false;
    for (char c : s) {
        if (!is_alnum(c) && c != '.' && c != '-') return false;
    }
    return s.find("..") == std::string_view::npos;
}

// Splits off the text up to the next `sep`; nullopt when there is none.
std::optional<std::string_view> take(std::string_view& rest, std::string_view sep) {
    auto at = rest.find(sep);
    if (at == std::string_view::npos) return std::nullopt;
    std::string_view head = rest.substr(0, at);
    rest.remove_prefix(at + sep.size());
    return head;
}

// BATV: the local part without its signature, or nullopt when `local` is not BATV-signed.
std::optional<std::string_view> strip_batv(std::string_view local) {
    struct Form {
        std::string_view prefix;
        std::string_view separator;
    };
    static constexpr Form kForms[] = {{"prvs=", "="}, {"msprvs1=", "="}, {"btv1==", "=="}};
    for (const auto& f : kForms) {
        if (!starts_with_ascii_nocase(local, f.prefix)) continue;
        std::string_view rest = local.substr(f.prefix.size());
        auto tag = take(rest, f.separator);
        if (!tag || !all_of(*tag, 4, 64, is_alnum) || !usable_local(rest)) return std::nullopt;
        return rest;
    }
    return std::nullopt;
}

// The body of an SRS0 address after "SRS0=": HASH=TT=orig.domain=orig-local. Returns
// "orig.domain=orig-local" (domain lower-cased), or nullopt.
std::optional<std::string> srs0_base(std::string_view body) {
    auto hash = take(body, "=");
    auto stamp = take(body, "=");
    auto domain = take(body, "=");
    auto base64 = [](char c) { return is_alnum(c) || c == '+' || c == '/'; };
    auto base32 = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7');
    };
    if (!hash || !stamp || !domain || !all_of(*hash, 1, 64, base64) ||
        !all_of(*stamp, 2, 2, base32) || !looks_like_domain(*domain) || !usable_local(body)) {
        return std::nullopt;
    }
    return ascii_lower(*domain) + "=" + std::string(body);
}

bool srs_separator(char c) {
    return c == '=' || c == '+' || c == '-';
}

// SRS0/SRS1: the canonical local part, or nullopt when `local` is not an SRS address.
std::optional<std::pair<std::string, std::string_view>> srs_key(std::string_view local) {
    if (local.size() < 6 || !srs_separator(local[4])) return std::nullopt;
    std::string_view body = local.substr(5);
    if (starts_with_ascii_nocase(local, "srs0")) {
        auto base = srs0_base(body);
        if (!base) return std::nullopt;
        return std::pair{"SRS0=" + *base, std::string_view("srs0")};
    }
    if (starts_with_ascii_nocase(local, "srs1")) {
        auto hash = take(body, "=");
        auto first = take(body, "==");
        if (!hash || hash->empty() || !first || !looks_like_domain(*first)) return std::nullopt;
        auto base = srs0_base(body);
        if (!base) return std::nullopt;
        return std::pair{"SRS1=" + ascii_lower(*first) + "==" + *base, std::string_view("srs1")};
    }
    return std::nullopt;
}

// VERP: the list's base local part, or nullopt when `local` is not a VERP bounce address.
std::optional<std::string> verp_base(std::string_view local) {
    // ezmlm: list-return-NUM-rcpt=rcpt.domain (or an empty rcpt without VERP).
    std::string lower = ascii_lower(local);
    if (auto at = lower.find("-return-"); at != std::string::npos && at > 0) {
        std::string_view rest = local.substr(at + 8);
        auto number = take(rest, "-");
        if (number && all_of(*number, 1, 20, [](char c) { return c >= '0' && c <= '9'; })) {
            auto eq = rest.rfind('=');
            bool encoded =
                eq != std::string_view::npos && eq > 0 && looks_like_domain(rest.substr(eq + 1));
            if (rest.empty() || encoded) return std::string(local.substr(0, at)) + "-return";
        }
    }
    // "+=" delimiters: base+rcpt=rcpt.domain.
    auto plus = local.find('+');
    if (plus == std::string_view::npos || plus == 0) return std::nullopt;
    std::string_view base = local.substr(0, plus);
    std::string_view encoded = local.substr(plus + 1);
    auto eq = encoded.rfind('=');
    if (eq == std::string_view::npos || eq == 0 || !looks_like_domain(encoded.substr(eq + 1)) ||
        !usable_local(base)) {
        return std::nullopt;
    }
    return std::string(base);
}

}  // namespace

SenderKey sender_key(const SenderAddress& sender) {
    SenderKey out{sender.address(), ""};
    std::string_view local = sender.local;
    if (local.empty() || local.front() == '"') return out;
    std::string_view form;
    if (auto core = strip_batv(local)) {
        local = *core;
        form = "batv";
    }
    if (auto srs = srs_key(local)) {
        out.key = srs->first + "@" + sender.domain;
        out.form = form.empty() ? srs->second : form;
        return out;
    }
    if (auto base = verp_base(local)) {
        out.key = *base + "@" + sender.domain;
        out.form = form.empty() ? std::string_view("verp") : form;
        return out;
    }
    if (!form.empty()) {
        out.key = std::string(local) + "@" + sender.domain;
        out.form = form;
    }
    return out;
}

}  // namespace calloutd
