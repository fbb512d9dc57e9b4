// Stable random local parts: HMAC-SHA256 over the day and the domain, keyed by a secret.
#include "callout/random_local_part.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <systemd/sd-id128.h>

#include <array>
#include <memory>
#include <random>
#include <string>

#include "callout/address.hpp"

namespace calloutd {

namespace {

// Identifies calloutd to sd_id128_get_machine_app_specific(): the per-host secret is an HMAC of
// the machine ID under this key, so it reveals nothing about /etc/machine-id.
constexpr sd_id128_t kAppId =
    SD_ID128_MAKE(f3, f6, c2, 06, 53, b0, 4d, 6a, a9, 3c, b8, 04, d6, 78, 51, 77);

std::string hex(const unsigned char* data, size_t n) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    out.reserve(n * 2);
    for (size_t i = 0; i < n; ++i) {
        out += kDigits[data[i] >> 4];
        out += kDigits[data[i] & 0x0f];
    }
    return out;
}

// HMAC-SHA256 (RFC 2104) with the digest fetched once and the key's inner and outer states
// prepared once per secret. OpenSSL 3's one-shot HMAC() fetches both algorithms from the
// provider tables on every call: a quarter of the work of starting a probe (bench/README.md).
class KeyedSha256 {
  public:
    // Writes the 32-byte MAC of `message` under `key`; false if OpenSSL failed (use HMAC()).
    bool mac(std::string_view key, std::string_view message, unsigned char* out) {
        if (!md_ || !inner_ || !outer_ || !work_) return false;
        if (!keyed_ || key != key_) {
            keyed_ = rekey(key);
            if (!keyed_) return false;
        }
        std::array<unsigned char, EVP_MAX_MD_SIZE> inner{};
        unsigned int len = 0;
        return EVP_MD_CTX_copy_ex(work_.get(), inner_.get()) == 1 &&
               EVP_DigestUpdate(work_.get(), message.data(), message.size()) == 1 &&
               EVP_DigestFinal_ex(work_.get(), inner.data(), &len) == 1 &&
               EVP_MD_CTX_copy_ex(work_.get(), outer_.get()) == 1 &&
               EVP_DigestUpdate(work_.get(), inner.data(), len) == 1 &&
               EVP_DigestFinal_ex(work_.get(), out, &len) == 1;
    }

  private:
    static constexpr size_t kBlock = 64;  // SHA-256's block size

    bool rekey(std::string_view key) {
        key_.assign(key);
        // A key longer than a block is replaced by its digest (RFC 2104 section 2).
        std::array<unsigned char, EVP_MAX_MD_SIZE> hashed{};
        unsigned int hashed_len = 0;
        if (key.size() > kBlock) {
            if (EVP_Digest(key.data(), key.size(), hashed.data(), &hashed_len, md_.get(),
                           nullptr) != 1)
                return false;
            key = std::string_view(reinterpret_cast<const char*>(hashed.data()), hashed_len);
        }
        std::array<unsigned char, kBlock> ipad{};
        std::array<unsigned char, kBlock> opad{};
        ipad.fill(0x36);
        opad.fill(0x5c);
        for (size_t i = 0; i < key.size(); ++i) {
            ipad[i] ^= static_cast<unsigned char>(key[i]);
            opad[i] ^= static_cast<unsigned char>(key[i]);
        }
        return EVP_DigestInit_ex2(inner_.get(), md_.get(), nullptr) == 1 &&
               EVP_DigestUpdate(inner_.get(), ipad.data(), ipad.size()) == 1 &&
               EVP_DigestInit_ex2(outer_.get(), md_.get(), nullptr) == 1 &&
               EVP_DigestUpdate(outer_.get(), opad.data(), opad.size()) == 1;
    }

    struct MdFree {
        void operator()(EVP_MD* m) const { EVP_MD_free(m); }
    };
    struct CtxFree {
        void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
    };
    std::unique_ptr<EVP_MD, MdFree> md_{EVP_MD_fetch(nullptr, "SHA256", nullptr)};
    std::unique_ptr<EVP_MD_CTX, CtxFree> inner_{EVP_MD_CTX_new()};
    std::unique_ptr<EVP_MD_CTX, CtxFree> outer_{EVP_MD_CTX_new()};
    std::unique_ptr<EVP_MD_CTX, CtxFree> work_{EVP_MD_CTX_new()};
    std::string key_;
    bool keyed_ = false;
};

}  // namespace

int64_t utc_day(std::chrono::system_clock::time_point t) {
    return std::chrono::floor<std::chrono::days>(t).time_since_epoch().count();
}

std::string stable_random_local_part(std::string_view secret, std::string_view domain,
                                     int64_t day) {
    std::string message = std::to_string(day);
    message += '\n';
    message += domain;
    std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
    thread_local KeyedSha256 hmac;
    if (!hmac.mac(secret, message, mac.data())) {
        unsigned int len = 0;
        HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
             reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac.data(),
             &len);
    }
    static constexpr std::string_view kAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
    std::string out(kRandomLocalPrefix);
    for (size_t i = 0; i < kRandomLocalLength; ++i) out += kAlphabet[mac[i] % kAlphabet.size()];
    return out;
}

std::string host_random_secret() {
    sd_id128_t id;
    if (sd_id128_get_machine_app_specific(kAppId, &id) == 0) return hex(id.bytes, sizeof id.bytes);
    static const std::string for_this_process = fresh_random_secret();
    return for_this_process;
}

std::string fresh_random_secret() {
    std::array<unsigned char, 32> bytes{};
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
        // OpenSSL's CSPRNG cannot fail on Linux once seeded from getrandom(); if it ever does,
        // the secret only has to be unguessable by remote servers, not cryptographically fresh.
        std::random_device rd;
        for (auto& b : bytes) b = static_cast<unsigned char>(rd());
    }
    return hex(bytes.data(), bytes.size());
}

}  // namespace calloutd
