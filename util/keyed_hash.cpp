// XXH3 inlined from xxhash.h (libxxhash-dev): a few dozen instructions for a short key, and no
// library to load at run time.
#include "util/keyed_hash.hpp"

#include <sys/random.h>

#include <array>
#include <cerrno>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "util/panic.hpp"

namespace calloutd {

static_assert(XXH3_SECRET_DEFAULT_SIZE == 192, "KeyedHash::kSecretBytes");

KeyedHash::KeyedHash(std::span<const unsigned char> seed) {
    if (XXH3_generateSecret(secret_, sizeof secret_, seed.data(), seed.size()) != XXH_OK) {
        panic("KeyedHash", "XXH3_generateSecret refused a secret of the default size");
    }
}

KeyedHash KeyedHash::random() {
    std::array<unsigned char, 32> seed{};
    size_t got = 0;
    while (got < seed.size()) {
        // Blocks only before the kernel's pool is first initialised, early at boot.
        ssize_t n = ::getrandom(seed.data() + got, seed.size() - got, 0);
        if (n > 0) {
            got += static_cast<size_t>(n);
        } else if (n < 0 && errno != EINTR) {
            panic("KeyedHash::random", "getrandom(2) failed");
        }
    }
    return KeyedHash(seed);
}

const KeyedHash& KeyedHash::process() {
    static const KeyedHash instance = random();
    return instance;
}

uint64_t KeyedHash::operator()(std::string_view s) const {
    return XXH3_64bits_withSecret(s.data(), s.size(), secret_, sizeof secret_);
}

}  // namespace calloutd
