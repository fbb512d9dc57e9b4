// The random local part of the accept-all check: stable per domain for a day, derived from a
// secret, so that a greylisting server lets the retry of the *same* made-up recipient through.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace calloutd {

// Days since the Unix epoch in UTC: the rotation period of the random local part.
int64_t utc_day(std::chrono::system_clock::time_point t);

// "calloutd-check-" + 12 characters of [a-z0-9], taken from HMAC-SHA256(secret, day, domain).
// Only someone who knows the secret can tell it from a random string; everyone who shares the
// secret (a cluster sharing one Redis) asks a domain the same question all day.
std::string stable_random_local_part(std::string_view secret, std::string_view domain, int64_t day);

// A secret that survives restarts on this host: systemd's application-specific machine ID
// (derived from /etc/machine-id without revealing it), or fresh random bytes when the host has
// no machine ID (then it lasts until the process ends).
std::string host_random_secret();

// 32 random bytes as hex, from OpenSSL's CSPRNG: a new cluster secret.
std::string fresh_random_secret();

}  // namespace calloutd
