// What calloutd keeps in Redis: key names, the compact verdict encoding, and the Lua scripts.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "storage/probe_budget.hpp"
#include "storage/redis_client.hpp"
#include "storage/verdict_cache.hpp"

namespace calloutd::redis_schema {

// Every key of a domain carries the domain as a hash tag, so a Redis Cluster keeps a domain's
// keys in one slot: calloutd:{example.org}:a:alice@example.org.
std::string address_key(std::string_view domain, std::string_view address);
std::string domain_fact_key(std::string_view domain);
// "The domain refused its random local part as unknown" (value "1", cache.domain_ttl).
std::string not_accept_all_key(std::string_view domain);
std::string in_flight_key(std::string_view domain, std::string_view address);
std::string domain_window_key(std::string_view domain);
std::string client_window_key(std::string_view client);
std::string mx_window_key(std::string_view ip);
std::string mx_running_key(std::string_view ip);
std::string mx_backoff_key(std::string_view ip);
// Connections per provider (registrable domain of the MX host name), whatever its MX IPs.
std::string provider_window_key(std::string_view provider);
inline constexpr std::string_view kGlobalWindowKey = "calloutd:global:w";
inline constexpr std::string_view kRunningKey = "calloutd:global:running";
// Published with "<domain> <address>" whenever a verdict is stored.
inline constexpr std::string_view kStoredChannel = "calloutd:stored";
// The cluster's key of the random local parts: created once by the first node (SET NX), read
// by every node, so all nodes ask a domain the same random local part all day.
inline constexpr std::string_view kRandomSecretKey = "calloutd:random-secret";

// "v1|<class>|<probed-at ms>|<flags>|<reason>|<remote reply>[|<refresh failed at ms>]"; '|'
// and control bytes in the free-text fields are replaced, so the value stays one line and
// splits unambiguously. Flags: "d" domain-scoped (a domain fact), "b" a back-off record
// (domain-scoped too), "" otherwise. The last field exists only after a failed refresh (older
// readers take it for part of the remote reply, which is harmless).
std::string encode(const CachedVerdict& v);
std::optional<CachedVerdict> decode(std::string_view value);

// KEYS: domain fact, address verdict, in-flight marker, domain window, client window, global
//       window, running set.
// ARGV: token, marker ttl ms, domain count, domain period ms, client count, client period ms,
//       global count, global period ms, global concurrency, probe lifetime ms, refresh (0/1).
// A count of 0 means unlimited. Returns {"cached", value, "d"|"a"}, {"in_flight"},
// {"denied", kind} or {"admitted", token}. Cache precedence as which_answers(); a value under
// the domain key without a domain flag (written before evidence scopes) is ignored.
extern const std::string_view kAdmitScript;
// KEYS: running set, in-flight marker. ARGV: token.
extern const std::string_view kReleaseScript;
// KEYS: domain fact, address verdict. ARGV: encoded value, ttl ms, channel, message.
// The value's own flags choose the key: only domain-scoped evidence becomes a domain fact.
// Keeps a live valid address verdict unless the new one is valid or invalid (a failed refresh).
extern const std::string_view kStoreScript;
// KEYS: the random secret. ARGV: a candidate. Sets it unless one exists; returns the secret.
extern const std::string_view kRandomSecretScript;
// KEYS: mx window, mx running set, mx back-off, provider window. ARGV: token, count, period ms,
// concurrency, lifetime ms, provider count, provider period ms. Returns {"admitted", token} or
// {"denied", why} with why one of backoff, concurrency, rate, provider.
extern const std::string_view kAdmitMxScript;
// KEYS: address verdict. ARGV: time of the failed refresh (ms), channel, message. Records the
// attempt in a live valid verdict (keeping its TTL), so no node refreshes it again before
// cache.tempfail_ttl has passed; returns 0 when there is no valid verdict to keep.
extern const std::string_view kRefreshFailedScript;

// How the admission scripts' replies are read. Redis may be corrupted or hostile: a reply of
// any other shape is `malformed`, and the caller falls back to local budgets as it does when
// Redis does not answer.
struct AdmitReply {
    enum class Kind { admitted, cached, in_flight, denied, malformed };
    Kind kind = Kind::malformed;
    std::optional<CachedVerdict> cached;  // cached: nullopt when the stored value is unreadable
    std::string cached_scope;             // cached: "d" (domain fact) or "a" (address)
    std::optional<BudgetKind> denied_by;  // denied
};
// kAdmitScript's reply; `token` is the one the admission was sent with, and "admitted" must
// give it back.
AdmitReply read_admit_reply(const RedisReply& reply, std::string_view token);
// kAdmitMxScript's reply: admitted (with `token`), or denied by the provider budget or by the
// MX's own (rate, concurrency, back-off); anything else is malformed.
AdmitReply read_admit_mx_reply(const RedisReply& reply, std::string_view token);

}  // namespace calloutd::redis_schema
