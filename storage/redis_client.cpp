// RedisClient: hiredis 0.14 async contexts on libuv, with our own deadlines and reconnects.
#include "storage/redis_client.hpp"

#include <netdb.h>
#include <sys/socket.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <utility>

#include "callout/ip_net.hpp"

namespace calloutd {

namespace {

constexpr std::uint64_t kNoDeadline = UINT64_MAX;

// hiredis carries one void* per command: ours is the command id (0 = pub/sub traffic).
void* id_to_privdata(std::uint64_t id) {
    return reinterpret_cast<void*>(static_cast<std::uintptr_t>(id));
}
std::uint64_t privdata_to_id(void* privdata) {
    return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(privdata));
}

std::string hiredis_error(const redisAsyncContext* ac) {
    if (ac->err == 0 || ac->errstr == nullptr || ac->errstr[0] == '\0') {
        return "connection closed";
    }
    return ac->errstr;
}

RedisResult failure(RedisStatus status, std::string why) {
    RedisResult r;
    r.status = status;
    r.error = std::move(why);
    return r;
}

// hiredis <-> libuv glue, instead of <hiredis/adapters/libuv.h>: on POLLERR (a connection
// reset with unread data, a refused non-blocking connect) libuv stops the poll handle and calls
// back with UV_EBADF, and hiredis 0.14's adapter returns on any non-zero status, so the
// context would hang silently until some deadline expired. Here an error status lets hiredis
// read the socket, which surfaces the real errno (ECONNRESET, ECONNREFUSED) and tears it down.
struct UvRedisEvents {
    uv_poll_t poll{};
    redisAsyncContext* context = nullptr;  // cleared by cleanup: hiredis is freeing it
    int events = 0;
};

void uv_redis_update(UvRedisEvents* p, int events) {
    p->events = events;
    if (events != 0) {
        uv_poll_start(&p->poll, events, [](uv_poll_t* handle, int status, int ready) {
            auto* ev = static_cast<UvRedisEvents*>(handle->data);
            if (status < 0) ready = UV_READABLE | (ev->events & UV_WRITABLE);
            if (ev->context != nullptr && (ready & UV_READABLE)) redisAsyncHandleRead(ev->context);
            if (ev->context != nullptr && (ready & UV_WRITABLE)) {
                redisAsyncHandleWrite(ev->context);
            }
            // libuv stopped the handle on the error; hiredis still owns a live socket.
            if (status < 0 && ev->context != nullptr) uv_redis_update(ev, ev->events);
        });
    } else {
        uv_poll_stop(&p->poll);
    }
}

// Attaches a fresh context to the loop; the glue frees itself when the poll handle is closed.
bool uv_redis_attach(redisAsyncContext* ac, uv_loop_t* loop) {
    if (ac->ev.data != nullptr) return false;
    auto p = std::make_unique<UvRedisEvents>();
    if (uv_poll_init(loop, &p->poll, ac->c.fd) != 0) return false;
    p->poll.data = p.get();
    p->context = ac;
    ac->ev.addRead = [](void* d) {
        auto* ev = static_cast<UvRedisEvents*>(d);
        uv_redis_update(ev, ev->events | UV_READABLE);
    };
    ac->ev.delRead = [](void* d) {
        auto* ev = static_cast<UvRedisEvents*>(d);
        uv_redis_update(ev, ev->events & ~UV_READABLE);
    };
    ac->ev.addWrite = [](void* d) {
        auto* ev = static_cast<UvRedisEvents*>(d);
        uv_redis_update(ev, ev->events | UV_WRITABLE);
    };
    ac->ev.delWrite = [](void* d) {
        auto* ev = static_cast<UvRedisEvents*>(d);
        uv_redis_update(ev, ev->events & ~UV_WRITABLE);
    };
    ac->ev.cleanup = [](void* d) {
        auto* ev = static_cast<UvRedisEvents*>(d);
        ev->context = nullptr;
        uv_close(reinterpret_cast<uv_handle_t*>(&ev->poll), [](uv_handle_t* h) {
            std::unique_ptr<UvRedisEvents> owned(static_cast<UvRedisEvents*>(h->data));
        });
    };
    ac->ev.data = p.release();  // owned by the poll handle's close callback from now on
    return true;
}

// hiredis's own reply functions, with createArray bounded (see bound_reply_arrays()).
redisReplyObjectFunctions g_bounded_functions;
void* (*g_create_array)(const redisReadTask*, int) = nullptr;

void* bounded_create_array(const redisReadTask* task, int elements) {
    if (elements < 0 || elements > kMaxReplyElements) return nullptr;
    return g_create_array(task, elements);
}

// A decimal TCP port, 1..65535.
bool parse_port(const std::string& text, long& port) {
    if (text.empty() || text.size() > 5) return false;
    port = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return false;
        port = port * 10 + (c - '0');
    }
    return port >= 1 && port <= 65535;
}

}  // namespace

void bound_reply_arrays(redisReader* reader) {
    // Every reader starts with hiredis's static default functions: copy them once.
    static const bool copied = [reader] {
        g_bounded_functions = *reader->fn;
        g_create_array = reader->fn->createArray;
        g_bounded_functions.createArray = &bounded_create_array;
        return true;
    }();
    (void)copied;
    if (reader->fn == &g_bounded_functions) return;
    if (reader->fn->createArray != g_create_array) {
        std::fprintf(stderr, "bound_reply_arrays: the reader does not use hiredis's functions\n");
        std::abort();
    }
    reader->fn = &g_bounded_functions;
}

