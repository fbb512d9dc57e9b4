// What one SMTP probe saw: the value the probe state machine produces and the classifier judges.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace calloutd {

// Stages of a probe conversation, in the order they happen.
enum class SmtpStage {
    connect,
    banner,
    ehlo,
    helo,
    mail_from,    // first MAIL FROM:<>
    random_rcpt,  // RCPT TO:<random-local-part@domain> (accept-all check)
    rset,
    mail_from_again,  // MAIL FROM:<> after RSET
    rcpt,             // RCPT TO:<sender>
    quit,
};

// Human wording for a stage, used in reasons: "timeout while waiting for RCPT reply".
std::string_view stage_name(SmtpStage s);

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
    protocol_error,  // garbage, oversized line/reply
};

std::string_view event_name(StageEvent e);

// One line on the wire, for `calloutd probe` transcripts.
struct WireLine {
    bool sent = false;               // true: we sent it; false: we received it
    std::chrono::milliseconds at{};  // since the start of this host attempt
    std::string text;                // without CRLF
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
};

}  // namespace calloutd
