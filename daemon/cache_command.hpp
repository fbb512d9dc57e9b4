// `calloutd cache get|del|flush`: the admin's view of the verdicts shared through Redis.
#pragma once

#include <cstdio>
#include <string>

#include "daemon/config.hpp"

namespace calloutd {

enum class CacheAction { get, del, flush };

// Exit codes of `calloutd cache`.
inline constexpr int kCacheFound = 0;        // get: something cached; del/flush: keys deleted
inline constexpr int kCacheNothing = 1;      // get: not cached; del/flush: nothing to delete
inline constexpr int kCacheUsage = 2;        // no redis.url, bad target, flush of an address
inline constexpr int kCacheRedisFailed = 3;  // Redis unreachable, slow or answering errors

// TARGET is an address (user@domain) or a domain. get prints the address verdict and the domain
// fact; del deletes the address verdict (address) or the domain fact (domain); flush deletes a
// domain's fact and every address verdict of it. Results go to `out`, errors to `err`.
int run_cache_command(const Config& config, CacheAction action, const std::string& target,
                      std::FILE* out, std::FILE* err);

}  // namespace calloutd
