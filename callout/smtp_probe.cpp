// SMTP callout probe over libuv: per-stage table, conversation driver, handle lifetime.
// Over 500 lines as one concept: one state machine; the stage table, the conversation driver and
// the handle lifetime share its invariants (one phase, one open-handle count, one deadline).
#include "callout/smtp_probe.hpp"

#include <algorithm>
#include <utility>

#include "callout/tls_context.hpp"
#include "callout/tls_session.hpp"
#include "util/panic.hpp"

namespace calloutd {

namespace {

using std::chrono::milliseconds;

using Timeout = milliseconds ProbeOptions::*;

// Per-stage facts, indexed by SmtpStage (Postfix smtp_proto.c keeps the same kind of table). The
// words for each stage are in the wording table of transcript.cpp.
struct StageRow {
    SmtpStage stage;
    Timeout timeout;  // the option that bounds this stage
    // A timeout, hang-up, garbage or 421 here says something about this host only, so the next
    // target is tried. At the RCPT stages it would only make us probe the same domain twice.
    // (A failed TLS handshake at callout.tls = may first retries the same host in plaintext.)
    bool try_next_on_failure;
};

constexpr StageRow kStages[] = {
    {SmtpStage::connect, &ProbeOptions::connect_timeout, true},
    {SmtpStage::banner, &ProbeOptions::command_timeout, true},
    {SmtpStage::ehlo, &ProbeOptions::command_timeout, true},
    {SmtpStage::helo, &ProbeOptions::command_timeout, true},
    {SmtpStage::starttls, &ProbeOptions::command_timeout, true},
    {SmtpStage::tls_handshake, &ProbeOptions::tls_timeout, true},
    {SmtpStage::mail_from, &ProbeOptions::command_timeout, true},
    {SmtpStage::random_rcpt, &ProbeOptions::command_timeout, false},
    {SmtpStage::rset, &ProbeOptions::command_timeout, true},
    {SmtpStage::mail_from_again, &ProbeOptions::command_timeout, true},
    {SmtpStage::rcpt, &ProbeOptions::command_timeout, false},
    {SmtpStage::quit, &ProbeOptions::command_timeout, false},
};

constexpr bool table_in_stage_order() {
    for (std::size_t i = 0; i < std::size(kStages); ++i)
        if (static_cast<std::size_t>(kStages[i].stage) != i) return false;
    return true;
}
static_assert(table_in_stage_order(), "kStages must list every SmtpStage in declaration order");

const StageRow& row(SmtpStage s) {
    return kStages[static_cast<std::size_t>(s)];
}

// The QUIT reply does not matter; do not let a slow peer hold the probe open for it.
constexpr milliseconds kQuitWait{500};
// A transcript is for humans; a hostile peer must not make it large.
constexpr std::size_t kMaxWireBytes = 16 * 1024;

// A write request and the bytes it sends, alive until libuv calls back.
struct WriteReq {
    uv_write_t req{};
    std::string data;
};

bool parse_ip(const std::string& ip, uint16_t port, sockaddr_storage* out) {
    *out = {};
    if (uv_ip4_addr(ip.c_str(), port, reinterpret_cast<sockaddr_in*>(out)) == 0) return true;
    if (uv_ip6_addr(ip.c_str(), port, reinterpret_cast<sockaddr_in6*>(out)) == 0) return true;
    return false;
}

std::string domain_of(const std::string& address) {
    auto at = address.rfind('@');
    return at == std::string::npos ? std::string() : address.substr(at + 1);
}

bool has_non_ascii(std::string_view s) {
    return std::any_of(s.begin(), s.end(),
                       [](char ch) { return static_cast<unsigned char>(ch) >= 0x80; });
}

// Length of the well-formed UTF-8 sequence at s[i] (s[i] >= 0x80), 0 when malformed, overlong,
// a surrogate, above U+10FFFF or a C1 control: the same rule the address parser applies.
std::size_t utf8_length(std::string_view s, std::size_t i) {
    auto at = [&](std::size_t k) -> unsigned {
        return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u;
    };
    auto cont = [](unsigned c) { return c >= 0x80 && c <= 0xbf; };
    const unsigned c0 = at(0);
    const unsigned c1 = at(1);
    if (c0 == 0xc2) return c1 >= 0xa0 && c1 <= 0xbf ? 2 : 0;
    if (c0 >= 0xc3 && c0 <= 0xdf) return cont(c1) ? 2 : 0;
    if (c0 >= 0xe0 && c0 <= 0xef) {
        const unsigned lo = c0 == 0xe0 ? 0xa0 : 0x80;
        const unsigned hi = c0 == 0xed ? 0x9f : 0xbf;
        return c1 >= lo && c1 <= hi && cont(at(2)) ? 3 : 0;
    }
    if (c0 >= 0xf0 && c0 <= 0xf4) {
        const unsigned lo = c0 == 0xf0 ? 0x90 : 0x80;
        const unsigned hi = c0 == 0xf4 ? 0x8f : 0xbf;
        return c1 >= lo && c1 <= hi && cont(at(2)) && cont(at(3)) ? 4 : 0;
    }
    return 0;
}

}  // namespace

bool is_safe_command_line(std::string_view line, bool utf8) {
    for (std::size_t i = 0; i < line.size();) {
        const auto c = static_cast<unsigned char>(line[i]);
        if (c < 0x20 || c == 0x7f) return false;
        if (c < 0x80) {
            ++i;
            continue;
        }
        const std::size_t len = utf8 ? utf8_length(line, i) : 0;
        if (len == 0) return false;
        i += len;
    }
    return true;
}

std::string describe(const HostAttempt& a) {
    const std::string name(stage_name(a.last_stage));
    const std::string detail = a.detail.empty() ? std::string() : ": " + a.detail;
    switch (a.event) {
        case StageEvent::reply:
            if (a.last_reply)
                return std::to_string(a.last_reply->code) + " reply to " + name + ": " +
                       a.last_reply->text();
            return "reply to " + name;
        case StageEvent::timeout:
        case StageEvent::deadline:
        case StageEvent::closed:
            return event_in_stage(a.event, a.last_stage);
        case StageEvent::connect_failed:
        case StageEvent::io_error:
            return event_in_stage(a.event, a.last_stage) + detail;
        case StageEvent::protocol_error:
            if (a.detail.starts_with("unsafe")) return "refused to send " + name + detail;
            if (a.last_stage == SmtpStage::tls_handshake) return "TLS handshake failed" + detail;
            return event_in_stage(a.event, a.last_stage) + detail;
        case StageEvent::tls_unavailable:
            return a.detail.empty()
                       ? std::string(event_phrase(a.event)) + ", and callout.tls = encrypt"
                       : "no TLS, and callout.tls = encrypt" + detail;
        case StageEvent::smtputf8_unsupported:
            return std::string(event_phrase(a.event)) + ": a UTF-8 address is not asked";
    }
    return "unknown";
}

std::shared_ptr<SmtpProbe> SmtpProbe::create(uv_loop_t* loop, ProbeOptions options) {
    return std::make_shared<SmtpProbe>(Key{}, loop, std::move(options));
}

SmtpProbe::SmtpProbe(Key, uv_loop_t* loop, ProbeOptions options)
    : loop_(loop),
      options_(std::move(options)),
      parser_(ReplyLimits{options_.max_line, options_.max_reply}) {}

SmtpProbe::~SmtpProbe() {
    if (open_handles_ != 0) panic(__func__, "destroyed with libuv handles open");
}

void SmtpProbe::start(std::vector<ProbeTarget> targets, std::string sender,
                      std::string random_local_part, Callback done) {
    if (phase_ != Phase::idle) panic(__func__, "started twice");
    if (cancelled_) return;
    targets_ = std::move(targets);
    sender_ = std::move(sender);
    utf8_address_ = has_non_ascii(sender_);
    random_address_ = random_local_part + "@" + domain_of(sender_);
    done_ = std::move(done);
    started_ = std::chrono::steady_clock::now();
    self_ = shared_from_this();

    uv_timer_init(loop_, &stage_timer_);
    stage_timer_.data = this;
    uv_timer_init(loop_, &deadline_timer_);
    deadline_timer_.data = this;
    open_handles_ += 2;
    uv_timer_start(&deadline_timer_, deadline_cb,
                   static_cast<uint64_t>(options_.probe_timeout.count()), 0);
    // Even when every target fails at once, the callback comes later: it is only invoked from
    // a close callback, and libuv never runs those synchronously.
    connect_next();
}

void SmtpProbe::cancel() {
    cancelled_ = true;
    done_ = nullptr;
    // The owner may be going away: give back a held slot now and never call into it again.
    release_held();
    gate_ = nullptr;
    release_ = nullptr;
    if (phase_ != Phase::idle) finish();
}

// Opens the next target's connection, skipping targets that fail before any I/O and targets
// the gate (per-MX budget) does not admit.
void SmtpProbe::connect_next() {
    while (!deadline_hit_ && (retry_plain_ || next_target_ < targets_.size())) {
        // A plaintext retry is a new connection like any other: the gate is asked again.
        plain_only_ = retry_plain_.has_value();
        std::size_t index = retry_plain_ ? *retry_plain_ : next_target_++;
        retry_plain_.reset();
        if (gate_) {
            // The gate may answer at once or later; `state` tells the two apart.
            auto state = std::make_shared<GateState>();
            std::weak_ptr<SmtpProbe> weak = weak_from_this();
            phase_ = Phase::admitting;
            gate_(targets_[index], [weak, state, index](bool admitted) {
                if (state->in_call) {
                    state->answer = admitted;
                    return;
                }
                if (auto self = weak.lock()) self->on_gate(index, admitted);
            });
            state->in_call = false;
            if (!state->answer) return;  // on_gate continues later
            if (!*state->answer) continue;
            held_ = index;
        }
        if (open_target(index)) return;
    }
    finish();
}

void SmtpProbe::on_gate(std::size_t index, bool admitted) {
    if (phase_ != Phase::admitting) {
        // Out of time meanwhile: give the slot back at once. (After cancel() release_ is gone
        // and the gate's owner takes the slot back itself.)
        if (admitted && release_) release_(targets_[index]);
        return;
    }
    if (admitted) {
        held_ = index;
        if (open_target(index)) return;
    }
    connect_next();
}

void SmtpProbe::release_held() {
    if (!held_) return;
    if (release_) release_(targets_[*held_]);
    held_.reset();
}

// Starts connecting to targets_[index]; false when it failed before any I/O (try the next).
bool SmtpProbe::open_target(std::size_t index) {
    const ProbeTarget& t = targets_[index];
    HostAttempt a;
    a.mx_host = t.mx_host;
    a.address = t.ip;
    a.plaintext_retry = plain_only_;
    result_.attempts.push_back(std::move(a));
    attempt_started_ = std::chrono::steady_clock::now();
    wire_bytes_ = 0;
    parser_.reset();
    ext_ = {};
    current_ = index;
    stage_ = SmtpStage::connect;
    phase_ = Phase::connecting;

    sockaddr_storage addr;
    if (!parse_ip(t.ip, options_.port, &addr)) {
        attempt().detail = "invalid address";
        release_held();
        return false;
    }
    if (int r = uv_tcp_init(loop_, &tcp_); r < 0) {
        attempt().detail = uv_strerror(r);
        release_held();
        return false;
    }
    tcp_.data = this;
    tcp_open_ = true;
    ++open_handles_;
    if (!options_.source_address.empty()) {
        sockaddr_storage src;
        if (!parse_ip(options_.source_address, 0, &src)) {
            end_attempt(StageEvent::connect_failed, "invalid source address", After::stop,
                        Leave::at_once);
            return true;
        }
        if (src.ss_family != addr.ss_family) {
            end_attempt(StageEvent::connect_failed, "source address family mismatch",
                        After::next_target, Leave::at_once);
            return true;
        }
        if (int r = uv_tcp_bind(&tcp_, reinterpret_cast<sockaddr*>(&src), 0); r < 0) {
            end_attempt(StageEvent::connect_failed,
                        std::string("bind to source address: ") + uv_strerror(r), After::stop,
                        Leave::at_once);
            return true;
        }
    }
    if (int r =
            uv_tcp_connect(&connect_req_, &tcp_, reinterpret_cast<sockaddr*>(&addr), connect_cb);
        r < 0) {
        end_attempt(StageEvent::connect_failed, uv_strerror(r), After::next_target, Leave::at_once);
        return true;
    }
    arm_stage_timer();
    return true;
}

void SmtpProbe::on_connected(int status) {
    if (status == UV_ECANCELED || phase_ != Phase::connecting) return;
    if (status < 0) {
        end_attempt(StageEvent::connect_failed, uv_strerror(status), After::next_target,
                    Leave::at_once);
        return;
    }
    stage_ = SmtpStage::banner;
    phase_ = Phase::waiting;
    if (int r = uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), alloc_cb, read_cb); r < 0) {
        end_attempt(StageEvent::io_error, uv_strerror(r), After::next_target, Leave::at_once);
        return;
    }
    arm_stage_timer();
}

