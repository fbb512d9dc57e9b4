// Small text helpers for tests that read daemon logs.
#pragma once

#include <cstddef>
#include <string>

namespace calloutd::test {

// Occurrences of `needle` in `text` (overlapping ones counted).
size_t occurrences(const std::string& text, const std::string& needle);
// The whole line of `text` containing the first `needle` ("" if none).
std::string line_with(const std::string& text, const std::string& needle);
// The value of `key` in a key=value log line ("" if absent); a quoted value is unescaped.
std::string log_field(const std::string& line, const std::string& key);

}  // namespace calloutd::test
