// RedisLinkMachine: attempts through the stages, the handshake, command deadlines, pub/sub.
// Over 500 lines as one concept: the one state machine that drives the stages redis_link_stage.*
// declares.
#include "storage/redis_link.hpp"

#include <netdb.h>
#include <sys/socket.h>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <utility>

#include "util/ip_net.hpp"
#include "util/panic.hpp"

namespace calloutd {

namespace {

using Stage = RedisLinkStage;
using Clock = RedisStageClock;
using Failure = RedisStageFailure;

// Tags of handshake commands start here, far above any user command id; 0 is pub/sub traffic.
constexpr std::uint64_t kFirstStepTag = std::uint64_t{1} << 63;

}  // namespace

std::string_view to_string(RedisLink l) {
    return l == RedisLink::commands ? "commands" : "pubsub";
}

RedisShared::RedisShared(uv_loop_t* l, RedisOptions o, RedisEndpoint e,
                         std::vector<RedisHostPort> s)
    : loop(l),
      options(std::move(o)),
      endpoint(std::move(e)),
      sentinels(std::move(s)),
      rng(options.jitter_seed ? *options.jitter_seed : std::random_device{}()),
      queue(l) {}

// Everything that can call back late belongs here (see the class comment).
struct RedisLinkMachine::Attempt {
    explicit Attempt(uv_loop_t* loop) : connect_deadline(loop), command_deadline(loop) {}