// Bytes from the socket: straight to the reply parser, or through the TLS session once
// STARTTLS has been accepted.
void SmtpProbe::on_read(ssize_t nread) {
    if (phase_ != Phase::waiting && phase_ != Phase::quitting) return;
    if (nread == 0) return;
    if (nread < 0) return on_stream_end(nread);
    const std::string_view bytes(read_buf_.data(), static_cast<std::size_t>(nread));
    if (!tls_) return on_plaintext(bytes);
    tls_->feed(bytes);
    if (stage_ == SmtpStage::tls_handshake) return drive_handshake();
    std::string plain;
    const TlsSession::Status status = tls_->read(plain);
    if (!flush_tls()) return;
    if (!plain.empty()) on_plaintext(plain);
    if (phase_ != Phase::waiting && phase_ != Phase::quitting) return;  // ended meanwhile
    if (status == TlsSession::Status::closed) return on_stream_end(UV_EOF);
    if (status == TlsSession::Status::failed) {
        if (phase_ == Phase::quitting) return close_connection();
        end_attempt(StageEvent::protocol_error, "TLS: " + tls_->error(), after_failure(),
                    Leave::at_once);
    }
}

void SmtpProbe::on_stream_end(ssize_t status) {
    if (phase_ == Phase::quitting) return close_connection();
    if (status == UV_EOF)
        return end_attempt(StageEvent::closed, "", after_failure(), Leave::at_once);
    end_attempt(StageEvent::io_error, uv_strerror(static_cast<int>(status)), after_failure(),
                Leave::at_once);
}

