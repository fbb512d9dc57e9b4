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
std::string not_accept_all_key(std::string_view domain) {
    return tagged(domain, "n", "");
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
std::string provider_window_key(std::string_view provider) {
    return "calloutd:provider:" + std::string(provider) + ":w";
}

std::string encode(const CachedVerdict& v) {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(v.probed_at.time_since_epoch())
                  .count();
    std::string out = "v1|";
    out += to_string(v.cls);
    out += '|';
    out += std::to_string(ms);
    out += '|';
    out += v.backoff ? "b" : v.scope == EvidenceScope::domain ? "d" : "";
    out += '|';
    out += clean(v.reason, 200);
    out += '|';
    out += clean(v.remote_reply, 200);
    if (v.refresh_failed_at.time_since_epoch().count() != 0) {
        out += '|';
        out += std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                  v.refresh_failed_at.time_since_epoch())
                                  .count());
    }
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
    // The remote reply never holds a '|': one more means the refresh-failed field follows.
    std::string_view refresh_failed;
    if (auto bar = value.find('|'); bar != std::string_view::npos) {
        refresh_failed = value.substr(bar + 1);
        value = value.substr(0, bar);
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
    v.backoff = f[3].find('b') != std::string_view::npos;
    if (v.backoff || f[3].find('d') != std::string_view::npos) v.scope = EvidenceScope::domain;
    v.reason = std::string(f[4]);
    v.remote_reply = std::string(f[5]);
    long long failed_ms = 0;
    auto [fend, fec] = std::from_chars(refresh_failed.data(),
                                       refresh_failed.data() + refresh_failed.size(), failed_ms);
    if (!refresh_failed.empty() && fec == std::errc() &&
        fend == refresh_failed.data() + refresh_failed.size()) {
        if (failed_ms < 0 || failed_ms > kMaxProbedAtMs) return std::nullopt;  // as above
        v.refresh_failed_at = WallClock::time_point(std::chrono::milliseconds(failed_ms));
    }
    return v;
}

namespace {

// The reply as the scripts build it: an array whose elements are all bulk strings.
std::optional<std::vector<std::string_view>> string_array(const RedisReply& reply) {
    if (!reply.is_array() || reply.elements().empty()) return std::nullopt;
    std::vector<std::string_view> out;
    for (const auto& e : reply.elements()) {
        if (!e.is_string()) return std::nullopt;
        out.emplace_back(e.text());
    }
    return out;
}

}  // namespace

AdmitReply read_admit_reply(const RedisReply& reply, std::string_view token) {
    AdmitReply r;
    auto e = string_array(reply);
    if (!e) return r;
    const auto& f = *e;
    if (f[0] == "admitted" && f.size() == 2 && f[1] == token) {
        r.kind = AdmitReply::Kind::admitted;
    } else if (f[0] == "cached" && f.size() == 3 && (f[2] == "d" || f[2] == "a")) {
        r.kind = AdmitReply::Kind::cached;
        r.cached = decode(f[1]);
        r.cached_scope = std::string(f[2]);
    } else if (f[0] == "in_flight" && f.size() == 1) {
        r.kind = AdmitReply::Kind::in_flight;
    } else if (f[0] == "denied" && f.size() == 2) {
        if (f[1] == "domain") r.denied_by = BudgetKind::domain;
        if (f[1] == "client") r.denied_by = BudgetKind::client;
        if (f[1] == "global") r.denied_by = BudgetKind::global;
        if (r.denied_by) r.kind = AdmitReply::Kind::denied;
    }
    return r;
}

AdmitReply read_admit_mx_reply(const RedisReply& reply, std::string_view token) {
    AdmitReply r;
    auto e = string_array(reply);
    if (!e) return r;
    const auto& f = *e;
    if (f[0] == "admitted" && f.size() == 2 && f[1] == token) {
        r.kind = AdmitReply::Kind::admitted;
    } else if (f[0] == "denied" && f.size() == 2) {
        r.kind = AdmitReply::Kind::denied;
        r.denied_by = f[1] == "provider" ? BudgetKind::provider : BudgetKind::mx;
    }
    return r;
}

// Time comes from Redis TIME so every node uses one clock. Windows are sorted sets of event
// times, trimmed to the period before counting (exact sliding windows, as in memory).
const std::string_view kAdmitScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[11] ~= '1' then
  local d = redis.call('GET', KEYS[1])
  if d and not string.match(d, '^v1|[%w_]+|%d+|%a*[db]%a*|') then d = nil end
  local a = redis.call('GET', KEYS[2])
  if d and string.match(d, '^v1|no_mail_domain|') then return {'cached', d, 'd'} end
  if a then return {'cached', a, 'a'} end
  if d then return {'cached', d, 'd'} end
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
local new, flags = string.match(ARGV[1], '^v1|([%w_]+)|%d+|(%a*)|')
if not new then return redis.error_reply('calloutd: bad verdict encoding') end
local key = KEYS[2]
if string.find(flags, '[db]') then
  key = KEYS[1]
else
  local cur = redis.call('GET', key)
  if cur then
    local cls = string.match(cur, '^v1|([%w_]+)|')
    if cls == 'valid' and new ~= 'valid' and new ~= 'invalid' then return 0 end
  end
end
redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
)lua";

const std::string_view kRandomSecretScript = R"lua(
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
)lua";

// Both windows are checked before either is written, so a connection the provider budget
// refuses costs the MX IP nothing.
const std::string_view kAdmitMxScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[3]) == 1 then return {'denied', 'backoff'} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return {'denied', 'concurrency'} end
local function full(key, count, period)
  if count <= 0 then return false end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
  return redis.call('ZCARD', key) >= count
end
if full(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3])) then return {'denied', 'rate'} end
if full(KEYS[4], tonumber(ARGV[6]), tonumber(ARGV[7])) then return {'denied', 'provider'} end
local member = now .. ':' .. ARGV[1]
for i, w in ipairs({{KEYS[1], ARGV[2], ARGV[3]}, {KEYS[4], ARGV[6], ARGV[7]}}) do
  if tonumber(w[2]) > 0 then
    redis.call('ZADD', w[1], now, member)
    redis.call('PEXPIRE', w[1], w[3])
  end
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {'admitted', ARGV[1]}
)lua";

// The first six fields are kept as they are and the attempt time replaces any older one.
const std::string_view kRefreshFailedScript = R"lua(
local cur = redis.call('GET', KEYS[1])
if not cur or not string.match(cur, '^v1|valid|') then return 0 end
local base = string.match(cur, '^([^|]*|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*)')
if not base then return 0 end
redis.call('SET', KEYS[1], base .. '|' .. ARGV[1], 'KEEPTTL')
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
)lua";

}  // namespace calloutd::redis_schema
