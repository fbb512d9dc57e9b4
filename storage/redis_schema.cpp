// Redis key layout, verdict encoding and the admission/store scripts (run atomically by Redis).
#include "storage/redis_schema.hpp"

#include <charconv>
#include <vector>

namespace calloutd::redis_schema {

namespace {

std::string tagged(std::string_view domain, std::string_view kind, std::string_view rest) {
    std::string k = "calloutd:{";
    k += domain;
    k += "}:";
    k += kind;
    if (!rest.empty()) {
        k += ':';
        k += rest;
    }
    return k;
}

// The latest probe time a stored value may carry: what WallClock can represent, in ms.
constexpr long long kMaxProbedAtMs =
    std::chrono::duration_cast<std::chrono::milliseconds>(WallClock::duration::max()).count();

std::string clean(std::string_view text, size_t max) {
    std::string out;
    out.reserve(std::min(text.size(), max));
    for (char c : text.substr(0, max)) {
        auto u = static_cast<unsigned char>(c);
        out += (c == '|' || u < 0x20 || u == 0x7f) ? ' ' : c;
    }
    return out;
}

}  // namespace

std::string address_key(std::string_view domain, std::string_view address) {
    return tagged(domain, "a", address);
}
std::string domain_fact_key(std::string_view domain) {
    return tagged(domain, "d", "");
}
std::string in_flight_key(std::string_view domain, std::string_view address) {
    return tagged(domain, "f", address);
}
std::string domain_window_key(std::string_view domain) {
    return tagged(domain, "w", "");
}
std::string client_window_key(std::string_view client) {
    return "calloutd:client:" + std::string(client) + ":w";
}
std::string mx_window_key(std::string_view ip) {
    return "calloutd:mx:" + std::string(ip) + ":w";
}
std::string mx_running_key(std::string_view ip) {
    return "calloutd:mx:" + std::string(ip) + ":running";
}
std::string mx_backoff_key(std::string_view ip) {
    return "calloutd:mx:" + std::string(ip) + ":backoff";
}

std::string encode(const CachedVerdict& v) {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(v.probed_at.time_since_epoch())
                  .count();
    std::string out = "v1|";
    out += to_string(v.cls);
    out += '|';
    out += std::to_string(ms);
    out += '|';
    out += v.backoff ? "b" : "";
    out += '|';
    out += clean(v.reason, 200);
    out += '|';
    out += clean(v.remote_reply, 200);
    return out;
}

std::optional<CachedVerdict> decode(std::string_view value) {
    std::vector<std::string_view> f;
    while (f.size() < 5) {
        auto bar = value.find('|');
        if (bar == std::string_view::npos) return std::nullopt;
        f.push_back(value.substr(0, bar));
        value.remove_prefix(bar + 1);
    }
    f.push_back(value);
    if (f[0] != "v1") return std::nullopt;
    auto cls = verdict_class_from_string(f[1]);
    if (!cls) return std::nullopt;
    long long ms = 0;
    auto [end, ec] = std::from_chars(f[2].data(), f[2].data() + f[2].size(), ms);
    if (ec != std::errc() || end != f[2].data() + f[2].size()) return std::nullopt;
    // A corrupted or hostile value must not reach the time_point conversion: system_clock
    // counts nanoseconds, so milliseconds past ~9.2e12 (year 2262) overflow it.
    if (ms < 0 || ms > kMaxProbedAtMs) return std::nullopt;
    CachedVerdict v;
    v.cls = *cls;
    v.probed_at = WallClock::time_point(std::chrono::milliseconds(ms));
    v.backoff = f[3] == "b";
    v.reason = std::string(f[4]);
    v.remote_reply = std::string(f[5]);
    return v;
}

// Time comes from Redis TIME so every node uses one clock. Windows are sorted sets of event
// times, trimmed to the period before counting (exact sliding windows, as in memory).
const std::string_view kAdmitScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[11] ~= '1' then
  local v = redis.call('GET', KEYS[1])
  if v then return {'cached', v, 'd'} end
  v = redis.call('GET', KEYS[2])
  if v then return {'cached', v, 'a'} end
end
if redis.call('EXISTS', KEYS[3]) == 1 then return {'in_flight'} end
local function full(key, count, period)
  if count <= 0 then return false end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
  return redis.call('ZCARD', key) >= count
end
if full(KEYS[4], tonumber(ARGV[3]), tonumber(ARGV[4])) then return {'denied', 'domain'} end
if full(KEYS[5], tonumber(ARGV[5]), tonumber(ARGV[6])) then return {'denied', 'client'} end
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now)
if redis.call('ZCARD', KEYS[7]) >= tonumber(ARGV[9]) then return {'denied', 'global'} end
if full(KEYS[6], tonumber(ARGV[7]), tonumber(ARGV[8])) then return {'denied', 'global'} end
local member = now .. ':' .. ARGV[1]
for i, w in ipairs({{KEYS[4], ARGV[3], ARGV[4]}, {KEYS[5], ARGV[5], ARGV[6]},
                    {KEYS[6], ARGV[7], ARGV[8]}}) do
  if tonumber(w[2]) > 0 then
    redis.call('ZADD', w[1], now, member)
    redis.call('PEXPIRE', w[1], w[3])
  end
end
redis.call('ZADD', KEYS[7], now + tonumber(ARGV[10]), ARGV[1])
redis.call('PEXPIRE', KEYS[7], ARGV[10])
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
return {'admitted', ARGV[1]}
)lua";

const std::string_view kReleaseScript = R"lua(
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
)lua";

const std::string_view kStoreScript = R"lua(
local cur = redis.call('GET', KEYS[1])
if cur then
  local cls = string.match(cur, '^v1|([%w_]+)|')
  local new = string.match(ARGV[1], '^v1|([%w_]+)|')
  local definitive = {valid = true, invalid = true, accept_all = true,
                      null_sender_rejected = true, policy_blocked = true, no_mail_domain = true}
  if cls == 'valid' and not definitive[new] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
)lua";

const std::string_view kAdmitMxScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[3]) == 1 then return {'denied', 'backoff'} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return {'denied', 'concurrency'} end
local count = tonumber(ARGV[2])
if count > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
  if redis.call('ZCARD', KEYS[1]) >= count then return {'denied', 'rate'} end
  redis.call('ZADD', KEYS[1], now, now .. ':' .. ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {'admitted', ARGV[1]}
)lua";

}  // namespace calloutd::redis_schema