// ---------------------------------------------------------------------------------------------
// RedisReply

RedisReply RedisReply::integer(long long value) {
    RedisReply r;
    r.type_ = Type::integer;
    r.integer_ = value;
    return r;
}
RedisReply RedisReply::string(std::string text) {
    RedisReply r;
    r.type_ = Type::string;
    r.text_ = std::move(text);
    return r;
}
RedisReply RedisReply::status(std::string text) {
    RedisReply r = string(std::move(text));
    r.type_ = Type::status;
    return r;
}
RedisReply RedisReply::error(std::string text) {
    RedisReply r = string(std::move(text));
    r.type_ = Type::error;
    return r;
}
RedisReply RedisReply::array(std::vector<RedisReply> elements) {
    RedisReply r;
    r.type_ = Type::array;
    r.elements_ = std::move(elements);
    return r;
}

RedisReply RedisReply::from_hiredis(const redisReply* reply) {
    if (reply == nullptr) return {};
    switch (reply->type) {
        case REDIS_REPLY_INTEGER:
            return integer(reply->integer);
        case REDIS_REPLY_STRING:
            return string(std::string(reply->str, reply->len));
        case REDIS_REPLY_STATUS:
            return status(std::string(reply->str, reply->len));
        case REDIS_REPLY_ERROR:
            return error(std::string(reply->str, reply->len));
        case REDIS_REPLY_ARRAY: {
            std::vector<RedisReply> elements;
            elements.reserve(reply->elements);
            for (std::size_t i = 0; i < reply->elements; ++i) {
                elements.push_back(from_hiredis(reply->element[i]));
            }
            return array(std::move(elements));
        }
        default:
            return {};
    }
}

std::string_view to_string(RedisReply::Type t) {
    switch (t) {
        case RedisReply::Type::nil:
            return "nil";
        case RedisReply::Type::integer:
            return "integer";
        case RedisReply::Type::string:
            return "string";
        case RedisReply::Type::status:
            return "status";
        case RedisReply::Type::error:
            return "error";
        case RedisReply::Type::array:
            return "array";
    }
    return "?";
}

std::string_view to_string(RedisStatus s) {
    switch (s) {
        case RedisStatus::ok:
            return "ok";
        case RedisStatus::server_error:
            return "server_error";
        case RedisStatus::timeout:
            return "timeout";
        case RedisStatus::disconnected:
            return "disconnected";
        case RedisStatus::not_connected:
            return "not_connected";
    }
    return "?";
}

std::string_view to_string(RedisLink l) {
    return l == RedisLink::commands ? "commands" : "pubsub";
}

// ---------------------------------------------------------------------------------------------
// Connection: owns one redisAsyncContext (RAII) and is what ac->data points at.
//
// hiredis runs the callbacks of pending commands with a NULL reply while it frees a context,
// whether we free it (redisAsyncFree) or it does so itself after an I/O error. `abandoned`
// tells those late callbacks that the link has already failed the commands (or the client is
// going away): they must do nothing. `ac` is cleared when hiredis frees the context itself,
// so we never free it twice.
struct RedisClient::Connection {
    Connection(redisAsyncContext* context, Link* owner, std::uint64_t gen)
        : ac(context), link(owner), generation(gen) {}
    ~Connection() {
        abandoned = true;
        if (ac != nullptr) redisAsyncFree(std::exchange(ac, nullptr));
    }
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    redisAsyncContext* ac;
    Link* link;
    std::uint64_t generation;
    bool abandoned = false;
};

// ---------------------------------------------------------------------------------------------
// Link: one connection with its reconnect loop, for commands or for pub/sub.

class RedisClient::Link {
  public:
    // (discovering →) resolving → connecting → handshaking → (subscribing →) ready; any failure
    // → backoff → (discovering →) resolving ... The generation number grows with every attempt and
    // every failure, so a late answer (name lookup, handshake reply, timer) from an older attempt
    // is dropped.
    enum class State {
        idle,
        discovering,
        resolving,
        connecting,
        handshaking,
        subscribing,
        ready,
        backoff
    };

    Link(RedisClient& client, RedisLink role)
        : client_(client),
          role_(role),
          target_(client.endpoint_),
          attempt_timer_(client.loop_),
          deadline_timer_(client.loop_) {}

    bool started() const { return state_ != State::idle; }
    bool ready() const { return state_ == State::ready; }
    const std::string& last_error() const { return last_error_; }
    std::size_t in_flight() const { return pending_.size(); }
    const RedisEndpoint& target() const { return target_; }

    void connect();
    void send_user(Id id, const std::vector<std::string_view>& args, std::uint64_t deadline,
                   ReplyCallback callback, std::string eval_script, std::vector<std::string> tail);
    bool cancel(Id id);
    void load_script(const std::string& name, const std::string& body);
    void subscribe_one(const std::string& channel);
    void unsubscribe_one(const std::string& channel);

    static void on_connect(const redisAsyncContext* ac, int status);
    static void on_disconnect(const redisAsyncContext* ac, int status);
    static void on_reply(redisAsyncContext* ac, void* reply, void* privdata);