void SmtpProbe::on_plaintext(std::string_view bytes) {
    parser_.feed(bytes);
    if (phase_ == Phase::quitting) {
        auto bye = parser_.next();
        if (bye) record_reply(*bye);
        if (bye || parser_.failed()) close_connection();
        return;
    }
    auto reply = parser_.next();
    if (!reply) {
        if (parser_.failed())
            end_attempt(StageEvent::protocol_error, parser_.error(), after_failure(),
                        Leave::at_once);
        return;  // a partial reply; the stage timer keeps running, it is not reset by data
    }
    record_reply(*reply);
    if (stage_ == SmtpStage::starttls && reply->code / 100 == 2 &&
        (parser_.failed() || parser_.has_pending())) {
        // Bytes after "220 Ready to start TLS" were sent before our ClientHello: a broken
        // server, or plaintext injected to be read as if it came through TLS (CVE-2011-0411).
        // Never acted upon; the handshake has failed.
        stage_ = SmtpStage::tls_handshake;
        return end_attempt(StageEvent::protocol_error,
                           "data after the 220 reply to STARTTLS, before the handshake",
                           After::next_target, Leave::at_once);
    }
    if (parser_.failed())
        return end_attempt(StageEvent::protocol_error, parser_.error(), after_failure(),
                           Leave::at_once);
    // We never pipeline, so anything past the reply to our one outstanding command is a
    // violation; acting on it could desynchronise command and reply.
    if (parser_.has_pending()) {
        return end_attempt(StageEvent::protocol_error,
                           "unexpected data after " + std::string(stage_name(stage_)) +
                               " reply (pipelining violation)",
                           after_failure(), Leave::at_once);
    }
    on_reply(std::move(*reply));
}

