// Small text helpers for tests that read daemon logs.
#include "support/text.hpp"

namespace calloutd::test {

size_t occurrences(const std::string& text, const std::string& needle) {
    size_t n = 0;
    for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) {
        ++n;
    }
    return n;
}

std::string line_with(const std::string& text, const std::string& needle) {
    auto pos = text.find(needle);
    if (pos == std::string::npos) return {};
    auto begin = text.rfind('\n', pos);
    begin = begin == std::string::npos ? 0 : begin + 1;
    return text.substr(begin, text.find('\n', pos) - begin);
}

std::string log_field(const std::string& line, const std::string& key) {
    const std::string needle = " " + key + "=";
    auto pos = line.find(needle);
    if (pos == std::string::npos) return {};
    pos += needle.size();
    if (pos >= line.size() || line[pos] != '"') return line.substr(pos, line.find(' ', pos) - pos);
    std::string out;
    for (++pos; pos < line.size() && line[pos] != '"'; ++pos) {
        if (line[pos] == '\\' && pos + 1 < line.size()) ++pos;
        out += line[pos];
    }
    return out;
}

}  // namespace calloutd::test
