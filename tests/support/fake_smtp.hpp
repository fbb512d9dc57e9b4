// Scriptable fake SMTP server on its own thread, for faults real MTAs can't be made to show.
#pragma once

#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
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

// STARTTLS on the fake server: OpenSSL's server side on the server's own poll thread.
struct FakeTls {
    std::string cert_file;  // PEM (support/tls_cert.hpp makes one)
    std::string key_file;
    bool advertise = true;  // "250-STARTTLS" in the EHLO reply outside TLS
    // What follows "220 2.0.0 Ready to start TLS":
    enum class Fault {
        none,           // a real handshake, then SMTP inside TLS
        garbage,        // bytes that are no TLS record right after the 220, then silence
        garbage_reply,  // the ClientHello answered with bytes that are no TLS record
        stall,          // nothing: the ClientHello is never answered
        reset,          // the connection is reset when the ClientHello arrives
    };
    Fault fault = Fault::none;
    bool stall_after_handshake = false;  // complete the handshake, then never answer again
    // Highest protocol version offered (TLS1_1_VERSION: an outdated server); 0 = OpenSSL's.
    int max_version = 0;
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
    // STARTTLS offered and served (nullopt: "502" to STARTTLS, not advertised).
    std::optional<FakeTls> tls;
    // Inside TLS these override `verbs` (an EHLO reply that offers more after STARTTLS).
    std::map<std::string, FakeReply> tls_verbs;
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
    // Completed TLS handshakes (server side), and the SNI names they carried, in order.
    std::size_t tls_handshakes() const { return tls_handshakes_.load(); }
    std::vector<std::string> tls_server_names() const;
    // Every command line received, in order of arrival (all connections).
    std::vector<std::string> commands() const;
    // How many received commands start with `prefix` (case-insensitive), e.g. "RCPT TO:<a@".
    std::size_t count_commands(std::string_view prefix) const;

  private:
    struct Conn;
    void run();
    void on_command(Conn& c, const std::string& line);
    void queue(Conn& c, const FakeReply& r);
    FakeReply answer(const Conn& c, const std::string& line);
    void on_readable(Conn& c);
    void on_writable(Conn& c);
    void start_tls(Conn& c);
    void step_handshake(Conn& c);
    bool make_tls_context();

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
    std::atomic<std::size_t> tls_handshakes_{0};
    struct CtxFree {
        void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
    };
    std::unique_ptr<SSL_CTX, CtxFree> tls_ctx_;
    mutable std::mutex mu_;
    std::vector<std::string> commands_;
    std::vector<std::string> server_names_;
    std::set<std::string> seen_recipients_;  // greylisting state, server thread only
};

// A port on `ip` where nothing listens (bound once, then released), for "connection refused".
uint16_t unused_port(const std::string& ip = "127.0.0.1");

// The body of a fake-target process (tests/tools/fake_smtp_target, bench/bench_smtp_target): serves
// `script` on ip:port, prints "port=N" on stdout, and stops at SIGTERM or SIGINT, then calls
// `after_stop` (for final counts). Returns the process's exit status (1 when it cannot listen;
// the reason on stderr after `name`).
int serve_until_signal(const char* name, FakeSmtpScript script, const std::string& ip,
                       uint16_t port,
                       const std::function<void(const FakeSmtpServer&)>& after_stop = {});

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