// The conversation itself: what a complete reply in the current stage leads to.
void SmtpProbe::on_reply(SmtpReply reply) {
    uv_timer_stop(&stage_timer_);
    const int cls = reply.code / 100;
    switch (stage_) {
        case SmtpStage::mail_from:
            attempt().mail_from = reply;
            break;
        case SmtpStage::random_rcpt:
            attempt().random_rcpt = reply;
            break;
        case SmtpStage::rcpt:
            attempt().rcpt = reply;
            break;
        default:
            break;
    }
    // 421: the server is closing this channel. Before any recipient is named another MX may
    // well answer; at the RCPT stages that would only probe the same address again.
    if (reply.code == 421) return end_with_reply(std::move(reply), after_failure(), Leave::at_once);

    const std::string rcpt = "RCPT TO:<" + sender_ + ">";
    switch (stage_) {
        case SmtpStage::banner:
            if (cls == 2) return send("EHLO " + options_.helo_name, SmtpStage::ehlo);
            return end_with_reply(std::move(reply), After::next_target, Leave::with_quit);
        case SmtpStage::ehlo:
            if (cls == 2) {
                // Read once per EHLO; after STARTTLS only the EHLO inside TLS counts (RFC 3207
                // 4.2: the client must discard what it learnt before).
                ext_ = parse_ehlo_reply(reply);
                attempt().extensions = ext_;
                if (!tls_) attempt().starttls_offered = ext_.starttls;
                return after_greeting();
            }
            if (cls == 5) return send("HELO " + options_.helo_name, SmtpStage::helo);
            return end_with_reply(std::move(reply), After::next_target, Leave::with_quit);
        case SmtpStage::helo:
            if (cls == 2) {
                ext_ = {};  // HELO announces nothing
                attempt().extensions = ext_;
                return after_greeting();
            }
            return end_with_reply(std::move(reply), After::next_target, Leave::with_quit);
        case SmtpStage::starttls:
            if (cls == 2) return begin_handshake();
            // RFC 3207 4: a refused STARTTLS leaves a usable plaintext session.
            if (options_.tls == TlsMode::may) return start_mail();
            return end_with_reply(std::move(reply), After::next_target, Leave::with_quit);
        case SmtpStage::mail_from:
        case SmtpStage::mail_from_again:
            if (cls == 2) {
                if (stage_ == SmtpStage::mail_from && options_.random_check)
                    return send("RCPT TO:<" + random_address_ + ">", SmtpStage::random_rcpt);
                return send(rcpt, SmtpStage::rcpt);
            }
            // 5xx to MAIL FROM:<> is a fact about the domain's policy; 4xx may be this host.
            return end_with_reply(std::move(reply), cls == 5 ? After::stop : After::next_target,
                                  Leave::with_quit);
        case SmtpStage::random_rcpt:
            if (cls == 2) return end_with_reply(std::move(reply), After::stop, Leave::with_quit);
            return send("RSET", SmtpStage::rset);
        case SmtpStage::rset:
            if (cls == 2) return send(mail_command(), SmtpStage::mail_from_again);
            return end_with_reply(std::move(reply), After::next_target, Leave::with_quit);
        case SmtpStage::rcpt:
            return end_with_reply(std::move(reply), After::stop, Leave::with_quit);
        case SmtpStage::connect:
        case SmtpStage::tls_handshake:
        case SmtpStage::quit:
            panic(__func__, "reply outside a conversation stage");
    }
}

