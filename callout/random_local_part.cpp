// Stable random local parts: HMAC-SHA256 over the day and the domain, keyed by a secret.
#include "callout/random_local_part.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <systemd/sd-id128.h>

#include <array>
#include <random>

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
    unsigned int len = 0;
    HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
         reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac.data(), &len);
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
