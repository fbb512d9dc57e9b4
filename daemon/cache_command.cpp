// `calloutd cache`: read and delete verdicts in Redis with the keys the daemons use, or in the
// running daemon's memory through its control socket.
#include "daemon/cache_command.hpp"

#include <uv.h>

#include <algorithm>
#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "callout/address.hpp"
#include "daemon/control_client.hpp"
#include "storage/redis_client.hpp"
#include "storage/redis_schema.hpp"
#include "util/uv_timer.hpp"

namespace calloutd {

namespace {

using namespace std::chrono_literals;

// An admin command may wait longer for Redis than a policy request does.
constexpr std::chrono::milliseconds kMinCommandTimeout = 2s;

// Blocking calls over RedisClient on a private loop: one command at a time, each bounded by
// the client's own deadline.
class BlockingRedis {
  public:
    BlockingRedis() { uv_loop_init(&loop_); }
    ~BlockingRedis() {
        client_.reset();
        // Lets the client's handles (and a name lookup in the thread pool) finish closing.
        uv_run(&loop_, UV_RUN_DEFAULT);
        uv_loop_close(&loop_);
    }
    BlockingRedis(const BlockingRedis&) = delete;
    BlockingRedis& operator=(const BlockingRedis&) = delete;

    // Connects (handshake included); false with the reason when Redis cannot be reached.
    bool connect(const RedisSettings& settings, std::string& error) {
        RedisOptions o;
        o.url = settings.url;
        o.sentinels = settings.sentinels;
        o.master_name = settings.master_name;
        o.command_timeout =
            std::max<std::chrono::milliseconds>(settings.timeout, kMinCommandTimeout);
        o.connect_timeout = o.command_timeout;
        client_ = RedisClient::create(&loop_, o, error);
        if (!client_) return false;
        std::optional<RedisStateChange> first;
        client_->set_state_callback([&first](const RedisStateChange& c) {
            if (c.link == RedisLink::commands && !first) first = c;
        });
        client_->start();
        // The client reports the first attempt either way; the guard only bounds a surprise.
        run_until([&first] { return first.has_value(); }, o.connect_timeout * 2);
        client_->set_state_callback(nullptr);
        if (first && first->connected) return true;
        error = first ? first->reason : "no answer from " + to_display_string(client_->endpoint());
        return false;
    }

    RedisResult call(const std::vector<std::string>& args) {
        std::vector<std::string_view> views(args.begin(), args.end());
        std::optional<RedisResult> result;
        client_->command(views, [&result](RedisResult r) { result = std::move(r); });
        run_until([&result] { return result.has_value(); }, 1h);  // the command's deadline ends it
        if (!result) return RedisResult{RedisStatus::timeout, {}, "no answer"};
        if (result->ok() && result->reply.is_error()) {
            return RedisResult{RedisStatus::server_error, {}, result->reply.text()};
        }
        return std::move(*result);
    }

  private:
    void run_until(const std::function<bool()>& done, std::chrono::milliseconds limit) {
        bool expired = false;
        UvTimer guard(&loop_);
        guard.start(limit, [&expired] { expired = true; });
        while (!done() && !expired) uv_run(&loop_, UV_RUN_ONCE);
    }