// After a 2xx to EHLO or HELO: STARTTLS if offered and wanted, else on to MAIL FROM.
void SmtpProbe::after_greeting() {
    if (tls_ || plain_only_ || options_.tls == TlsMode::none) return start_mail();
    std::string why;
    if (ext_.starttls && ensure_tls_context(why)) return send("STARTTLS", SmtpStage::starttls);
    if (options_.tls == TlsMode::encrypt)
        return end_attempt(StageEvent::tls_unavailable, why, After::next_target, Leave::with_quit);
    if (!why.empty()) record_note("TLS not attempted: " + why);
    start_mail();
}

// MAIL FROM:<>, unless the address needs SMTPUTF8 that this server does not offer: then it is
// not asked at all (an SMTPUTF8-less server may mangle it into "user unknown").
void SmtpProbe::start_mail() {
    if (utf8_address_ && !ext_.smtputf8)
        return end_attempt(StageEvent::smtputf8_unsupported, "", After::stop, Leave::with_quit);
    send(mail_command(), SmtpStage::mail_from);
}

// ASCII addresses never declare SMTPUTF8 (RFC 6531 3.4 only asks it for UTF-8 envelopes).
std::string SmtpProbe::mail_command() const {
    return utf8_address_ ? "MAIL FROM:<> SMTPUTF8" : "MAIL FROM:<>";
}

