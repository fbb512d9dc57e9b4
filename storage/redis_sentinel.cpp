// RedisSentinel: SENTINEL get-master-addr-by-name, one sentinel after the other.
#include "storage/redis_sentinel.hpp"

#include <hiredis/hiredis.h>

#include <utility>

#include "storage/redis_reply.hpp"
#include "util/host_port.hpp"

namespace calloutd {

RedisSentinel::RedisSentinel(uv_loop_t* loop, std::vector<RedisHostPort> sentinels,
                             std::string master_name, std::chrono::milliseconds timeout)
    : loop_(loop),
      sentinels_(std::move(sentinels)),
      master_name_(std::move(master_name)),
      timeout_(timeout) {}

std::unique_ptr<RedisSentinel::Round> RedisSentinel::discover(Done done) {
    return std::make_unique<Round>(*this, std::move(done));
}

std::string RedisSentinel::current() const {
    const RedisHostPort& s = sentinels_[current_];
    return format_host_port(s.host, s.port);
}

RedisSentinel::Round::Round(RedisSentinel& sentinels, Done done)
    : sentinels_(sentinels), done_(std::move(done)), timer_(sentinels.loop_) {
    ask(0);
}

// Connects to the current sentinel and pipelines the question behind the connect. Every way
// this can fail goes through give_up_on_current(), which moves on a loop turn later, so
// neither the constructor nor a hiredis event ever finishes the round from inside itself.
void RedisSentinel::Round::ask(std::size_t asked) {
    if (asked == sentinels_.sentinels_.size()) {
        Answer none;
        none.error = "no sentinel named master " + sentinels_.master_name_ + ": " + errors_;
        finish(std::move(none));
        return;
    }
    asked_ = asked;
    timer_.start(sentinels_.timeout_, [this] {
        give_up_on_current("no answer within " + std::to_string(sentinels_.timeout_.count()) +
                           " ms");
    });
    const RedisHostPort& sentinel = sentinels_.sentinels_[sentinels_.current_];
    std::string error;
    conn_ = UvHiredis::connect_tcp(sentinels_.loop_, sentinel.host, sentinel.port, *this, error);
    if (!conn_) {
        give_up_on_current("connecting: " + error);
        return;
    }
    if (!conn_->send({"SENTINEL", "get-master-addr-by-name", sentinels_.master_name_}, 1)) {
        give_up_on_current("sending SENTINEL get-master-addr-by-name: the connection is closing");
    }
}

// The current sentinel gave no address: note why, and ask the next one on the next loop turn.
void RedisSentinel::Round::give_up_on_current(const std::string& why) {
    conn_.reset();
    if (!errors_.empty()) errors_ += "; ";
    errors_ += sentinels_.current() + ": " + why;
    sentinels_.current_ = (sentinels_.current_ + 1) % sentinels_.sentinels_.size();
    std::size_t next = asked_ + 1;
    timer_.start(std::chrono::milliseconds(0), [this, next] { ask(next); });
}

// The last thing a round does: `done` may destroy it.
void RedisSentinel::Round::finish(Answer answer) {
    conn_.reset();
    timer_.stop();
    Done done = std::move(done_);
    done(std::move(answer));
}

// The reply is ["IP", "PORT"], or nil for a master the sentinel does not know.
void RedisSentinel::Round::on_reply(std::uint64_t, const redisReply& raw) {
    RedisResult r = RedisResult::from_hiredis(raw);
    const std::string& master = sentinels_.master_name_;
    if (!r.ok()) {
        give_up_on_current(r.error);
        return;
    }
    if (r.reply.is_nil()) {
        give_up_on_current("does not know master " + master);
        return;
    }
    const auto& e = r.reply.elements();
    std::optional<std::uint16_t> port;
    if (r.reply.is_array() && e.size() == 2 && e[1].is_string()) port = parse_port(e[1].text());
    if (!r.reply.is_array() || e.size() != 2 || !e[0].is_string() || e[0].text().empty() || !port) {
        give_up_on_current("unexpected reply to SENTINEL get-master-addr-by-name");
        return;
    }
    Answer found;
    found.found = true;
    found.master = RedisHostPort{e[0].text(), *port};
    finish(std::move(found));
}

void RedisSentinel::Round::on_connect_failed(const std::string& error) {
    give_up_on_current("connecting: " + error);
}

void RedisSentinel::Round::on_lost(const std::string& error) {
    give_up_on_current("connection lost: " + error);
}

}  // namespace calloutd
