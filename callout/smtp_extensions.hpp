// The service extensions an SMTP server announces in its EHLO reply (RFC 5321 4.1.1.1), read once
// per EHLO into a small value that the probe state machine consults instead of reply text.
#pragma once

#include <cstdint>
#include <optional>

namespace calloutd {

struct SmtpReply;

struct SmtpExtensions {
    bool esmtp = false;                  // the server answered EHLO (after a HELO fallback: false)
    bool starttls = false;               // RFC 3207
    bool smtputf8 = false;               // RFC 6531
    bool pipelining = false;             // RFC 2920 (we never pipeline; kept for the transcript)
    bool eightbitmime = false;           // RFC 6152
    bool enhanced_status_codes = false;  // RFC 2034
    // RFC 1870 "SIZE [limit]": the limit in octets, 0 when the server names none.
    std::optional<std::uint64_t> size;
};

// Reads the keywords of a 2xx EHLO reply: every line after the first (the greeting), keyword
// case-insensitive, unknown keywords ignored. Anything but a 2xx gives no extensions. Pure.
SmtpExtensions parse_ehlo_reply(const SmtpReply& reply);

}  // namespace calloutd