bool SmtpProbe::ensure_tls_context(std::string& error) {
    if (!options_.tls_context) options_.tls_context = TlsContext::create(error);
    return options_.tls_context != nullptr;
}

// "220 Ready to start TLS" arrived with nothing after it: the ClientHello goes out now.
void SmtpProbe::begin_handshake() {
    stage_ = SmtpStage::tls_handshake;
    std::string error;
    tls_ = TlsSession::create(options_.tls_context->get(), targets_[current_].mx_host, error);
    if (!tls_)
        return end_attempt(StageEvent::protocol_error, error, After::next_target, Leave::at_once);
    phase_ = Phase::waiting;
    arm_stage_timer();
    drive_handshake();
}

// One step of the handshake with the bytes fed so far; when it completes, EHLO again inside.
void SmtpProbe::drive_handshake() {
    const TlsSession::Status status = tls_->handshake();
    if (!flush_tls()) return;
    if (status == TlsSession::Status::more) return;  // the stage timer keeps running
    if (status != TlsSession::Status::ok)
        return end_attempt(StageEvent::protocol_error, tls_->error(), After::next_target,
                           Leave::at_once);
    uv_timer_stop(&stage_timer_);
    TlsSessionInfo info = tls_->info();
    record_note("TLS " + info.version + " " + info.cipher);
    record_note(info.peer_subject.empty()
                    ? std::string("TLS peer certificate: none")
                    : "TLS peer subject=" + info.peer_subject + " issuer=" + info.peer_issuer);
    attempt().tls = std::move(info);
    ext_ = {};
    // The server speaks only after our EHLO; anything decrypted already is unsolicited.
    std::string early;
    const TlsSession::Status rest = tls_->read(early);
    if (!flush_tls()) return;
    if (!early.empty() || rest != TlsSession::Status::ok) {
        stage_ = SmtpStage::ehlo;
        return end_attempt(StageEvent::protocol_error,
                           early.empty() ? "TLS: " + tls_->error()
                                         : std::string("unexpected data right after the TLS "
                                                       "handshake (pipelining violation)"),
                           After::next_target, Leave::at_once);
    }
    send("EHLO " + options_.helo_name, SmtpStage::ehlo);
}

// Sends what the TLS session has to say (handshake messages, records); false when the write
// failed, in which case the attempt has ended.
bool SmtpProbe::flush_tls() {
    std::string out = tls_->take_output();
    if (out.empty()) return true;
    if (int r = write_raw(std::move(out)); r < 0) {
        if (phase_ == Phase::quitting) {
            close_connection();
            return false;
        }
        end_attempt(StageEvent::io_error, std::string("write: ") + uv_strerror(r), after_failure(),
                    Leave::at_once);
        return false;
    }
    return true;
}

// Writes one command for `stage` after the injection check, and waits for its reply.
void SmtpProbe::send(std::string line, SmtpStage stage) {
    stage_ = stage;
    // UTF-8 may reach the wire only in a recipient, and only once SMTPUTF8 was declared.
    const bool utf8 = utf8_address_ && ext_.smtputf8 &&
                      (stage == SmtpStage::random_rcpt || stage == SmtpStage::rcpt);
    if (!is_safe_command_line(line, utf8)) {
        const bool helo = stage == SmtpStage::ehlo || stage == SmtpStage::helo;
        return end_attempt(StageEvent::protocol_error, helo ? "unsafe HELO name" : "unsafe address",
                           After::stop, Leave::with_quit);
    }
    if (int r = write_line(std::move(line)); r < 0) {
        return end_attempt(StageEvent::io_error, std::string("write: ") + uv_strerror(r),
                           after_failure(), Leave::at_once);
    }
    phase_ = Phase::waiting;
    arm_stage_timer();
}

int SmtpProbe::write_line(std::string line) {
    record(true, line);
    line += "\r\n";
    if (!tls_) return write_raw(std::move(line));
    if (!tls_->write(line)) return UV_EPROTO;
    return write_raw(tls_->take_output());
}

