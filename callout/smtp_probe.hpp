// SMTP callout probe: one sender address checked against an ordered list of MX addresses.
#pragma once

#include <uv.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "callout/smtp_extensions.hpp"
#include "callout/smtp_reply.hpp"
#include "callout/transcript.hpp"

namespace calloutd {

class TlsContext;
class TlsSession;

// callout.tls: STARTTLS whenever offered, a failed handshake retried once in plaintext (may);
// never MAIL FROM without TLS (encrypt); no STARTTLS at all (none).
enum class TlsMode { may, encrypt, none };

struct ProbeOptions {
    uint16_t port = 25;
    std::string helo_name;
    std::chrono::milliseconds connect_timeout{30000};
    std::chrono::milliseconds command_timeout{30000};  // each reply, the banner included
    std::chrono::milliseconds probe_timeout{60000};    // overall, across all targets
    bool random_check = true;
    std::string source_address;  // empty = none, else an IP literal to bind
    std::size_t max_line = 2048;
    std::size_t max_reply = 65536;
    TlsMode tls = TlsMode::may;
    std::chrono::milliseconds tls_timeout{10000};  // the handshake after "220 Ready to start TLS"
    // The SSL_CTX every probe of a configuration shares (Callout makes one); when null, a probe
    // that meets STARTTLS makes its own.
    std::shared_ptr<TlsContext> tls_context;
};

// One address to try, already resolved and vetted by the SSRF guard.
struct ProbeTarget {
    std::string mx_host;
    std::string ip;
};

struct ProbeResult {
    std::vector<HostAttempt> attempts;  // one per target actually tried, in order
    std::chrono::milliseconds elapsed{};
};

// One sentence naming the stage where an attempt ended, in the words of the wording table
// (transcript.hpp): "timeout while waiting for RCPT reply",
// "connection closed while waiting for banner", "connect failed: connection refused",
// "550 reply to RCPT: ...".
std::string describe(const HostAttempt& attempt);

// True when `line` may be written as one SMTP command: no CR, LF, NUL or other control byte,
// and bytes above 0x7f only when `utf8` (SMTPUTF8 was declared) and then well-formed UTF-8.
bool is_safe_command_line(std::string_view line, bool utf8 = false);

// The probe state machine. Stages run in SmtpStage order; each has its timeout and wording in a
// table in smtp_probe.cpp. Lifetime: once started, the probe keeps itself alive until all its
// libuv handles are closed, whether or not the caller keeps its shared_ptr. The completion
// callback runs exactly once, from the loop, never from inside start(), and not at all after
// cancel().
class SmtpProbe : public std::enable_shared_from_this<SmtpProbe> {
    struct Key {};  // only create() may construct

  public:
    using Callback = std::function<void(ProbeResult)>;

    static std::shared_ptr<SmtpProbe> create(uv_loop_t* loop, ProbeOptions options);
    SmtpProbe(Key, uv_loop_t* loop, ProbeOptions options);
    ~SmtpProbe();
    SmtpProbe(const SmtpProbe&) = delete;
    SmtpProbe& operator=(const SmtpProbe&) = delete;

    // Starts the conversation with targets[0]. `sender` is the address under test as it goes
    // on the wire (local@domain; a UTF-8 one is only asked under SMTPUTF8, see
    // SenderAddress::wire_address()); `random_local_part` is used for the accept-all RCPT at the
    // same domain. Call at most once.
    void start(std::vector<ProbeTarget> targets, std::string sender, std::string random_local_part,
               Callback done);
    // Stops all I/O and suppresses the callback. Safe at any time, also from inside callbacks.
    void cancel();

    // Optional per-target admission (per-MX budgets), asked right before connecting to each
    // target; a target not admitted is skipped. `release` runs once the connection to an
    // admitted target is closed. The gate may answer before it returns. Set before start().
    // cancel() releases a held slot at once and then never calls either again: an admission
    // that arrives after cancel() is the gate owner's to give back.
    using Gate = std::function<void(const ProbeTarget&, std::function<void(bool admitted)>)>;
    using Release = std::function<void(const ProbeTarget&)>;
    void set_gate(Gate gate, Release release) {
        gate_ = std::move(gate);
        release_ = std::move(release);
    }