    uv_loop_t loop_{};
    std::unique_ptr<RedisClient> client_;
};

using Target = CacheTarget;

// How long the daemon may take to answer a control request.
constexpr std::chrono::milliseconds kDaemonTimeout = 10s;

std::string utc_time(WallClock::time_point t) {
    std::time_t secs = WallClock::to_time_t(t);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char text[32] = {};
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return text;
}

std::string quoted(const std::string& s) {
    return "\"" + s + "\"";
}

// Prints one key's decoded value and remaining lifetime; false when the key does not exist.
bool print_entry(BlockingRedis& redis, const std::string& label, const std::string& key,
                 std::FILE* out, std::string& error) {
    RedisResult value = redis.call({"GET", key});
    if (!value.ok()) {
        error = "GET " + key + ": " + value.error;
        return false;
    }
    if (!value.reply.is_string()) {
        std::fprintf(out, "%s: not cached\n", label.c_str());
        return false;
    }
    RedisResult pttl = redis.call({"PTTL", key});
    if (!pttl.ok()) {
        error = "PTTL " + key + ": " + pttl.error;
        return false;
    }
    long long ms = pttl.reply.as_integer();
    std::string ttl = ms >= 0 ? std::to_string(ms / 1000) + "s" : std::string("none");
    auto v = redis_schema::decode(value.reply.text());
    if (!v) {
        std::fprintf(out, "%s: unreadable value %s ttl=%s\n", label.c_str(),
                     quoted(value.reply.text()).c_str(), ttl.c_str());
        return true;
    }
    std::fprintf(out, "%s\n", describe_cache_entry(label, *v, ttl, WallClock::now()).c_str());
    return true;
}

// Deletes keys; returns how many existed, or nullopt on a Redis failure.
std::optional<long long> delete_keys(BlockingRedis& redis, const std::vector<std::string>& keys,
                                     std::string& error) {
    if (keys.empty()) return 0;
    std::vector<std::string> args = {"DEL"};
    args.insert(args.end(), keys.begin(), keys.end());
    RedisResult r = redis.call(args);
    if (!r.ok()) {
        error = "DEL: " + r.error;
        return std::nullopt;
    }
    return r.reply.as_integer();
}

// The daemons drop their near-cache entry for (domain, address) when a verdict is announced on
// the stored channel, so a deletion takes effect at once instead of after redis.near_cache_ttl.
void announce(BlockingRedis& redis, const std::string& domain, const std::string& address) {
    redis.call({"PUBLISH", std::string(redis_schema::kStoredChannel), domain + " " + address});
}

int cache_get(BlockingRedis& redis, const Target& t, std::FILE* out, std::string& error) {
    bool found = false;
    if (!t.address.empty()) {
        found = print_entry(redis, "address " + t.address,
                            redis_schema::address_key(t.domain, t.address), out, error);
        if (!error.empty()) return kCacheRedisFailed;
    }
    found = print_entry(redis, "domain " + t.domain, redis_schema::domain_fact_key(t.domain), out,
                        error) ||
            found;
    if (!error.empty()) return kCacheRedisFailed;
    return found ? kCacheFound : kCacheNothing;
}

int cache_del(BlockingRedis& redis, const Target& t, std::FILE* out, std::string& error) {
    bool address = !t.address.empty();
    // A domain's facts include the "not accept-all" evidence, which would otherwise keep
    // vouching for 2xx answers after the operator cleared the domain.
    if (!address && !delete_keys(redis, {redis_schema::not_accept_all_key(t.domain)}, error))
        return kCacheRedisFailed;
    std::string key = address ? redis_schema::address_key(t.domain, t.address)
                              : redis_schema::domain_fact_key(t.domain);
    auto n = delete_keys(redis, {key}, error);
    if (!n) return kCacheRedisFailed;
    std::string label = address ? "address " + t.address : "domain " + t.domain;
    if (*n == 0) {
        std::fprintf(out, "%s: not cached\n", label.c_str());
        return kCacheNothing;
    }
    announce(redis, t.domain, t.address);
    std::fprintf(out, "%s: deleted\n", label.c_str());
    return kCacheFound;
}

// SCAN, never KEYS: a large keyspace must not block Redis for the other nodes.
int cache_flush(BlockingRedis& redis, const Target& t, std::FILE* out, std::string& error) {
    std::string prefix = redis_schema::address_key(t.domain, "") + ":";
    long long addresses = 0;
    std::string cursor = "0";
    do {
        RedisResult r = redis.call({"SCAN", cursor, "MATCH", prefix + "*", "COUNT", "1000"});
        const auto& e = r.reply.elements();
        if (!r.ok() || !r.reply.is_array() || e.size() != 2 || !e[0].is_string() ||
            !e[1].is_array()) {
            error = "SCAN: " + (r.ok() ? std::string("unexpected reply") : r.error);
            return kCacheRedisFailed;
        }
        cursor = e[0].text();
        std::vector<std::string> keys;
        for (const auto& k : e[1].elements()) {
            if (k.is_string()) keys.push_back(k.text());
        }
        auto n = delete_keys(redis, keys, error);
        if (!n) return kCacheRedisFailed;
        addresses += *n;
        for (const auto& k : keys) announce(redis, t.domain, k.substr(prefix.size()));
    } while (cursor != "0");
    if (!delete_keys(redis, {redis_schema::not_accept_all_key(t.domain)}, error))
        return kCacheRedisFailed;
    auto fact = delete_keys(redis, {redis_schema::domain_fact_key(t.domain)}, error);
    if (!fact) return kCacheRedisFailed;
    if (*fact > 0) announce(redis, t.domain, "");
    std::fprintf(out, "domain %s: deleted %lld address verdict(s)%s\n", t.domain.c_str(), addresses,
                 *fact > 0 ? " and the domain fact" : ", no domain fact");
    return addresses + *fact > 0 ? kCacheFound : kCacheNothing;
}

int run_in_daemon(const Config& config, CacheAction action, const std::string& target,
                  std::FILE* out, std::FILE* err) {
    ControlVerb verb = action == CacheAction::get   ? ControlVerb::cache_get
                       : action == CacheAction::del ? ControlVerb::cache_del
                                                    : ControlVerb::cache_flush;
    std::string error;
    auto reply = ask_daemon(config.server.control_socket, {verb, target}, kDaemonTimeout, error);
    if (!reply) {
        std::fprintf(err, "%s\n", error.c_str());
        return kCacheRedisFailed;
    }
    for (const auto& line : reply->data) std::fprintf(out, "%s\n", line.c_str());
    switch (reply->status) {
        case ControlStatus::ok:
            return kCacheFound;
        case ControlStatus::none:
            return kCacheNothing;
        case ControlStatus::error:
            break;
    }
    std::fprintf(err, "calloutd: %s\n", reply->error.c_str());
    return kCacheUsage;
}

// Redis mode: a deleted verdict may live on in the running daemon's local cache (used while
// Redis is unreachable); ask the daemon to drop it too. Informational: Redis decides the result.
void drop_daemon_copy(const Config& config, CacheAction action, const std::string& target,
                      std::FILE* out, std::FILE* err) {
    if (config.server.control_socket.empty()) return;
    std::string error;
    ControlVerb verb =
        action == CacheAction::del ? ControlVerb::cache_del : ControlVerb::cache_flush;
    auto reply = ask_daemon(config.server.control_socket, {verb, target}, kDaemonTimeout, error);
    if (!reply) {
        std::fprintf(err, "local copy on the running daemon not dropped: %s\n", error.c_str());
        return;
    }
    for (const auto& line : reply->data) std::fprintf(out, "daemon: %s\n", line.c_str());
    if (reply->status == ControlStatus::error) {
        std::fprintf(err, "daemon: %s\n", reply->error.c_str());
    }
}

}  // namespace

std::optional<CacheTarget> parse_cache_target(const std::string& text, std::string& error) {
    bool is_address = text.find('@') != std::string::npos;
    AddressParse p = parse_sender(is_address ? text : "postmaster@" + text);
    if (!p) {
        error = (is_address ? "not a usable address: " : "not a usable domain: ") + p.refusal;
        return std::nullopt;
    }
    return CacheTarget{p.address->domain, is_address ? p.address->address() : std::string()};
}

std::string describe_cache_entry(const std::string& label, const CachedVerdict& v,
                                 const std::string& ttl, WallClock::time_point now) {
    auto age = std::chrono::duration_cast<std::chrono::seconds>(now - v.probed_at);
    std::string out = label + ": class=" + std::string(to_string(v.cls)) +
                      " reason=" + quoted(v.reason) + " probed_at=" + utc_time(v.probed_at) +
                      " age=" + std::to_string(age.count()) + "s ttl=" + ttl;
    if (!v.remote_reply.empty()) out += " reply=" + quoted(v.remote_reply);
    return out;
}

int run_cache_command(const Config& config, CacheAction action, const std::string& target,
                      std::FILE* out, std::FILE* err) {
    if (config.redis.url.empty() && config.server.control_socket.empty()) {
        std::fprintf(err,
                     "%s: neither redis.url nor server.control_socket is set: the in-memory "
                     "cache lives inside the running daemon and is reached through its control "
                     "socket\n",
                     config.path.c_str());
        return kCacheUsage;
    }
    std::string error;
    auto t = parse_cache_target(target, error);
    if (!t) {
        std::fprintf(err, "%s: %s\n", target.c_str(), error.c_str());
        return kCacheUsage;
    }
    if (action == CacheAction::flush && !t->address.empty()) {
        std::fprintf(err, "%s: flush takes a domain; use `cache del` for one address\n",
                     target.c_str());
        return kCacheUsage;
    }
    if (config.redis.url.empty()) return run_in_daemon(config, action, target, out, err);
    BlockingRedis redis;
    if (!redis.connect(config.redis, error)) {
        std::fprintf(err, "redis: %s\n", error.c_str());
        return kCacheRedisFailed;
    }
    int rc = kCacheNothing;
    switch (action) {
        case CacheAction::get:
            rc = cache_get(redis, *t, out, error);
            break;
        case CacheAction::del:
            rc = cache_del(redis, *t, out, error);
            break;
        case CacheAction::flush:
            rc = cache_flush(redis, *t, out, error);
            break;
    }
    if (rc == kCacheRedisFailed) std::fprintf(err, "redis: %s\n", error.c_str());
    if (action != CacheAction::get && rc != kCacheRedisFailed) {
        drop_daemon_copy(config, action, target, out, err);
    }
    return rc;
}

}  // namespace calloutd