  private:
    struct Pending {
        ReplyCallback callback;
        std::uint64_t deadline = kNoDeadline;
        bool internal = false;    // handshake step: dropped, not failed, when the link fails
        std::string eval_script;  // eval(): the script name, for the EVAL retry on NOSCRIPT
        std::vector<std::string> eval_tail;  // numkeys, keys, args
        bool retried = false;
    };
    struct ResolveRequest {
        uv_getaddrinfo_t req{};
        std::weak_ptr<int> alive;
        Link* link = nullptr;
        std::uint64_t generation = 0;
    };

    void connect_to_target();
    void ask_sentinel(std::size_t asked);
    void on_master_address(RedisResult r);
    void sentinel_failed(const std::string& reason);
    void drop_connection();
    std::string sentinel_name() const;
    void resolve();
    static void on_resolved(uv_getaddrinfo_t* req, int status, addrinfo* res);
    void open(const std::string& target);
    void start_handshake();
    void handshake_step(std::vector<std::string_view> args, std::string step,
                        std::function<void(RedisResult)> on_ok);
    void subscribe_all();
    void become_ready();
    void fail(const std::string& reason, Id expired = 0);
    void handle_reply(Id id, redisReply* reply);
    void handle_pubsub(redisReply* reply);
    bool write(const std::vector<std::string_view>& args, Id id);
    void arm_deadline();
    void on_deadline();
    void report(bool up, const std::string& reason);
    std::string stage() const;
    std::string where() const { return to_display_string(target_); }

    RedisClient& client_;
    RedisLink role_;
    RedisEndpoint target_;  // the url's endpoint; with sentinels, host and port of the master
    State state_ = State::idle;
    std::uint64_t generation_ = 0;
    int attempt_ = 0;  // consecutive failed attempts, for the backoff
    std::unique_ptr<Connection> conn_;
    std::map<Id, Pending> pending_;  // ids grow, so this is send order
    std::set<std::pair<std::uint64_t, Id>> deadlines_;
    std::deque<std::string> handshake_steps_;      // unanswered, oldest first
    std::set<std::string, std::less<>> awaiting_;  // pubsub: SUBSCRIBE not yet confirmed
    enum class Reported { none, up, down } reported_ = Reported::none;
    std::string last_error_;
    std::size_t sentinel_ = 0;     // the sentinel asked now, or the one that answered last
    std::size_t asked_ = 0;        // sentinels asked in this round
    std::string sentinel_errors_;  // why each sentinel of this round gave no address
    UvTimer attempt_timer_;        // the connect deadline, then the backoff delay
    UvTimer deadline_timer_;       // the earliest command deadline
};

std::string RedisClient::Link::stage() const {
    switch (state_) {
        case State::discovering:
            return "asking sentinel " + sentinel_name() + " for master " +
                   client_.options_.master_name;
        case State::resolving:
            return "resolving " + target_.host;
        case State::connecting:
            return "connecting to " + where();
        case State::handshaking:
            return "waiting for the " +
                   (handshake_steps_.empty() ? std::string("handshake")
                                             : handshake_steps_.front()) +
                   " reply";
        case State::subscribing:
            return "waiting for SUBSCRIBE confirmations";
        default:
            return "connecting";
    }
}

void RedisClient::Link::connect() {
    if (client_.sentinels_.empty()) {
        connect_to_target();
        return;
    }
    sentinel_errors_.clear();
    ask_sentinel(0);
}

std::string RedisClient::Link::sentinel_name() const {
    const RedisHostPort& s = client_.sentinels_[sentinel_];
    bool v6 = s.host.find(':') != std::string::npos;
    return (v6 ? "[" + s.host + "]" : s.host) + ":" + std::to_string(s.port);
}

