// EHLO keyword parsing: first word of each line after the greeting, compared without case.
#include "callout/smtp_extensions.hpp"

#include <charconv>
#include <string_view>

#include "callout/transcript.hpp"
#include "util/ascii.hpp"

namespace calloutd {

namespace {

// A SIZE parameter is 1*DIGIT; anything else (a missing or garbled number) means "no limit
// known", which is what a server that names none means as well.
std::uint64_t size_limit(std::string_view param) {
    std::uint64_t value = 0;
    auto [end, ec] = std::from_chars(param.data(), param.data() + param.size(), value);
    if (ec != std::errc() || end != param.data() + param.size()) return 0;
    return value;
}

}  // namespace

SmtpExtensions parse_ehlo_reply(const SmtpReply& reply) {
    SmtpExtensions ext;
    if (reply.code / 100 != 2) return ext;
    ext.esmtp = true;
    for (std::size_t i = 1; i < reply.lines.size(); ++i) {
        std::string_view line = reply.lines[i];
        while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
        while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
        const std::size_t space = line.find(' ');
        const std::string keyword = ascii_lower(line.substr(0, space));
        std::string_view param = space == std::string_view::npos ? "" : line.substr(space + 1);
        while (!param.empty() && param.front() == ' ') param.remove_prefix(1);
        if (keyword == "starttls") {
            ext.starttls = true;
        } else if (keyword == "smtputf8") {
            ext.smtputf8 = true;
        } else if (keyword == "pipelining") {
            ext.pipelining = true;
        } else if (keyword == "8bitmime") {
            ext.eightbitmime = true;
        } else if (keyword == "enhancedstatuscodes") {
            ext.enhanced_status_codes = true;
        } else if (keyword == "size") {
            ext.size = size_limit(param);
        }
    }
    return ext;
}

}  // namespace calloutd
