// The exact SWAR byte classes flag every byte of a word that is in the class, whatever its
// neighbours (the policy decoder's portable path relies on every flag, not only the lowest).
#include "util/byte_words.hpp"

#include <gtest/gtest.h>

#include <cstring>

namespace calloutd {
namespace {

using namespace byte_words;

uint64_t word_with(unsigned char fill, size_t at, unsigned char b) {
    unsigned char bytes[8];
    std::memset(bytes, fill, sizeof bytes);
    bytes[at] = b;
    uint64_t x;
    std::memcpy(&x, bytes, sizeof x);
    return x;
}

uint64_t flag(size_t at) {
    return uint64_t{0x80} << (8 * at);
}

TEST(ByteWords, ExactClassesFlagEveryByteInTheClassAndNoOther) {
    // Neighbours below, inside and above each class, so a borrow or carry would show.
    for (unsigned fill : {0x00u, 0x1fu, 0x20u, 0x3du, 0x7fu, 0x80u, 0xffu}) {
        for (size_t at = 0; at < 8; ++at) {
            for (unsigned b = 0; b < 256; ++b) {
                uint64_t x =
                    word_with(static_cast<unsigned char>(fill), at, static_cast<unsigned char>(b));
                auto expect = [&](auto in_class) {
                    uint64_t m = 0;
                    for (size_t k = 0; k < 8; ++k)
                        if (in_class(k == at ? b : fill)) m |= flag(k);
                    return m;
                };
                EXPECT_EQ(below_exact(x, 0x20), expect([](unsigned c) { return c < 0x20; }))
                    << std::hex << x;
                EXPECT_EQ(below_exact(x, 0x80), expect([](unsigned c) { return c < 0x80; }))
                    << std::hex << x;
                EXPECT_EQ(equal_exact(x, 0x7f), expect([](unsigned c) { return c == 0x7f; }))
                    << std::hex << x;
                EXPECT_EQ(equal_exact(x, '='), expect([](unsigned c) { return c == '='; }))
                    << std::hex << x;
            }
        }
    }
}

}  // namespace
}  // namespace calloutd
