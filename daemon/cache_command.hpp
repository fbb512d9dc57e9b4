// `calloutd cache get|del|flush`: the admin's view of cached verdicts, in Redis or in the running
// daemon's memory (asked over server.control_socket).
#pragma once

#include <cstdio>
#include <optional>
#include <string>

#include "daemon/config.hpp"
#include "storage/verdict_cache.hpp"

namespace calloutd {

enum class CacheAction { get, del, flush };

// Exit codes of `calloutd cache`.
inline constexpr int kCacheFound = 0;    // get: something cached; del/flush: keys deleted
inline constexpr int kCacheNothing = 1;  // get: not cached; del/flush: nothing to delete
inline constexpr int kCacheUsage = 2;    // neither redis.url nor control_socket, bad target, flush
                                         // of an address
inline constexpr int kCacheRedisFailed = 3;  // Redis or the daemon unreachable, slow or failing

// TARGET is an address (user@domain) or a domain. get prints the address verdict and the domain
// fact; del deletes the address verdict (address) or the domain fact (domain); flush deletes a
// domain's fact and every address verdict of it. With redis.url the shared cache in Redis is
// used, and del/flush also drop the running daemon's local copies over server.control_socket;
// without it the running daemon's in-memory cache is asked over server.control_socket.
// Results go to `out`, errors to `err`.
int run_cache_command(const Config& config, CacheAction action, const std::string& target,
                      std::FILE* out, std::FILE* err);

struct CacheTarget {
    std::string domain;   // A-label, lower case: as the daemon keys it
    std::string address;  // empty for a domain target
};
// Normalised exactly as a policy request's sender would be, so the keys match the daemon's.
std::optional<CacheTarget> parse_cache_target(const std::string& text, std::string& error);

// "LABEL: class=C reason="R" probed_at=T age=Ns ttl=Ns[ reply="..."]", as both backends print.
std::string describe_cache_entry(const std::string& label, const CachedVerdict& v,
                                 const std::string& ttl, WallClock::time_point now);

}  // namespace calloutd