int SmtpProbe::write_raw(std::string bytes) {
    auto req = std::make_unique<WriteReq>();
    req->data = std::move(bytes);
    req->req.data = req.get();
    uv_buf_t buf = uv_buf_init(req->data.data(), static_cast<unsigned>(req->data.size()));
    int r = uv_write(&req->req, reinterpret_cast<uv_stream_t*>(&tcp_), &buf, 1, write_cb);
    // On success libuv owns the request until write_cb, which takes it back.
    if (r == 0) (void)req.release();
    return r;
}

void SmtpProbe::on_stage_timeout() {
    if (phase_ == Phase::quitting) return close_connection();
    if (phase_ != Phase::connecting && phase_ != Phase::waiting) return;
    end_attempt(StageEvent::timeout, "", after_failure(), Leave::at_once);
}

void SmtpProbe::on_deadline() {
    deadline_hit_ = true;
    switch (phase_) {
        case Phase::connecting:
        case Phase::waiting:
            return end_attempt(StageEvent::deadline, "", After::stop, Leave::at_once);
        case Phase::quitting:
            return close_connection();
        case Phase::admitting:  // waiting for the gate: nothing is open but the timers
            return finish();
        case Phase::idle:
        case Phase::closing:  // the close callback sees deadline_hit_ and finishes
        case Phase::finished:
            return;
    }
}

void SmtpProbe::end_with_reply(SmtpReply reply, After after, Leave leave) {
    attempt().last_reply = std::move(reply);
    end_attempt(StageEvent::reply, "", after, leave);
}

// What a failure in the current stage leads to (kStages: try_next_on_failure).
SmtpProbe::After SmtpProbe::after_failure() const {
    return row(stage_).try_next_on_failure ? After::next_target : After::stop;
}

// Records how the current attempt ended and winds the connection down (politely if asked).
void SmtpProbe::end_attempt(StageEvent event, std::string detail, After after, Leave leave) {
    if (phase_ == Phase::idle || phase_ == Phase::closing || phase_ == Phase::finished) return;
    uv_timer_stop(&stage_timer_);
    HostAttempt& a = attempt();
    a.last_stage = stage_;
    a.event = event;
    a.detail = std::move(detail);
    if (stage_ == SmtpStage::tls_handshake && event != StageEvent::deadline) {
        // Opportunistic TLS, as Postfix does it: a handshake that fails is retried once on a
        // new connection without STARTTLS, so a broken TLS stack costs no verification.
        a.tls_failed = true;
        record_note("TLS handshake failed: " +
                    (a.detail.empty() ? std::string(event_phrase(event)) : a.detail));
        if (options_.tls == TlsMode::may) after = After::retry_plain;
    }
    after_close_ = deadline_hit_ ? After::stop : after;
    if (leave == Leave::with_quit && tcp_open_ && phase_ == Phase::waiting &&
        write_line("QUIT") == 0) {
        phase_ = Phase::quitting;
        arm_stage_timer(std::min(options_.command_timeout, kQuitWait));
        return;
    }
    close_connection();
}

void SmtpProbe::close_connection() {
    uv_timer_stop(&stage_timer_);
    phase_ = Phase::closing;
    if (!tcp_open_) return after_connection();
    auto* handle = reinterpret_cast<uv_handle_t*>(&tcp_);
    if (!uv_is_closing(handle)) {
        uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
        uv_close(handle, tcp_close_cb);
    }
}

void SmtpProbe::on_tcp_closed() {
    tcp_open_ = false;
    --open_handles_;
    tls_.reset();  // the SSL object and its BIOs go with the connection, on every path
    release_held();
    if (phase_ == Phase::finished) return maybe_deliver();
    after_connection();
}

void SmtpProbe::after_connection() {
    if (deadline_hit_ || after_close_ == After::stop) return finish();
    if (after_close_ == After::retry_plain) retry_plain_ = current_;
    connect_next();
}