  private:
    // Where the connection is, orthogonal to the SMTP stage: waiting means a command is out
    // (or the banner is due) and the stage timer runs.
    enum class Phase { idle, admitting, connecting, waiting, quitting, closing, finished };
    struct GateState {
        bool in_call = true;
        std::optional<bool> answer;
    };
    // What follows a closed connection: the next target, the same target again without
    // STARTTLS (a failed handshake at callout.tls = may), or nothing.
    enum class After { next_target, retry_plain, stop };
    // How a connection is left when an attempt ends: QUIT first (and a short wait for its
    // reply) while the conversation is still in step, or closed at once.
    enum class Leave { with_quit, at_once };

    void connect_next();
    void after_connection();
    bool open_target(std::size_t index);
    void on_gate(std::size_t index, bool admitted);
    void release_held();
    void send(std::string line, SmtpStage stage);
    int write_line(std::string line);
    int write_raw(std::string bytes);
    void on_connected(int status);
    void on_read(ssize_t nread);
    void on_plaintext(std::string_view bytes);
    void on_stream_end(ssize_t status);
    void on_reply(SmtpReply reply);
    void after_greeting();
    void start_mail();
    std::string mail_command() const;
    void begin_handshake();
    void drive_handshake();
    bool flush_tls();
    bool ensure_tls_context(std::string& error);
    void on_stage_timeout();
    void on_deadline();
    void on_tcp_closed();
    void maybe_deliver();
    void end_with_reply(SmtpReply reply, After after, Leave leave);
    void end_attempt(StageEvent event, std::string detail, After after, Leave leave);
    After after_failure() const;
    void close_connection();
    void finish();
    void record(bool sent, std::string_view text);
    void record_reply(const SmtpReply& reply);
    void record_note(std::string text);
    void arm_stage_timer();
    void arm_stage_timer(std::chrono::milliseconds timeout);
    HostAttempt& attempt() { return result_.attempts.back(); }

    static void alloc_cb(uv_handle_t* handle, size_t suggested, uv_buf_t* buf);
    static void read_cb(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
    static void connect_cb(uv_connect_t* req, int status);
    static void write_cb(uv_write_t* req, int status);
    static void stage_timer_cb(uv_timer_t* timer);
    static void deadline_cb(uv_timer_t* timer);
    static void tcp_close_cb(uv_handle_t* handle);
    static void handle_close_cb(uv_handle_t* handle);

    uv_loop_t* loop_;
    ProbeOptions options_;
    std::vector<ProbeTarget> targets_;
    Gate gate_;
    Release release_;
    std::optional<std::size_t> held_;  // admitted target whose slot is still held
    std::size_t next_target_ = 0;
    std::size_t current_ = 0;                 // target of the current attempt
    std::optional<std::size_t> retry_plain_;  // target to connect to again without STARTTLS
    bool plain_only_ = false;                 // this attempt never says STARTTLS
    std::string sender_;
    bool utf8_address_ = false;  // sender_ has non-ASCII bytes: only asked under SMTPUTF8
    std::string random_address_;
    Callback done_;
    std::shared_ptr<SmtpProbe> self_;  // set while any handle is open

    uv_tcp_t tcp_{};
    uv_connect_t connect_req_{};
    uv_timer_t stage_timer_{};
    uv_timer_t deadline_timer_{};
    int open_handles_ = 0;
    bool tcp_open_ = false;

    Phase phase_ = Phase::idle;
    SmtpStage stage_ = SmtpStage::connect;
    After after_close_ = After::stop;
    bool cancelled_ = false;
    bool deadline_hit_ = false;
    std::size_t wire_bytes_ = 0;  // transcript size of the current attempt, capped

    SmtpReplyParser parser_;
    SmtpExtensions ext_;               // from this connection's last EHLO reply
    std::unique_ptr<TlsSession> tls_;  // from "220 Ready to start TLS" until the TCP close
    std::array<char, 4096> read_buf_{};
    ProbeResult result_;
    std::chrono::steady_clock::time_point started_;
    std::chrono::steady_clock::time_point attempt_started_;
};

}  // namespace calloutd