// Sentinels are asked in turn, starting with the one that answered last, each on a short-lived
// connection with its own connect_timeout; the first address named is the one connected to.
void RedisClient::Link::ask_sentinel(std::size_t asked) {
    if (asked == client_.sentinels_.size()) {
        state_ = State::backoff;  // so that fail() schedules the next round
        fail("no sentinel named master " + client_.options_.master_name + ": " + sentinel_errors_);
        return;
    }
    std::uint64_t gen = ++generation_;
    asked_ = asked;
    state_ = State::discovering;
    attempt_timer_.start(client_.options_.connect_timeout, [this, gen] {
        if (gen == generation_) sentinel_failed("timeout while " + stage());
    });
    const RedisHostPort& sentinel = client_.sentinels_[sentinel_];
    redisAsyncContext* ac = redisAsyncConnect(sentinel.host.c_str(), sentinel.port);
    if (ac == nullptr || ac->err != 0) {
        std::string why = ac == nullptr ? std::string("out of memory") : hiredis_error(ac);
        if (ac != nullptr) redisAsyncFree(ac);  // no event hooks attached yet: no callbacks
        sentinel_failed("connecting: " + why);
        return;
    }
    bound_reply_arrays(ac->c.reader);
    conn_ = std::make_unique<Connection>(ac, this, gen);
    ac->data = conn_.get();
    if (!uv_redis_attach(ac, client_.loop_)) {
        sentinel_failed("cannot attach to the event loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, &Link::on_connect);
    redisAsyncSetDisconnectCallback(ac, &Link::on_disconnect);
    Id id = client_.next_id_++;
    Pending p;
    p.internal = true;
    p.callback = [this, gen](RedisResult r) {
        if (gen == generation_) on_master_address(std::move(r));
    };
    pending_.emplace(id, std::move(p));
    if (!write({"SENTINEL", "get-master-addr-by-name", client_.options_.master_name}, id)) {
        sentinel_failed("sending SENTINEL get-master-addr-by-name: the connection is closing");
    }
}

// Runs from drain(): the reply is ["IP", "PORT"], or nil for a master the sentinel does not know.
void RedisClient::Link::on_master_address(RedisResult r) {
    if (!r.ok()) {
        sentinel_failed(r.error);
        return;
    }
    const auto& e = r.reply.elements();
    long port = 0;
    if (r.reply.is_nil()) {
        sentinel_failed("does not know master " + client_.options_.master_name);
        return;
    }
    if (!r.reply.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_string() ||
        e[0].text().empty() || !parse_port(e[1].text(), port)) {
        sentinel_failed("unexpected reply to SENTINEL get-master-addr-by-name");
        return;
    }
    target_.host = e[0].text();
    target_.port = static_cast<std::uint16_t>(port);
    ++generation_;
    drop_connection();
    connect_to_target();
}

// Gives up on the sentinel asked now and, on the next loop turn, asks the next one.
void RedisClient::Link::sentinel_failed(const std::string& reason) {
    ++generation_;
    drop_connection();
    if (!sentinel_errors_.empty()) sentinel_errors_ += "; ";
    sentinel_errors_ += sentinel_name() + ": " + reason;
    sentinel_ = (sentinel_ + 1) % client_.sentinels_.size();
    std::size_t next = asked_ + 1;
    attempt_timer_.start(std::chrono::milliseconds(0), [this, next] { ask_sentinel(next); });
}

// Hands the context to the graveyard (freed from drain(), outside any hiredis callback).
void RedisClient::Link::drop_connection() {
    if (conn_) {
        conn_->abandoned = true;
        client_.graveyard_.push_back(std::move(conn_));
    }
    pending_.clear();  // while discovering, only the internal SENTINEL query
    client_.post(0, nullptr);
}

// Starts one attempt; the whole attempt (lookup, connect, handshake) runs against one deadline.
void RedisClient::Link::connect_to_target() {
    std::uint64_t gen = ++generation_;
    attempt_timer_.start(client_.options_.connect_timeout, [this, gen] {
        if (gen == generation_ && state_ != State::ready) fail("timeout while " + stage());
    });
    const RedisEndpoint& ep = target_;
    if (ep.kind == RedisEndpoint::Kind::unix_socket) {
        open(ep.path);
    } else if (IpAddress::parse(ep.host)) {
        open(ep.host);
    } else {
        resolve();
    }
}

// hiredis resolves names with a blocking getaddrinfo(), so names are looked up first in the
// libuv thread pool (which honours /etc/hosts and nsswitch, as an admin expects) and hiredis
// only ever sees an IP literal. A lookup running in the pool cannot be cancelled: its request
// owns itself and checks, on completion, that the client and this attempt still exist.
void RedisClient::Link::resolve() {
    state_ = State::resolving;
    auto request = std::make_unique<ResolveRequest>();
    request->alive = client_.alive_;
    request->link = this;
    request->generation = generation_;
    request->req.data = request.get();
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = uv_getaddrinfo(client_.loop_, &request->req, &Link::on_resolved, target_.host.c_str(),
                            nullptr, &hints);
    if (rc != 0) {
        fail("resolving " + target_.host + ": " + uv_strerror(rc));
        return;
    }
    static_cast<void>(request.release());  // owned by on_resolved from now on
}

void RedisClient::Link::on_resolved(uv_getaddrinfo_t* req, int status, addrinfo* res) {
    std::unique_ptr<ResolveRequest> request(static_cast<ResolveRequest*>(req->data));
    std::unique_ptr<addrinfo, void (*)(addrinfo*)> list(res, &uv_freeaddrinfo);
    if (request->alive.expired()) return;
    Link& link = *request->link;
    if (request->generation != link.generation_) return;
    const std::string& host = link.target_.host;
    if (status != 0) {
        link.fail("resolving " + host + ": " + uv_strerror(status));
        return;
    }
    // IPv4 first: hiredis 0.14 tries AF_INET before AF_INET6 for whatever it is given.
    std::optional<IpAddress> chosen;
    for (int pass = 0; pass < 2 && !chosen; ++pass) {
        for (const addrinfo* ai = res; ai != nullptr && !chosen; ai = ai->ai_next) {
            if ((pass == 0) != (ai->ai_family == AF_INET)) continue;
            chosen = IpAddress::from_sockaddr(ai->ai_addr);
        }
    }
    if (!chosen) {
        link.fail("resolving " + host + ": no IPv4 or IPv6 address");
        return;
    }
    link.open(chosen->to_string());
}

// Creates the hiredis context for an IP literal or a unix socket path and pipelines the
// handshake behind the (non-blocking) connect.
void RedisClient::Link::open(const std::string& target) {
    state_ = State::connecting;
    const RedisEndpoint& ep = target_;
    redisAsyncContext* ac = ep.kind == RedisEndpoint::Kind::unix_socket
                                ? redisAsyncConnectUnix(target.c_str())
                                : redisAsyncConnect(target.c_str(), ep.port);
    if (ac == nullptr) {
        fail("connecting to " + where() + ": out of memory");
        return;
    }
    if (ac->err != 0) {
        std::string why = hiredis_error(ac);
        redisAsyncFree(ac);  // no event hooks attached yet: freed at once, no callbacks
        fail("connecting to " + where() + ": " + why);
        return;
    }
    bound_reply_arrays(ac->c.reader);
    conn_ = std::make_unique<Connection>(ac, this, generation_);
    ac->data = conn_.get();
    if (!uv_redis_attach(ac, client_.loop_)) {
        fail("connecting to " + where() + ": cannot attach to the event loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, &Link::on_connect);
    redisAsyncSetDisconnectCallback(ac, &Link::on_disconnect);
    start_handshake();
}

// AUTH, SELECT and SCRIPT LOAD, then PING: the PING reply proves the server really answers
// (a stopped server's kernel still completes the TCP handshake from its listen backlog).
void RedisClient::Link::start_handshake() {
    const RedisEndpoint& ep = target_;
    handshake_steps_.clear();
    if (!ep.password.empty()) {
        std::vector<std::string_view> auth = {"AUTH"};
        if (!ep.username.empty()) auth.push_back(ep.username);
        auth.push_back(ep.password);
        handshake_step(std::move(auth), "AUTH", nullptr);
    }
    if (role_ == RedisLink::commands) {
        std::string db = std::to_string(ep.db);
        if (ep.db != 0) handshake_step({"SELECT", db}, "SELECT", nullptr);
        for (const auto& [name, script] : client_.scripts_) load_script(name, script.body);
    }
    // A sentinel may still name a master that has just been demoted (or not yet promoted).
    if (!client_.sentinels_.empty()) {
        handshake_step({"ROLE"}, "ROLE", [this](RedisResult r) {
            std::string role = r.reply.elements().empty() ? "?" : r.reply.elements()[0].text();
            if (role != "master") fail("ROLE: " + where() + " is a " + role + ", not a master");
        });
    }
    handshake_step({"PING"}, "PING", [this](RedisResult) {
        if (role_ == RedisLink::pubsub) {
            subscribe_all();
        } else {
            become_ready();
        }
    });
}

// One handshake command; an error reply fails the attempt naming the step.
void RedisClient::Link::handshake_step(std::vector<std::string_view> args, std::string step,
                                       std::function<void(RedisResult)> on_ok) {
    Id id = client_.next_id_++;
    std::uint64_t gen = generation_;
    if (!conn_) return;  // the attempt already failed
    handshake_steps_.push_back(step);
    Pending p;
    p.internal = true;
    p.callback = [this, gen, step, on_ok = std::move(on_ok)](RedisResult r) {
        if (gen != generation_) return;
        if (!handshake_steps_.empty()) handshake_steps_.pop_front();
        if (!r.ok()) {
            fail(step + " failed: " + r.error);
            return;
        }
        if (on_ok) on_ok(std::move(r));
    };
    pending_.emplace(id, std::move(p));
    if (!write(args, id) && conn_) fail("sending " + step + ": the connection is closing");
}

// SCRIPT LOAD of one script; a script that does not compile is not fatal for the connection:
// eval() then falls back to EVAL and reports the compile error as a server_error.
void RedisClient::Link::load_script(const std::string& name, const std::string& body) {
    if (!conn_) return;
    Id id = client_.next_id_++;
    std::uint64_t gen = generation_;
    Pending p;
    p.internal = true;
    p.callback = [this, gen, name, body](RedisResult r) {
        if (gen != generation_) return;
        auto it = client_.scripts_.find(name);
        if (it == client_.scripts_.end() || it->second.body != body) return;  // replaced since
        it->second.sha = r.ok() && r.reply.is_string() ? r.reply.text() : std::string();
    };
    pending_.emplace(id, std::move(p));
    if (!write({"SCRIPT", "LOAD", body}, id) && conn_)
        fail("sending SCRIPT LOAD: the connection is closing");
}

// After the PING: hiredis 0.14 drops the reply of anything but (UN)SUBSCRIBE once a context
// is subscribed (a PING's ["pong", ""] never reaches its callback), so the handshake PINGs
// first and the link counts as up once every channel's SUBSCRIBE is confirmed.
void RedisClient::Link::subscribe_all() {
    state_ = State::subscribing;
    awaiting_.clear();
    std::vector<std::string_view> args = {"SUBSCRIBE"};
    for (const auto& [channel, handler] : client_.channels_) {
        awaiting_.insert(channel);
        args.push_back(channel);
    }
    if (awaiting_.empty()) {
        become_ready();
        return;
    }
    if (!write(args, 0) && conn_) fail("sending SUBSCRIBE: the connection is closing");
}

void RedisClient::Link::subscribe_one(const std::string& channel) {
    if (state_ != State::subscribing && state_ != State::ready) return;  // subscribe_all() will
    write({"SUBSCRIBE", channel}, 0);
}

void RedisClient::Link::unsubscribe_one(const std::string& channel) {
    if (state_ != State::subscribing && state_ != State::ready) return;
    write({"UNSUBSCRIBE", channel}, 0);
    awaiting_.erase(channel);
    if (state_ == State::subscribing && awaiting_.empty()) become_ready();
}

void RedisClient::Link::become_ready() {
    state_ = State::ready;
    attempt_ = 0;
    attempt_timer_.stop();
    if (role_ == RedisLink::commands) ++client_.stats_.connects;
    std::string up = where();
    if (!client_.sentinels_.empty()) {
        up += " (master " + client_.options_.master_name + " named by sentinel " + sentinel_name() +
              ")";
    }
    report(true, up);
}

// Abandons the current attempt or connection: fails the commands in flight (`expired` with
// timeout, the others with disconnected), hands the hiredis context to the graveyard (freed on
// the next loop turn, outside any hiredis callback) and schedules the next attempt.
void RedisClient::Link::fail(const std::string& reason, Id expired) {
    if (state_ == State::discovering) {
        sentinel_failed(reason);
        return;
    }
    bool was_ready = state_ == State::ready;
    ++generation_;
    if (conn_) {
        conn_->abandoned = true;
        client_.graveyard_.push_back(std::move(conn_));
    }
    for (auto& [id, p] : pending_) {
        if (p.internal) continue;
        RedisResult r = id == expired
                            ? failure(RedisStatus::timeout, reason)
                            : failure(RedisStatus::disconnected, "connection lost: " + reason);
        client_.post(
            id, [cb = std::move(p.callback), r = std::move(r)]() mutable { cb(std::move(r)); });
    }
    pending_.clear();
    deadlines_.clear();
    deadline_timer_.stop();
    handshake_steps_.clear();
    awaiting_.clear();
    if (was_ready) {
        ++client_.stats_.disconnects;
    } else {
        ++client_.stats_.connect_failures;
    }
    last_error_ = reason;
    report(false, reason);
    state_ = State::backoff;
    auto delay = client_.next_backoff(attempt_++);
    attempt_timer_.start(delay, [this] { connect(); });
    client_.post(0, nullptr);  // makes sure drain() runs and frees the graveyard
}

void RedisClient::Link::report(bool up, const std::string& reason) {
    Reported now = up ? Reported::up : Reported::down;
    if (reported_ == now) return;
    reported_ = now;
    RedisStateChange change{role_, up, reason};
    RedisClient* client = &client_;
    client_.post(0, [client, change] {
        if (!client->on_state_) return;
        StateCallback cb = client->on_state_;  // the callback may replace itself
        cb(change);
    });
}

bool RedisClient::Link::write(const std::vector<std::string_view>& args, Id id) {
    if (!conn_ || conn_->ac == nullptr) return false;
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    argv.reserve(args.size());
    lens.reserve(args.size());
    for (auto a : args) {
        argv.push_back(a.data());
        lens.push_back(a.size());
    }
    return redisAsyncCommandArgv(conn_->ac, &Link::on_reply, id_to_privdata(id),
                                 static_cast<int>(args.size()), argv.data(),
                                 lens.data()) == REDIS_OK;
}

void RedisClient::Link::send_user(Id id, const std::vector<std::string_view>& args,
                                  std::uint64_t deadline, ReplyCallback callback,
                                  std::string eval_script, std::vector<std::string> tail) {
    Pending p;
    p.callback = std::move(callback);
    p.deadline = deadline;
    p.eval_script = std::move(eval_script);
    p.eval_tail = std::move(tail);
    auto [it, inserted] = pending_.emplace(id, std::move(p));
    if (!write(args, id)) {
        client_.post(id, [cb = std::move(it->second.callback)] {
            cb(failure(RedisStatus::disconnected, "the connection is closing"));
        });
        pending_.erase(it);
        return;
    }
    bool earliest = deadlines_.empty() || deadline < deadlines_.begin()->first;
    deadlines_.emplace(deadline, id);
    if (earliest) arm_deadline();
}

bool RedisClient::Link::cancel(Id id) {
    auto it = pending_.find(id);
    if (it == pending_.end() || it->second.internal) return false;
    deadlines_.erase({it->second.deadline, id});
    pending_.erase(it);
    return true;
}

void RedisClient::Link::arm_deadline() {
    if (deadlines_.empty()) {
        deadline_timer_.stop();
        return;
    }
    std::uint64_t now = uv_now(client_.loop_);
    std::uint64_t first = deadlines_.begin()->first;
    deadline_timer_.start(std::chrono::milliseconds(first > now ? first - now : 0),
                          [this] { on_deadline(); });
}

// hiredis 0.14 has no command timeouts. An overdue reply means the server or the path to it
// is stuck, and a reply may still arrive later on this stream, so the connection as a whole
// is given up rather than the one command.
void RedisClient::Link::on_deadline() {
    if (deadlines_.empty()) return;
    auto [deadline, id] = *deadlines_.begin();
    if (deadline > uv_now(client_.loop_)) {
        arm_deadline();
        return;
    }
    ++client_.stats_.timeouts;
    fail("timeout: no reply within " + std::to_string(client_.options_.command_timeout.count()) +
             " ms",
         id);
}

// Runs inside hiredis: copies the reply out and queues the callback; never calls user code.
void RedisClient::Link::handle_reply(Id id, redisReply* reply) {
    auto it = pending_.find(id);
    if (it == pending_.end()) return;  // cancelled
    Pending p = std::move(it->second);
    pending_.erase(it);
    if (p.deadline != kNoDeadline) deadlines_.erase({p.deadline, id});
    RedisResult result;
    if (reply->type == REDIS_REPLY_ERROR) {
        result = failure(RedisStatus::server_error, std::string(reply->str, reply->len));
    } else {
        result.reply = RedisReply::from_hiredis(reply);
    }
    // The server lost the script (restart, SCRIPT FLUSH, failover to a replica that never saw
    // it): EVAL sends the body, runs it and caches it again. Only once, with the old deadline.
    if (!p.eval_script.empty() && !p.retried && result.status == RedisStatus::server_error &&
        result.error.starts_with("NOSCRIPT")) {
        auto script = client_.scripts_.find(p.eval_script);
        if (script != client_.scripts_.end()) {
            ++client_.stats_.script_reloads;
            script->second.sha.clear();
            load_script(script->first, script->second.body);
            p.retried = true;
            std::uint64_t deadline = p.deadline;
            auto [pit, inserted] = pending_.emplace(id, std::move(p));
            std::vector<std::string_view> args = {"EVAL", script->second.body};
            for (const auto& t : pit->second.eval_tail) args.push_back(t);
            if (write(args, id)) {
                deadlines_.emplace(deadline, id);
                return;
            }
            p = std::move(pit->second);
            pending_.erase(pit);
            result = failure(RedisStatus::disconnected, "the connection is closing");
        }
    }
    client_.post(p.internal ? 0 : id, [cb = std::move(p.callback),
                                       r = std::move(result)]() mutable { cb(std::move(r)); });
}

// Subscription traffic: confirmations complete the handshake, messages go to their handler.
void RedisClient::Link::handle_pubsub(redisReply* reply) {
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) return;
    const redisReply* kind = reply->element[0];
    const redisReply* channel = reply->element[1];
    if (kind->type != REDIS_REPLY_STRING || channel->type != REDIS_REPLY_STRING) return;
    std::string_view k(kind->str, kind->len);
    std::string ch(channel->str, channel->len);
    if (k == "subscribe") {
        awaiting_.erase(ch);
        if (state_ == State::subscribing && awaiting_.empty()) become_ready();
        return;
    }
    if (k != "message" || reply->element[2]->type != REDIS_REPLY_STRING) return;
    std::string payload(reply->element[2]->str, reply->element[2]->len);
    RedisClient* client = &client_;
    client_.post(0, [client, ch = std::move(ch), payload = std::move(payload)] {
        auto it = client->channels_.find(ch);
        if (it == client->channels_.end()) return;  // unsubscribed meanwhile
        ++client->stats_.messages;
        MessageCallback handler = it->second;  // the handler may unsubscribe itself
        handler(ch, payload);
    });
}

// The three hiredis callbacks below also run for contexts already abandoned to the graveyard
// (an EOF can arrive before drain() frees them): whenever hiredis is freeing a context itself,
// `ac` is cleared first so the graveyard does not free it a second time.
void RedisClient::Link::on_connect(const redisAsyncContext* ac, int status) {
    auto* conn = static_cast<Connection*>(ac->data);
    if (conn == nullptr) return;
    if (status != REDIS_OK) conn->ac = nullptr;  // hiredis frees the context when this returns
    if (conn->abandoned) return;
    Link& link = *conn->link;
    if (status != REDIS_OK && link.state_ == State::discovering) {
        link.sentinel_failed("connecting: " + hiredis_error(ac));
        return;
    }
    if (status != REDIS_OK) {
        link.fail("connecting to " + link.where() + ": " + hiredis_error(ac));
        return;
    }
    if (link.state_ == State::connecting) link.state_ = State::handshaking;
}

void RedisClient::Link::on_disconnect(const redisAsyncContext* ac, int) {
    auto* conn = static_cast<Connection*>(ac->data);
    if (conn == nullptr) return;
    conn->ac = nullptr;  // hiredis frees it after this returns
    if (conn->abandoned) return;
    conn->link->fail("connection lost: " + hiredis_error(ac));
}

void RedisClient::Link::on_reply(redisAsyncContext* ac, void* reply, void* privdata) {
    auto* conn = static_cast<Connection*>(ac->data);
    if (conn == nullptr) return;
    // A NULL reply means the context is being freed, by us (Connection's destructor already
    // cleared `ac`) or by hiredis itself after a read/write error.
    if (reply == nullptr) conn->ac = nullptr;
    if (conn->abandoned) return;
    Link& link = *conn->link;
    if (reply == nullptr) {
        link.fail("connection lost: " + hiredis_error(ac));
        return;
    }
    Id id = privdata_to_id(privdata);
    if (id == 0) {
        link.handle_pubsub(static_cast<redisReply*>(reply));
    } else {
        link.handle_reply(id, static_cast<redisReply*>(reply));
    }
}

// ---------------------------------------------------------------------------------------------
// RedisClient

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
    : loop_(loop),
      options_(std::move(options)),
      endpoint_(std::move(endpoint)),
      sentinels_(std::move(sentinels)),
      rng_(options_.jitter_seed ? *options_.jitter_seed : std::random_device{}()),
      drain_timer_(loop) {
    commands_ = std::make_unique<Link>(*this, RedisLink::commands);
}

// Links free their contexts synchronously here: hiredis then runs the pending callbacks with
// NULL replies, which see `abandoned` and return. This is safe because the destructor never
// runs inside a hiredis callback: user code is only ever called from drain().
RedisClient::~RedisClient() {
    alive_.reset();
    pubsub_.reset();
    commands_.reset();
    graveyard_.clear();
}

void RedisClient::set_state_callback(StateCallback callback) {
    on_state_ = std::move(callback);
}

void RedisClient::register_script(std::string name, std::string body) {
    Script& s = scripts_[name];
    s.body = std::move(body);
    s.sha.clear();
    if (commands_->ready()) commands_->load_script(name, s.body);
}

void RedisClient::start() {
    if (started_) return;
    started_ = true;
    uv_update_time(loop_);  // deadlines count from now, not from the loop's last turn
    commands_->connect();
    if (!channels_.empty()) pubsub_link().connect();
}

bool RedisClient::is_connected() const {
    return commands_->ready();
}

bool RedisClient::is_subscribed() const {
    return pubsub_ && pubsub_->ready();
}

RedisClient::Id RedisClient::command(const std::vector<std::string_view>& args,
                                     ReplyCallback callback) {
    if (!commands_->ready()) return fail_fast(std::move(callback));
    Id id = next_id_++;
    if (args.empty()) {  // hiredis asserts on an empty command
        post(id, [cb = std::move(callback)] {
            cb(failure(RedisStatus::server_error, "ERR empty command (not sent)"));
        });
        return id;
    }
    commands_->send_user(id, args, uv_now(loop_) + options_.command_timeout.count(),
                         std::move(callback), {}, {});
    return id;
}

RedisClient::Id RedisClient::eval(std::string_view script,
                                  const std::vector<std::string_view>& keys,
                                  const std::vector<std::string_view>& args,
                                  ReplyCallback callback) {
    auto it = scripts_.find(script);
    if (it == scripts_.end()) {
        std::fprintf(stderr, "RedisClient::eval: script '%.*s' was never registered\n",
                     static_cast<int>(script.size()), script.data());
        std::abort();
    }
    if (!commands_->ready()) return fail_fast(std::move(callback));
    std::vector<std::string> tail;
    tail.reserve(1 + keys.size() + args.size());
    tail.push_back(std::to_string(keys.size()));
    tail.insert(tail.end(), keys.begin(), keys.end());
    tail.insert(tail.end(), args.begin(), args.end());
    const Script& s = it->second;
    std::vector<std::string_view> argv;
    argv.reserve(2 + tail.size());
    argv.push_back(s.sha.empty() ? "EVAL" : "EVALSHA");
    argv.push_back(s.sha.empty() ? std::string_view(s.body) : std::string_view(s.sha));
    argv.insert(argv.end(), tail.begin(), tail.end());
    Id id = next_id_++;
    commands_->send_user(id, argv, uv_now(loop_) + options_.command_timeout.count(),
                         std::move(callback), it->first, std::move(tail));
    return id;
}

// Without a usable connection nothing is queued: the caller hears not_connected next turn.
RedisClient::Id RedisClient::fail_fast(ReplyCallback callback) {
    Id id = next_id_++;
    ++stats_.not_connected;
    std::string why = "not connected";
    if (!commands_->last_error().empty()) why += ": " + commands_->last_error();
    post(id, [cb = std::move(callback), why = std::move(why)] {
        cb(failure(RedisStatus::not_connected, why));
    });
    return id;
}

bool RedisClient::cancel(Id id) {
    if (commands_->cancel(id)) return true;
    for (auto& r : ready_) {
        if (r.id == id && r.run) {
            r.run = nullptr;
            return true;
        }
    }
    return false;
}

void RedisClient::subscribe(const std::string& channel, MessageCallback on_message) {
    bool added = channels_.insert_or_assign(channel, std::move(on_message)).second;
    if (!started_) return;
    Link& link = pubsub_link();
    if (!link.started()) {
        link.connect();
    } else if (added) {
        link.subscribe_one(channel);
    }
}

void RedisClient::unsubscribe(const std::string& channel) {
    if (channels_.erase(channel) == 0) return;
    if (pubsub_) pubsub_->unsubscribe_one(channel);
}

std::size_t RedisClient::in_flight() const {
    return commands_->in_flight();
}

const RedisEndpoint& RedisClient::endpoint() const {
    return commands_->target();
}

const std::string& RedisClient::last_error() const {
    return commands_->last_error();
}

RedisClient::Link& RedisClient::pubsub_link() {
    if (!pubsub_) pubsub_ = std::make_unique<Link>(*this, RedisLink::pubsub);
    return *pubsub_;
}

// Queues work for drain(); `run` may be empty just to get the graveyard freed.
void RedisClient::post(Id id, std::function<void()> run) {
    if (run) ready_.push_back(Ready{id, std::move(run)});
    if (drain_armed_) return;
    drain_armed_ = true;
    drain_timer_.start(std::chrono::milliseconds(0), [this] { drain(); });
}

// The only place user callbacks run. Work queued while draining waits for the next turn, so
// a callback that issues a command that fails fast cannot starve the loop.
void RedisClient::drain() {
    drain_armed_ = false;
    graveyard_.clear();
    std::weak_ptr<int> alive = alive_;
    std::size_t n = ready_.size();
    while (n-- > 0 && !ready_.empty()) {
        Ready r = std::move(ready_.front());
        ready_.pop_front();
        if (!r.run) continue;  // cancelled
        r.run();
        if (alive.expired()) return;  // a callback destroyed the client
    }
    if (!ready_.empty()) post(0, nullptr);
}

std::chrono::milliseconds RedisClient::next_backoff(int attempt) {
    auto min = static_cast<std::uint64_t>(options_.backoff_min.count());
    auto max = static_cast<std::uint64_t>(options_.backoff_max.count());
    std::uint64_t delay = min << std::min(attempt, 20);
    delay = std::min(delay, max);
    std::uniform_int_distribution<std::uint64_t> pick(delay / 2, delay);
    return std::chrono::milliseconds(pick(rng_));
}

}  // namespace calloutd