// Closes every handle; the result is delivered when the last close callback has run.
void SmtpProbe::finish() {
    if (phase_ == Phase::finished) return;
    phase_ = Phase::finished;
    result_.elapsed =
        std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - started_);
    for (uv_timer_t* t : {&stage_timer_, &deadline_timer_}) {
        auto* h = reinterpret_cast<uv_handle_t*>(t);
        if (!uv_is_closing(h)) {
            uv_timer_stop(t);
            uv_close(h, handle_close_cb);
        }
    }
    auto* tcp = reinterpret_cast<uv_handle_t*>(&tcp_);
    if (tcp_open_ && !uv_is_closing(tcp)) {
        uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
        uv_close(tcp, tcp_close_cb);
    }
}

void SmtpProbe::maybe_deliver() {
    if (open_handles_ != 0) return;
    // `keep` may hold the last reference: it must be the last thing to go out of scope here.
    std::shared_ptr<SmtpProbe> keep = std::move(self_);
    if (cancelled_ || !done_) return;
    Callback cb = std::move(done_);
    cb(std::move(result_));
}

void SmtpProbe::record(bool sent, std::string_view text) {
    if (result_.attempts.empty() || wire_bytes_ > kMaxWireBytes) return;
    wire_bytes_ += text.size();
    auto at = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() -
                                                       attempt_started_);
    if (wire_bytes_ > kMaxWireBytes) {
        attempt().wire.push_back(WireLine{sent, at, "[transcript truncated]"});
        return;
    }
    attempt().wire.push_back(WireLine{sent, at, std::string(text)});
}

void SmtpProbe::record_note(std::string text) {
    if (result_.attempts.empty()) return;
    auto at = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() -
                                                       attempt_started_);
    attempt().wire.push_back(WireLine{false, at, std::move(text), true});
}

// Wire form of each line of a reply, rebuilt from the parsed code and text.
void SmtpProbe::record_reply(const SmtpReply& reply) {
    for (std::size_t i = 0; i < reply.lines.size(); ++i) {
        std::string line = std::to_string(reply.code);
        if (i + 1 < reply.lines.size())
            line += '-';
        else if (!reply.lines[i].empty())
            line += ' ';
        record(false, line + reply.lines[i]);
    }
}

void SmtpProbe::arm_stage_timer() {
    arm_stage_timer(options_.*row(stage_).timeout);
}

void SmtpProbe::arm_stage_timer(milliseconds timeout) {
    uv_timer_start(&stage_timer_, stage_timer_cb, static_cast<uint64_t>(timeout.count()), 0);
}

void SmtpProbe::alloc_cb(uv_handle_t* handle, size_t, uv_buf_t* buf) {
    // One buffer suffices: read_cb consumes every byte before the next read.
    auto* self = static_cast<SmtpProbe*>(handle->data);
    *buf = uv_buf_init(self->read_buf_.data(), static_cast<unsigned>(self->read_buf_.size()));
}

void SmtpProbe::read_cb(uv_stream_t* stream, ssize_t nread, const uv_buf_t*) {
    static_cast<SmtpProbe*>(stream->data)->on_read(nread);
}

void SmtpProbe::connect_cb(uv_connect_t* req, int status) {
    static_cast<SmtpProbe*>(req->handle->data)->on_connected(status);
}

void SmtpProbe::write_cb(uv_write_t* req, int status) {
    std::unique_ptr<WriteReq> owned(static_cast<WriteReq*>(req->data));
    auto* self = static_cast<SmtpProbe*>(req->handle->data);
    if (status >= 0 || status == UV_ECANCELED) return;
    if (self->phase_ == Phase::quitting) return self->close_connection();
    if (self->phase_ != Phase::waiting) return;
    self->end_attempt(StageEvent::io_error, std::string("write: ") + uv_strerror(status),
                      self->after_failure(), Leave::at_once);
}

void SmtpProbe::stage_timer_cb(uv_timer_t* timer) {
    static_cast<SmtpProbe*>(timer->data)->on_stage_timeout();
}

void SmtpProbe::deadline_cb(uv_timer_t* timer) {
    static_cast<SmtpProbe*>(timer->data)->on_deadline();
}

void SmtpProbe::tcp_close_cb(uv_handle_t* handle) {
    static_cast<SmtpProbe*>(handle->data)->on_tcp_closed();
}

void SmtpProbe::handle_close_cb(uv_handle_t* handle) {
    auto* self = static_cast<SmtpProbe*>(handle->data);
    --self->open_handles_;
    self->maybe_deliver();
}

}  // namespace calloutd
