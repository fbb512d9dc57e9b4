// A string hash keyed with a secret drawn when the process starts, for the in-memory tables
// whose keys come from outside (sender addresses and domains, Postfix instance ids): without
// the secret nobody can choose keys that collide, so nobody can turn a table's lookups into
// long probe runs (hash flooding). std::hash of a string is MurmurHash with a fixed seed, the
// same in every process.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace calloutd {

// XXH3 (libxxhash) with a secret derived from a seed by XXH3_generateSecret. Not a MAC: it
// keeps an outsider from predicting collisions, which is all a hash table needs.
class KeyedHash {
  public:
    // The secret is derived from `seed` (any bytes): the same seed gives the same hash.
    explicit KeyedHash(std::span<const unsigned char> seed);
    // A new instance with 32 bytes from getrandom(2).
    static KeyedHash random();
    // The process's instance, made by random() on first use.
    static const KeyedHash& process();

    uint64_t operator()(std::string_view s) const;

  private:
    static constexpr size_t kSecretBytes = 192;  // XXH3_SECRET_DEFAULT_SIZE
    alignas(64) unsigned char secret_[kSecretBytes];
};

// For LruMap and unordered containers keyed by std::string.
struct KeyedStringHash {
    size_t operator()(std::string_view s) const {
        return static_cast<size_t>(KeyedHash::process()(s));
    }
};

}  // namespace calloutd
