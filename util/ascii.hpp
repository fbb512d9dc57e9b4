// ASCII character classes and case folding for protocol text (domains, SMTP replies):
// locale-independent, bytes >= 0x80 untouched.
#pragma once

#include <string>
#include <string_view>

namespace calloutd {

constexpr bool is_alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

constexpr char ascii_lower(char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

inline std::string ascii_lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = ascii_lower(c);
    return out;
}

// Whether s begins with `lower_prefix` (given in lower case), ignoring ASCII case; no copy.
constexpr bool starts_with_ascii_nocase(std::string_view s, std::string_view lower_prefix) {
    if (s.size() < lower_prefix.size()) return false;
    for (size_t i = 0; i < lower_prefix.size(); ++i) {
        if (ascii_lower(s[i]) != lower_prefix[i]) return false;
    }
    return true;
}

}  // namespace calloutd
