// Names used when a probe result is reported or logged.
#include "callout/transcript.hpp"

namespace calloutd {

std::string_view stage_name(SmtpStage s) {
    switch (s) {
        case SmtpStage::connect:
            return "connect";
        case SmtpStage::banner:
            return "banner";
        case SmtpStage::ehlo:
            return "EHLO";
        case SmtpStage::helo:
            return "HELO";
        case SmtpStage::starttls:
            return "STARTTLS";
        case SmtpStage::tls_handshake:
            return "TLS handshake";
        case SmtpStage::mail_from:
            return "MAIL FROM";
        case SmtpStage::random_rcpt:
            return "random RCPT";
        case SmtpStage::rset:
            return "RSET";
        case SmtpStage::mail_from_again:
            return "MAIL FROM";
        case SmtpStage::rcpt:
            return "RCPT";
        case SmtpStage::quit:
            return "QUIT";
    }
    return "unknown";
}

std::string_view event_name(StageEvent e) {
    switch (e) {
        case StageEvent::reply:
            return "reply";
        case StageEvent::timeout:
            return "timeout";
        case StageEvent::deadline:
            return "deadline";
        case StageEvent::closed:
            return "closed";
        case StageEvent::connect_failed:
            return "connect-failed";
        case StageEvent::io_error:
            return "io-error";
        case StageEvent::protocol_error:
            return "protocol-error";
        case StageEvent::tls_unavailable:
            return "tls-unavailable";
        case StageEvent::smtputf8_unsupported:
            return "smtputf8-unsupported";
    }
    return "unknown";
}

std::string SmtpReply::text() const {
    std::string out;
    for (const auto& l : lines) {
        if (!out.empty()) out += ' ';
        out += l;
    }
    return out;
}

}  // namespace calloutd