    std::unique_ptr<RedisSentinel::Round> discovery;
    std::unique_ptr<UvHiredis> conn;
    std::map<std::uint64_t, Command> commands;                    // user commands in flight, by id
    std::set<std::pair<std::uint64_t, std::uint64_t>> deadlines;  // (deadline, id)
    std::map<std::uint64_t, Step> steps;          // by tag, so the oldest comes first
    std::set<std::string, std::less<>> awaiting;  // pub/sub: SUBSCRIBE not yet confirmed
    UvTimer connect_deadline;
    UvTimer command_deadline;  // the earliest of `deadlines`
};

// A name lookup in libuv's thread pool: it cannot be cancelled, so it owns itself and finds out
// on completion whether its attempt still exists.
struct RedisLinkMachine::Lookup {
    uv_getaddrinfo_t req{};
    std::weak_ptr<Attempt> attempt;
    RedisLinkMachine* link = nullptr;
};

RedisLinkMachine::RedisLinkMachine(RedisShared& shared, RedisLink role)
    : shared_(shared),
      role_(role),
      target_(shared.endpoint),
      next_step_tag_(kFirstStepTag),
      backoff_timer_(shared.loop) {
    if (!shared.sentinels.empty()) {
        sentinel_ = std::make_unique<RedisSentinel>(shared.loop, shared.sentinels,
                                                    shared.options.master_name,
                                                    shared.options.connect_timeout);
    }
}

// The attempt goes first: its context is freed now (its callbacks find no owner), its timers
// are closed, and a lookup still in the pool finds it expired.
RedisLinkMachine::~RedisLinkMachine() {
    attempt_.reset();
}

void RedisLinkMachine::start() {
    if (stage_ == Stage::idle) begin_attempt();
}

std::string RedisLinkMachine::doing() const {
    std::string endpoint = where();
    std::string_view step = "handshake";
    if (attempt_ && !attempt_->steps.empty()) step = attempt_->steps.begin()->second.name;
    return describe(stage_,
                    RedisStageFacts{shared_.options.master_name, target_.host, endpoint, step});
}

std::size_t RedisLinkMachine::in_flight() const {
    return attempt_ ? attempt_->commands.size() + attempt_->steps.size() : 0;
}

// Moves to `next`; the attempt's connect deadline runs while the stage's clock says so.
void RedisLinkMachine::enter(RedisLinkStage next) {
    bool was = stage_row(stage_).clock == Clock::attempt;
    bool is = stage_row(next).clock == Clock::attempt;
    stage_ = next;
    if (is && !was) {
        attempt_->connect_deadline.start(shared_.options.connect_timeout,
                                         [this] { fail("timeout while " + doing()); });
    } else if (was && !is && attempt_) {
        attempt_->connect_deadline.stop();
    }
}

void RedisLinkMachine::begin_attempt() {
    attempt_ = std::make_shared<Attempt>(shared_.loop);
    if (!sentinel_) {
        connect_to_target();
        return;
    }
    enter(Stage::discovering);
    attempt_->discovery =
        sentinel_->discover([this](RedisSentinel::Answer a) { on_master(std::move(a)); });
}

void RedisLinkMachine::on_master(RedisSentinel::Answer answer) {
    if (!answer.found) {
        fail(answer.error);
        return;
    }
    target_.host = std::move(answer.master.host);
    target_.port = answer.master.port;
    connect_to_target();
}

void RedisLinkMachine::connect_to_target() {
    bool unix_socket = target_.kind == RedisEndpoint::Kind::unix_socket;
    if (!unix_socket && !IpAddress::parse(target_.host)) {
        resolve();
        return;
    }
    enter(Stage::connecting);
    open(unix_socket ? target_.path : target_.host);
}

// hiredis resolves names with a blocking getaddrinfo(), so names are looked up first in the
// libuv thread pool (which honours /etc/hosts and nsswitch, as an admin expects) and hiredis
// only ever sees an IP literal.
void RedisLinkMachine::resolve() {
    enter(Stage::resolving);
    auto lookup = std::make_unique<Lookup>();
    lookup->attempt = attempt_;
    lookup->link = this;
    lookup->req.data = lookup.get();
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = uv_getaddrinfo(shared_.loop, &lookup->req, &RedisLinkMachine::on_resolved,
                            target_.host.c_str(), nullptr, &hints);
    if (rc != 0) {
        fail("resolving " + target_.host + ": " + uv_strerror(rc));
        return;
    }
    static_cast<void>(lookup.release());  // owned by on_resolved from now on
}

void RedisLinkMachine::on_resolved(uv_getaddrinfo_t* req, int status, addrinfo* res) {
    std::unique_ptr<Lookup> lookup(static_cast<Lookup*>(req->data));
    std::unique_ptr<addrinfo, void (*)(addrinfo*)> list(res, &uv_freeaddrinfo);
    if (lookup->attempt.expired()) return;  // the attempt ended, or the link is gone
    RedisLinkMachine& link = *lookup->link;
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
    link.enter(Stage::connecting);
    link.open(chosen->to_string());
}

// Creates the hiredis context for an IP literal or a unix socket path and pipelines the
// handshake behind the (non-blocking) connect.
void RedisLinkMachine::open(const std::string& address) {
    std::string error;
    attempt_->conn =
        target_.kind == RedisEndpoint::Kind::unix_socket
            ? UvHiredis::connect_unix(shared_.loop, address, *this, error)
            : UvHiredis::connect_tcp(shared_.loop, address, target_.port, *this, error);
    if (!attempt_->conn) {
        fail("connecting to " + where() + ": " + error);
        return;
    }
    start_handshake();
}

// AUTH, SELECT and SCRIPT LOAD, then PING: the PING reply proves the server really answers
// (a stopped server's kernel still completes the TCP handshake from its listen backlog).
// Each send that fails has failed the attempt already, hence the early returns.
void RedisLinkMachine::start_handshake() {
    const RedisEndpoint& ep = target_;
    if (!ep.password.empty()) {
        std::vector<std::string_view> auth = {"AUTH"};
        if (!ep.username.empty()) auth.push_back(ep.username);
        auth.push_back(ep.password);
        if (!handshake_step(auth, "AUTH", nullptr)) return;
    }
    if (role_ == RedisLink::commands) {
        std::string db = std::to_string(ep.db);
        if (ep.db != 0 && !handshake_step({"SELECT", db}, "SELECT", nullptr)) return;
        for (const auto& [name, script] : shared_.scripts) {
            if (!send_script_load(name)) return;
        }
    }
    // A sentinel may still name a master that has just been demoted (or not yet promoted).
    if (sentinel_) {
        bool sent = handshake_step({"ROLE"}, "ROLE", [this](RedisResult r) {
            std::string role = r.reply.elements().empty() ? "?" : r.reply.elements()[0].text();
            if (role != "master") fail("ROLE: " + where() + " is a " + role + ", not a master");
        });
        if (!sent) return;
    }
    handshake_step({"PING"}, "PING", [this](RedisResult) {
        if (role_ == RedisLink::pubsub) {
            subscribe_all();
        } else {
            become_ready();
        }
    });
}

// Sends an internal command whose reply is handled here, inside the hiredis event. False if it
// could not be sent, and then the attempt has failed.
bool RedisLinkMachine::send_step(const std::vector<std::string_view>& args, std::string name,
                                 std::function<void(RedisResult)> on_reply) {
    std::uint64_t tag = next_step_tag_++;
    if (!attempt_->conn->send(args, tag)) {
        fail("sending " + name + ": the connection is closing");
        return false;
    }
    attempt_->steps.emplace(tag, Step{std::move(name), std::move(on_reply)});
    return true;
}

// A handshake command: an error reply fails the attempt, naming the step.
bool RedisLinkMachine::handshake_step(const std::vector<std::string_view>& args,
                                      const std::string& name,
                                      std::function<void(RedisResult)> on_ok) {
    return send_step(args, name, [this, name, on_ok = std::move(on_ok)](RedisResult r) {
        if (!r.ok()) {
            fail(name + " failed: " + r.error);
        } else if (on_ok) {
            on_ok(std::move(r));
        }
    });
}

// SCRIPT LOAD of one script; a script that does not compile is not fatal for the connection:
// eval() then falls back to EVAL and reports the compile error as a server_error.
bool RedisLinkMachine::send_script_load(const std::string& name) {
    const std::string& body = shared_.scripts.at(name).body;
    return send_step({"SCRIPT", "LOAD", body}, "SCRIPT LOAD", [this, name, body](RedisResult r) {
        auto it = shared_.scripts.find(name);
        if (it == shared_.scripts.end() || it->second.body != body) return;  // replaced since
        it->second.sha = r.ok() && r.reply.is_string() ? r.reply.text() : std::string();
    });
}

void RedisLinkMachine::load_script(const std::string& name) {
    if (attempt_ && attempt_->conn) send_script_load(name);
}

// After the PING: hiredis 0.14 drops the reply of anything but (UN)SUBSCRIBE once a context
// is subscribed (a PING's ["pong", ""] never reaches its callback), so the handshake PINGs
// first and the link counts as up once every channel's SUBSCRIBE is confirmed.
void RedisLinkMachine::subscribe_all() {
    enter(Stage::subscribing);
    std::vector<std::string_view> args = {"SUBSCRIBE"};
    for (const auto& [channel, handler] : shared_.channels) {
        attempt_->awaiting.insert(channel);
        args.push_back(channel);
    }
    if (attempt_->awaiting.empty()) {
        become_ready();
    } else if (!attempt_->conn->send(args, 0)) {
        fail("sending SUBSCRIBE: the connection is closing");
    }
}

void RedisLinkMachine::subscribe(const std::string& channel) {
    if (stage_ != Stage::subscribing && stage_ != Stage::ready) return;  // subscribe_all() will
    attempt_->conn->send({"SUBSCRIBE", channel}, 0);
}

void RedisLinkMachine::unsubscribe(const std::string& channel) {
    if (stage_ != Stage::subscribing && stage_ != Stage::ready) return;
    attempt_->conn->send({"UNSUBSCRIBE", channel}, 0);
    attempt_->awaiting.erase(channel);
    if (stage_ == Stage::subscribing && attempt_->awaiting.empty()) become_ready();
}

void RedisLinkMachine::become_ready() {
    enter(Stage::ready);
    failures_ = 0;
    if (role_ == RedisLink::commands) ++shared_.stats.connects;
    std::string up = where();
    if (sentinel_) {
        up += " (master " + shared_.options.master_name + " named by sentinel " +
              sentinel_->current() + ")";
    }
    report(true, up);
}

// Ends the attempt: fails the commands in flight (`expired` with timeout, the others with
// disconnected), destroys the attempt and with it every late callback, and backs off.
void RedisLinkMachine::fail(const std::string& reason, std::uint64_t expired) {
    const RedisLinkStageRow& row = stage_row(stage_);
    if (row.on_failure == Failure::impossible) {
        panic(__func__, "failure while " + std::string(row.name) + ": " + reason);
    }
    std::shared_ptr<Attempt> ended = std::move(attempt_);
    for (auto& [id, command] : ended->commands) {
        deliver(id, std::move(command.callback),
                id == expired ? RedisResult::failure(RedisStatus::timeout, reason)
                              : RedisResult::failure(RedisStatus::disconnected,
                                                     "connection lost: " + reason));
    }
    ended.reset();
    ++(row.on_failure == Failure::disconnect ? shared_.stats.disconnects
                                             : shared_.stats.connect_failures);
    last_error_ = reason;
    report(false, reason);
    enter(Stage::backoff);
    auto delay = backoff_delay(failures_++, shared_.options.backoff_min,
                               shared_.options.backoff_max, shared_.rng);
    backoff_timer_.start(delay, [this] { begin_attempt(); });
}

// Called once per change of state, not once per failed attempt.
void RedisLinkMachine::report(bool up, const std::string& reason) {
    Reported now = up ? Reported::up : Reported::down;
    if (reported_ == now) return;
    reported_ = now;
    RedisShared* shared = &shared_;
    shared_.queue.post([shared, change = RedisStateChange{role_, up, reason}] {
        if (!shared->on_state) return;
        RedisStateCallback cb = shared->on_state;  // the callback may replace itself
        cb(change);
    });
}

void RedisLinkMachine::deliver(std::uint64_t id, RedisReplyCallback callback, RedisResult result) {
    shared_.queue.post(
        [cb = std::move(callback), r = std::move(result)]() mutable { cb(std::move(r)); }, id);
}

void RedisLinkMachine::send(std::uint64_t id, const std::vector<std::string_view>& args,
                            std::uint64_t deadline, RedisReplyCallback callback,
                            std::optional<EvalRetry> retry) {
    Attempt& a = *attempt_;
    if (!a.conn->send(args, id)) {
        deliver(id, std::move(callback),
                RedisResult::failure(RedisStatus::disconnected, "the connection is closing"));
        return;
    }
    a.commands.emplace(id, Command{std::move(callback), deadline, std::move(retry)});
    bool earliest = a.deadlines.empty() || deadline < a.deadlines.begin()->first;
    a.deadlines.emplace(deadline, id);
    if (earliest) arm_command_deadline();
}

bool RedisLinkMachine::cancel(std::uint64_t id) {
    if (!attempt_) return false;
    auto it = attempt_->commands.find(id);
    if (it == attempt_->commands.end()) return false;
    attempt_->deadlines.erase({it->second.deadline, id});
    attempt_->commands.erase(it);
    return true;
}

void RedisLinkMachine::arm_command_deadline() {
    Attempt& a = *attempt_;
    if (a.deadlines.empty()) {
        a.command_deadline.stop();
        return;
    }
    std::uint64_t now = uv_now(shared_.loop);
    std::uint64_t first = a.deadlines.begin()->first;
    a.command_deadline.start(std::chrono::milliseconds(first > now ? first - now : 0),
                             [this] { on_command_deadline(); });
}

// hiredis 0.14 has no command timeouts. An overdue reply means the server or the path to it
// is stuck, and a reply may still arrive later on this stream, so the connection as a whole
// is given up rather than the one command.
void RedisLinkMachine::on_command_deadline() {
    Attempt& a = *attempt_;
    if (a.deadlines.empty()) return;
    auto [deadline, id] = *a.deadlines.begin();
    if (deadline > uv_now(shared_.loop)) {
        arm_command_deadline();
        return;
    }
    ++shared_.stats.timeouts;
    fail("timeout: no reply within " + std::to_string(shared_.options.command_timeout.count()) +
             " ms",
         id);
}

// ---------------------------------------------------------------------------------------------
// Events of the current attempt's context (an older context no longer has an owner).

void RedisLinkMachine::on_connected() {
    if (stage_ == Stage::connecting) enter(Stage::handshaking);
}

void RedisLinkMachine::on_connect_failed(const std::string& error) {
    fail("connecting to " + where() + ": " + error);
}

void RedisLinkMachine::on_lost(const std::string& error) {
    fail("connection lost: " + error);
}

void RedisLinkMachine::on_reply(std::uint64_t tag, const redisReply& reply) {
    if (tag == 0) {
        handle_pubsub(reply);
        return;
    }
    auto step = attempt_->steps.find(tag);
    if (step == attempt_->steps.end()) {
        handle_command_reply(tag, reply);
        return;
    }
    Step s = std::move(step->second);  // its handler may end the attempt, and the map with it
    attempt_->steps.erase(step);
    s.on_reply(RedisResult::from_hiredis(reply));
}

// Copies the reply out and queues the callback; never calls user code.
void RedisLinkMachine::handle_command_reply(std::uint64_t id, const redisReply& reply) {
    Attempt& a = *attempt_;
    auto it = a.commands.find(id);
    if (it == a.commands.end()) return;  // cancelled
    Command c = std::move(it->second);
    a.commands.erase(it);
    a.deadlines.erase({c.deadline, id});
    RedisResult result = RedisResult::from_hiredis(reply);
    // The server lost the script (restart, SCRIPT FLUSH, failover to a replica that never saw
    // it): EVAL sends the body, runs it and caches it again. Only once, with the old deadline.
    if (c.retry && result.status == RedisStatus::server_error &&
        result.error.starts_with("NOSCRIPT")) {
        EvalRetry retry = std::move(*c.retry);
        c.retry.reset();
        auto script = shared_.scripts.find(retry.script);
        if (script != shared_.scripts.end()) {
            ++shared_.stats.script_reloads;
            script->second.sha.clear();
            if (!send_script_load(script->first)) {  // the attempt has failed meanwhile
                deliver(id, std::move(c.callback),
                        RedisResult::failure(RedisStatus::disconnected,
                                             "connection lost: " + last_error_));
                return;
            }
            std::vector<std::string_view> args = {"EVAL", script->second.body};
            args.insert(args.end(), retry.tail.begin(), retry.tail.end());
            if (a.conn->send(args, id)) {
                a.deadlines.emplace(c.deadline, id);
                a.commands.emplace(id, std::move(c));
                return;
            }
            result = RedisResult::failure(RedisStatus::disconnected, "the connection is closing");
        }
    }
    deliver(id, std::move(c.callback), std::move(result));
}

// Subscription traffic: confirmations complete the handshake, messages go to their handler.
void RedisLinkMachine::handle_pubsub(const redisReply& reply) {
    if (reply.type != REDIS_REPLY_ARRAY || reply.elements < 3) return;
    const redisReply* kind = reply.element[0];
    const redisReply* channel = reply.element[1];
    if (kind->type != REDIS_REPLY_STRING || channel->type != REDIS_REPLY_STRING) return;
    std::string_view k(kind->str, kind->len);
    std::string ch(channel->str, channel->len);
    if (k == "subscribe") {
        attempt_->awaiting.erase(ch);
        if (stage_ == Stage::subscribing && attempt_->awaiting.empty()) become_ready();
        return;
    }
    if (k != "message" || reply.element[2]->type != REDIS_REPLY_STRING) return;
    std::string payload(reply.element[2]->str, reply.element[2]->len);
    RedisShared* shared = &shared_;
    shared_.queue.post([shared, ch = std::move(ch), payload = std::move(payload)] {
        auto it = shared->channels.find(ch);
        if (it == shared->channels.end()) return;  // unsubscribed meanwhile
        ++shared->stats.messages;
        RedisMessageCallback handler = it->second;  // the handler may unsubscribe itself
        handler(ch, payload);
    });
}

}  // namespace calloutd
