// RedisClient: option checks, command and EVAL framing, cancel, and subscriptions over two links.
#include "storage/redis_client.hpp"

#include <utility>

#include "util/panic.hpp"

namespace calloutd {

std::unique_ptr<RedisClient> RedisClient::create(uv_loop_t* loop, RedisOptions options,
                                                 std::string& error) {
    auto endpoint = parse_redis_url(options.url, error);
    if (!endpoint) return nullptr;
    using std::chrono::milliseconds;
    if (options.command_timeout <= milliseconds(0) || options.connect_timeout <= milliseconds(0)) {
        error = "redis: command and connect timeouts must be positive";
        return nullptr;
    }
    if (options.backoff_min <= milliseconds(0) || options.backoff_max < options.backoff_min) {
        error = "redis: backoff needs 0 < min <= max";
        return nullptr;
    }
    std::vector<RedisHostPort> sentinels;
    for (const auto& text : options.sentinels) {
        auto sentinel = parse_sentinel_address(text, error);
        if (!sentinel) return nullptr;
        sentinels.push_back(std::move(*sentinel));
    }
    if (!sentinels.empty() && options.master_name.empty()) {
        error = "redis.master_name: required with redis.sentinels";
        return nullptr;
    }
    if (!sentinels.empty() && endpoint->kind != RedisEndpoint::Kind::tcp) {
        error = "redis.url: must be redis://... with redis.sentinels (its host is ignored)";
        return nullptr;
    }
    return std::make_unique<RedisClient>(Key{}, loop, std::move(options), std::move(*endpoint),
                                         std::move(sentinels));
}

RedisClient::RedisClient(Key, uv_loop_t* loop, RedisOptions options, RedisEndpoint endpoint,
                         std::vector<RedisHostPort> sentinels)
    : shared_(loop, std::move(options), std::move(endpoint), std::move(sentinels)),
      commands_(shared_, RedisLink::commands) {}

// The links go first (members in reverse order): their contexts are freed and their callbacks
// silenced; then the queue, with whatever it still holds.
RedisClient::~RedisClient() = default;

void RedisClient::set_state_callback(StateCallback callback) {
    shared_.on_state = std::move(callback);
}

void RedisClient::register_script(std::string name, std::string body) {
    RedisScript& s = shared_.scripts[name];
    s.body = std::move(body);
    s.sha.clear();
    if (commands_.ready()) commands_.load_script(name);
}

void RedisClient::start() {
    if (started_) return;
    started_ = true;
    uv_update_time(shared_.loop);  // deadlines count from now, not from the loop's last turn
    commands_.start();
    if (!shared_.channels.empty()) pubsub_link().start();
}

bool RedisClient::is_connected() const {
    return commands_.ready();
}

bool RedisClient::is_subscribed() const {
    return pubsub_ && pubsub_->ready();
}

RedisClient::Id RedisClient::command(const std::vector<std::string_view>& args,
                                     ReplyCallback callback) {
    if (!commands_.ready()) return fail_fast(std::move(callback));
    Id id = next_id_++;
    if (args.empty()) {  // hiredis asserts on an empty command
        shared_.queue.post(
            [cb = std::move(callback)] {
                cb(RedisResult::failure(RedisStatus::server_error, "ERR empty command (not sent)"));
            },
            id);
        return id;
    }
    commands_.send(id, args, uv_now(shared_.loop) + shared_.options.command_timeout.count(),
                   std::move(callback), std::nullopt);
    return id;
}

RedisClient::Id RedisClient::eval(std::string_view script,
                                  const std::vector<std::string_view>& keys,
                                  const std::vector<std::string_view>& args,
                                  ReplyCallback callback) {
    auto it = shared_.scripts.find(script);
    if (it == shared_.scripts.end()) {
        panic("RedisClient::eval", "script '" + std::string(script) + "' was never registered");
    }
    if (!commands_.ready()) return fail_fast(std::move(callback));
    EvalRetry retry{it->first, {}};
    retry.tail.reserve(1 + keys.size() + args.size());
    retry.tail.push_back(std::to_string(keys.size()));
    retry.tail.insert(retry.tail.end(), keys.begin(), keys.end());
    retry.tail.insert(retry.tail.end(), args.begin(), args.end());
    const RedisScript& s = it->second;
    std::vector<std::string_view> argv;
    argv.reserve(2 + retry.tail.size());
    argv.push_back(s.sha.empty() ? "EVAL" : "EVALSHA");
    argv.push_back(s.sha.empty() ? std::string_view(s.body) : std::string_view(s.sha));
    argv.insert(argv.end(), retry.tail.begin(), retry.tail.end());
    Id id = next_id_++;
    commands_.send(id, argv, uv_now(shared_.loop) + shared_.options.command_timeout.count(),
                   std::move(callback), std::move(retry));
    return id;
}

// Without a usable connection nothing is queued: the caller hears not_connected next turn.
RedisClient::Id RedisClient::fail_fast(ReplyCallback callback) {
    Id id = next_id_++;
    ++shared_.stats.not_connected;
    std::string why = "not connected";
    if (!commands_.last_error().empty()) why += ": " + commands_.last_error();
    shared_.queue.post(
        [cb = std::move(callback), why = std::move(why)] {
            cb(RedisResult::failure(RedisStatus::not_connected, why));
        },
        id);
    return id;
}

bool RedisClient::cancel(Id id) {
    return commands_.cancel(id) || shared_.queue.cancel(id);
}

void RedisClient::subscribe(const std::string& channel, MessageCallback on_message) {
    bool added = shared_.channels.insert_or_assign(channel, std::move(on_message)).second;
    if (!started_) return;
    RedisLinkMachine& link = pubsub_link();
    if (!link.started()) {
        link.start();
    } else if (added) {
        link.subscribe(channel);
    }
}

void RedisClient::unsubscribe(const std::string& channel) {
    if (shared_.channels.erase(channel) == 0) return;
    if (pubsub_) pubsub_->unsubscribe(channel);
}

std::size_t RedisClient::in_flight() const {
    return commands_.in_flight();
}

const RedisEndpoint& RedisClient::endpoint() const {
    return commands_.target();
}

const std::string& RedisClient::last_error() const {
    return commands_.last_error();
}

RedisLinkMachine& RedisClient::pubsub_link() {
    if (!pubsub_) pubsub_ = std::make_unique<RedisLinkMachine>(shared_, RedisLink::pubsub);
    return *pubsub_;
}

}  // namespace calloutd
