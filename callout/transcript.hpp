// What one SMTP probe saw: the value the probe state machine produces and the classifier judges.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "callout/smtp_extensions.hpp"

namespace calloutd {

// Stages of a probe conversation, in the order they happen.
enum class SmtpStage {
    connect,
    banner,
    ehlo,
    helo,
    starttls,       // STARTTLS, waiting for "220 Ready to start TLS"
    tls_handshake,  // the TLS handshake after that 220 (no SMTP reply is awaited)
    mail_from,      // first MAIL FROM:<>
    random_rcpt,    // RCPT TO:<random-local-part@domain> (accept-all check)
    rset,
    mail_from_again,  // MAIL FROM:<> after RSET
    rcpt,             // RCPT TO:<sender>
    quit,
};

// The words for a stage, from the one wording table (transcript.cpp) that `calloutd probe`,
// describe() and the classifier's reasons all use: its name ("RCPT", "random RCPT"), and what
// the probe is doing in it ("waiting for RCPT reply", "doing the TLS handshake").
std::string_view stage_name(SmtpStage s);
std::string_view stage_doing(SmtpStage s);

// One parsed SMTP reply (possibly multi-line).
struct SmtpReply {
    int code = 0;                    // 200..599
    std::string enhanced;            // "5.1.1", empty when the server gave none
    std::vector<std::string> lines;  // text of each line after "NNN-"/"NNN " (enhanced code kept)
    // All lines joined with a single space.
    std::string text() const;
};

// How a stage ended.
enum class StageEvent {
    reply,           // a complete reply arrived (see SmtpReply)
    timeout,         // per-stage timeout
    deadline,        // overall probe deadline
    closed,          // peer closed the connection
    connect_failed,  // refused, unreachable, ...
    io_error,        // read/write error
    protocol_error,  // garbage, oversized line/reply, a failed TLS handshake
    // We ended the conversation by our own rule before naming any recipient:
    tls_unavailable,       // callout.tls = encrypt and the server offers no STARTTLS
    smtputf8_unsupported,  // a UTF-8 address and the server offers no SMTPUTF8
};

// The same table's words for an event: "timeout", "probe deadline reached", "I/O error".
std::string_view event_phrase(StageEvent e);
// An event in a stage: "timeout while waiting for RCPT reply"; a failed connect is just
// "connect failed" (it has no stage to speak of).
std::string event_in_stage(StageEvent e, SmtpStage s);

// One line on the wire, for `calloutd probe` transcripts.
struct WireLine {
    bool sent = false;               // true: we sent it; false: we received it
    std::chrono::milliseconds at{};  // since the start of this host attempt
    std::string text;                // without CRLF
    // Not on the wire but about the connection ("TLS TLSv1.3 TLS_AES_256_GCM_SHA384"); every
    // line after a TLS note went through that TLS session.
    bool note = false;
};

// The TLS session of one connection (from the probe's STARTTLS).
struct TlsSessionInfo {
    std::string version;       // "TLSv1.3"
    std::string cipher;        // "TLS_AES_256_GCM_SHA384"
    std::string peer_subject;  // RFC 2253 text of the server certificate's subject, or ""
    std::string peer_issuer;   // ... and its issuer
};

// Everything that happened with one MX host address.
struct HostAttempt {
    std::string mx_host;  // MX name as published (or the domain for an implicit MX)
    std::string address;  // IP we connected to
    SmtpStage last_stage = SmtpStage::connect;  // stage in which the conversation ended
    StageEvent event = StageEvent::connect_failed;
    std::optional<SmtpReply> last_reply;   // reply that ended it, if event == reply
    std::optional<SmtpReply> mail_from;    // reply to the first MAIL FROM:<>
    std::optional<SmtpReply> random_rcpt;  // reply to the random-local-part RCPT, if asked
    std::optional<SmtpReply> rcpt;         // reply to RCPT TO:<sender>, if asked
    std::string detail;                    // OS error text and similar
    std::vector<WireLine> wire;
    // What the last EHLO reply offered (after STARTTLS: the EHLO inside TLS); none after HELO.
    SmtpExtensions extensions;
    bool starttls_offered = false;      // the plaintext EHLO reply offered STARTTLS
    std::optional<TlsSessionInfo> tls;  // the session, once a TLS handshake completed
    bool tls_failed = false;            // STARTTLS was accepted but no session came of it
    bool plaintext_retry = false;       // a new connection without STARTTLS after tls_failed
};

}  // namespace calloutd
