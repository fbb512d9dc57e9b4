// SMTP reply parser (callout/smtp_reply.hpp): any bytes from a server, split anywhere (CRLF
// included), replies taken after every chunk or only at the end. Replies, error and pending
// state must be the same every way, and nothing parsed may carry a line-breaking byte.
#include <string>
#include <vector>

#include "callout/smtp_reply.hpp"
#include "fuzz/fuzz_target.hpp"

namespace {

using calloutd::ReplyLimits;
using calloutd::SmtpReply;
using calloutd::SmtpReplyParser;

std::string render(const SmtpReply& r) {
    std::string s = std::to_string(r.code) + " [" + r.enhanced + "]";
    for (const auto& l : r.lines) s += " |" + l;
    return s;
}

void check_reply(const SmtpReply& r, const ReplyLimits& limits) {
    FUZZ_CHECK(r.code >= 200 && r.code <= 599, render(r));
    FUZZ_CHECK(!r.lines.empty(), render(r));
    std::size_t bytes = 0;
    for (const auto& l : r.lines) {
        bytes += l.size() + 4;
        FUZZ_CHECK(l.size() <= limits.max_line, render(r));
        for (char c : l) {
            auto u = static_cast<unsigned char>(c);
            FUZZ_CHECK(!((u < 0x20 && u != '\t') || u == 0x7f), render(r));
        }
    }
    FUZZ_CHECK(bytes <= limits.max_reply, render(r));
    if (!r.enhanced.empty()) {
        FUZZ_CHECK(r.enhanced[0] == '0' + r.code / 100, render(r));
        FUZZ_CHECK(r.lines[0].starts_with(r.enhanced), render(r));
    }
}

std::string run(const std::vector<std::string_view>& chunks, ReplyLimits limits, bool take_each) {
    SmtpReplyParser p(limits);
    std::string out;
    auto take = [&] {
        while (auto r = p.next()) {
            check_reply(*r, limits);
            out += render(*r) + "\n";
        }
    };
    for (auto c : chunks) {
        p.feed(c);
        if (take_each) take();
    }
    take();
    bool pending = p.has_pending();
    return out + "error=" + p.error() + " pending=" + (p.failed() ? "-" : pending ? "y" : "n");
}

}  // namespace

CALLOUTD_FUZZ_TARGET(smtp_reply) {
    std::string_view in(reinterpret_cast<const char*>(data), size);
    for (ReplyLimits limits : {ReplyLimits{}, ReplyLimits{40, 120}}) {
        std::string whole = run({in}, limits, false);
        auto chunks = calloutd::fuzz::random_chunks(in);
        for (bool take_each : {false, true}) {
            std::string split = run(chunks, limits, take_each);
            FUZZ_CHECK(split == whole, "whole:\n" + whole + "\nsplit:\n" + split);
        }
        if (size <= 4096) {
            std::string bytes = run(calloutd::fuzz::byte_chunks(in), limits, true);
            FUZZ_CHECK(bytes == whole, "whole:\n" + whole + "\nbytewise:\n" + bytes);
        }
    }
    return 0;
}
