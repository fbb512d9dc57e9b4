// ASCII case folding for protocol text (domains, SMTP replies): locale-independent, bytes >= 0x80
// untouched.
#pragma once

#include <string>
#include <string_view>

namespace calloutd {

inline std::string ascii_lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    return out;
}

}  // namespace calloutd
