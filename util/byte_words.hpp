// Byte classes tested eight bytes at a time (SWAR), for text that every request passes through:
// the policy request decoder's control-byte check and the log line's quoting.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace calloutd::byte_words {

inline constexpr uint64_t kOnes = 0x0101010101010101ULL;
inline constexpr uint64_t kHigh = 0x8080808080808080ULL;

inline uint64_t load(const char* p) {
    uint64_t x;
    std::memcpy(&x, p, sizeof x);
    return x;
}

// Bit 7 of a byte of the result is set where that byte of x is below `limit` (<= 0x80). Borrows
// only run upwards, so the lowest flagged byte is exact and a zero result means "none"; flags
// above the lowest may be false.
constexpr uint64_t below(uint64_t x, unsigned char limit) {
    return (x - kOnes * limit) & ~x & kHigh;
}

// Likewise where that byte of x equals `b`.
constexpr uint64_t equal(uint64_t x, unsigned char b) {
    uint64_t y = x ^ (kOnes * b);
    return (y - kOnes) & ~y & kHigh;
}

// Exact variants, for when every flagged byte counts (not only the lowest): no borrow crosses a
// byte, at a few more operations. Bit 7 of a byte of the result is set where that byte of x is
// below `limit` (<= 0x80), or equals `b`.
constexpr uint64_t below_exact(uint64_t x, unsigned char limit) {
    constexpr uint64_t kLow7 = ~kHigh;
    return ~(((x & kLow7) + kOnes * (0x80 - limit)) | x) & kHigh;
}
constexpr uint64_t equal_exact(uint64_t x, unsigned char b) {
    constexpr uint64_t kLow7 = ~kHigh;
    uint64_t y = x ^ (kOnes * b);
    return ~(((y & kLow7) + kLow7) | y) & kHigh;
}

// Index (0..7) of the lowest flagged byte of a non-zero mask from below()/equal() (little
// endian: byte 0 is the first in memory).
inline size_t first(uint64_t mask) {
    static_assert(std::endian::native == std::endian::little);
    return static_cast<size_t>(std::countr_zero(mask)) / 8;
}

}  // namespace calloutd::byte_words
