// Scriptable fake SMTP server on its own thread, for faults real MTAs can't be made to show.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace calloutd::test {

// One scripted answer (to a command, or as the banner).
struct FakeReply {
    std::string text;          // "250 ok", or multi-line "250-a\n250 b"; each line gets CRLF
    bool raw = false;          // send `text` byte for byte instead (garbage, NUL, bare LF)
    bool close_after = false;  // hang up after sending (always so for a 421)
    std::optional<std::size_t> cut_after;  // send only this many bytes, then hang up
    std::chrono::milliseconds delay{0};    // extra wait before this reply (tarpit one stage)

    FakeReply() = default;
    FakeReply(const char* t) : text(t) {}  // NOLINT: implicit so scripts read like transcripts
    FakeReply(std::string t) : text(std::move(t)) {}  // NOLINT
    static FakeReply garbage(std::string bytes);
    static FakeReply cut(std::string text, std::size_t bytes);  // close mid-reply
    static FakeReply hangup(std::string text);                  // send, then close
    static FakeReply slow(std::string text, std::chrono::milliseconds delay);

    std::string wire() const;  // the bytes to send
};

struct FakeSmtpScript {
    std::optional<FakeReply> banner = FakeReply("220 fake.test ESMTP");  // nullopt: tarpit
    std::size_t huge_banner_bytes = 0;  // > 0: a multi-line 220 banner of about this many bytes
    std::chrono::milliseconds reply_delay{0};  // before every reply, the banner included
    std::chrono::milliseconds dribble{0};      // > 0: send replies one byte per this interval
    // Overrides per upper-case verb: EHLO HELO MAIL RCPT RSET DATA QUIT NOOP ...
    std::map<std::string, FakeReply> verbs;
    // RCPT answers by lower-case address or local part; others get rcpt_default.
    std::map<std::string, FakeReply> recipients;
    bool accept_all = false;  // every RCPT not in `recipients` gets 250
    FakeReply rcpt_default = "550 5.1.1 no such user";
    // Per-recipient greylisting: the first RCPT for each address gets `greylist_reply`, every
    // later one the scripted answer.
    bool greylist_new_recipients = false;
    FakeReply greylist_reply = "450 4.2.0 Recipient address rejected: Greylisted, try later";
};

class FakeSmtpServer {
  public:
    // Binds ip:port (port 0 = ephemeral) and serves `script` on a thread until stop().
    explicit FakeSmtpServer(FakeSmtpScript script, std::string ip = "127.0.0.1", uint16_t port = 0);
    ~FakeSmtpServer();
    FakeSmtpServer(const FakeSmtpServer&) = delete;
    FakeSmtpServer& operator=(const FakeSmtpServer&) = delete;

    // False (with a reason in error()) when the socket could not be bound.
    bool ok() const { return listen_fd_ >= 0; }
    const std::string& error() const { return error_; }
    const std::string& ip() const { return ip_; }
    uint16_t port() const { return port_; }

    // Closes every connection and joins the thread. Idempotent.
    void stop();

    std::size_t connections_accepted() const { return accepted_.load(); }
    std::size_t current_connections() const { return current_.load(); }
    std::size_t max_concurrent_connections() const { return max_concurrent_.load(); }
    // Every command line received, in order of arrival (all connections).
    std::vector<std::string> commands() const;
    // How many received commands start with `prefix` (case-insensitive), e.g. "RCPT TO:<a@".
    std::size_t count_commands(std::string_view prefix) const;

  private:
    struct Conn;
    void run();
    void on_command(Conn& c, const std::string& line);
    void queue(Conn& c, const FakeReply& r);
    FakeReply answer(const std::string& line);

    FakeSmtpScript script_;
    std::string ip_;
    uint16_t port_ = 0;
    int listen_fd_ = -1;
    int wake_[2] = {-1, -1};  // self-pipe: stop() writes, the thread wakes
    std::string error_;
    std::thread thread_;
    std::atomic<bool> stopping_{false};

    std::atomic<std::size_t> accepted_{0};
    std::atomic<std::size_t> current_{0};
    std::atomic<std::size_t> max_concurrent_{0};
    mutable std::mutex mu_;
    std::vector<std::string> commands_;
    std::set<std::string> seen_recipients_;  // greylisting state, server thread only
};

// A port on `ip` where nothing listens (bound once, then released), for "connection refused".
uint16_t unused_port(const std::string& ip = "127.0.0.1");

// Several fake servers on different loopback addresses sharing one port, as a probe needs (it
// uses one port for every target). Retried a few times when the port is taken on another IP.
class FakeSmtpFleet {
  public:
    explicit FakeSmtpFleet(const std::vector<std::pair<std::string, FakeSmtpScript>>& scripts);
    ~FakeSmtpFleet();
    FakeSmtpFleet(const FakeSmtpFleet&) = delete;
    FakeSmtpFleet& operator=(const FakeSmtpFleet&) = delete;

    bool ok() const { return !servers_.empty(); }
    uint16_t port() const { return servers_.front()->port(); }
    FakeSmtpServer& at(size_t i) { return *servers_.at(i); }

  private:
    std::vector<std::unique_ptr<FakeSmtpServer>> servers_;
};

}  // namespace calloutd::test
