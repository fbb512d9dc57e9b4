// Classifier (callout/classifier.hpp): replies of any text at any stage, in one or several
// host attempts. It may answer anything but the design's evidence rules: `invalid` only from
// a 5xx to the real RCPT; `valid` only from a 2xx to it when the random local part was refused
// (or the domain is known not to accept all), a mailbox full or a 551 forward-path;
// `accept_all` only when the random local part was accepted; never `invalid` when MX hosts
// disagree.
#include <string>
#include <vector>

#include "callout/classifier.hpp"
#include "callout/smtp_reply.hpp"
#include "fuzz/fuzz_target.hpp"

namespace {

using namespace calloutd;

constexpr int kStages = static_cast<int>(SmtpStage::quit) + 1;
constexpr int kEvents = static_cast<int>(StageEvent::protocol_error) + 1;

// The reply the classifier may read for `stage`: recorded, or the one that ended it there.
const SmtpReply* reply_for(const HostAttempt& a, const std::optional<SmtpReply>& recorded,
                           SmtpStage stage) {
    if (recorded) return &*recorded;
    if (a.last_stage == stage && a.event == StageEvent::reply && a.last_reply)
        return &*a.last_reply;
    return nullptr;
}

std::string describe(const HostAttempt& a, const Verdict& v) {
    auto r = [](const std::optional<SmtpReply>& x) {
        return x ? std::to_string(x->code) + " " + x->text() : std::string("-");
    };
    return "stage=" + std::string(stage_name(a.last_stage)) +
           " event=" + std::string(event_phrase(a.event)) + " last=" + r(a.last_reply) +
           " mail=" + r(a.mail_from) + " random=" + r(a.random_rcpt) + " rcpt=" + r(a.rcpt) +
           " -> " + std::string(to_string(v.cls)) + " " + v.reason;
}

void check_attempt(const HostAttempt& a, const Verdict& v, const ClassifyContext& ctx) {
    const std::string why = describe(a, v) + (ctx.domain_not_accept_all ? " (not accept-all)" : "");
    FUZZ_CHECK(!v.reason.empty(), why);
    const SmtpReply* rcpt = reply_for(a, a.rcpt, SmtpStage::rcpt);
    const SmtpReply* random = reply_for(a, a.random_rcpt, SmtpStage::random_rcpt);
    if (v.cls == VerdictClass::invalid) FUZZ_CHECK(rcpt != nullptr && rcpt->code / 100 == 5, why);
    if (v.cls == VerdictClass::valid) {
        // 2xx; a permanent "mailbox full" (552, or 5.2.2 under any 5xx); or 551 "user not
        // local; please try <forward-path>": the mailbox exists.
        FUZZ_CHECK(
            rcpt != nullptr && (rcpt->code / 100 == 2 || rcpt->code == 552 || rcpt->code == 551 ||
                                (rcpt->code / 100 == 5 && rcpt->enhanced == "5.2.2")),
            why);
        // A 2xx proves nothing unless the domain refuses what does not exist: the random local
        // part refused in this conversation, a cached fact saying so, or no random local part
        // asked at all (callout.random_check = false, the operator's choice, said in the reason).
        if (rcpt->code / 100 == 2) {
            FUZZ_CHECK(ctx.domain_not_accept_all ||
                           (random != nullptr && random->code / 100 == 5) ||
                           (random == nullptr &&
                            v.reason.find("accept-all check off") != std::string::npos),
                       why);
        }
    }
    if (v.cls == VerdictClass::accept_all) {
        FUZZ_CHECK(random != nullptr && random->code / 100 == 2, why);
    }
    // A 4xx to the real RCPT is never evidence either way.
    if (rcpt != nullptr && rcpt->code / 100 == 4 && (random == nullptr || random->code / 100 != 2))
        FUZZ_CHECK(v.cls != VerdictClass::invalid && v.cls != VerdictClass::valid, why);
    // Only classes a probe can produce.
    FUZZ_CHECK(v.cls != VerdictClass::in_progress && v.cls != VerdictClass::rate_limited &&
                   v.cls != VerdictClass::skipped,
               why);
}

}  // namespace

// Input: per attempt three bytes (stage, event, which replies are recorded), then replies as
// an SMTP server would send them, handed out in order to the recorded slots.
CALLOUTD_FUZZ_TARGET(classifier) {
    std::string_view in(reinterpret_cast<const char*>(data), size);
    if (in.size() < 3) return 0;
    std::size_t attempts_wanted = 1 + static_cast<unsigned char>(in[0]) % 3;
    ClassifyContext ctx;
    ctx.domain_not_accept_all = (static_cast<unsigned char>(in[0]) & 0x80) != 0;
    std::string_view header = in.substr(1, std::min(in.size() - 1, 3 * attempts_wanted));
    SmtpReplyParser parser;
    parser.feed(in.substr(1 + header.size()));
    std::vector<HostAttempt> attempts;
    for (std::size_t i = 0; i + 3 <= header.size(); i += 3) {
        HostAttempt a;
        a.mx_host = "mx.example";
        a.address = "192.0.2.1";
        a.last_stage = static_cast<SmtpStage>(static_cast<unsigned char>(header[i]) % kStages);
        a.event = static_cast<StageEvent>(static_cast<unsigned char>(header[i + 1]) % kEvents);
        auto which = static_cast<unsigned char>(header[i + 2]);
        if (which & 1) a.mail_from = parser.next();
        if (which & 2) a.random_rcpt = parser.next();
        if (which & 4) a.rcpt = parser.next();
        if (which & 8) a.last_reply = parser.next();
        if (which & 16) a.detail = "Connection refused";
        Verdict v = classify_attempt(a, ctx);
        check_attempt(a, v, ctx);
        (void)pushes_back(a);
        attempts.push_back(std::move(a));
    }
    Verdict all = classify(attempts, ctx);
    FUZZ_CHECK(!all.reason.empty(), all.reason);
    (void)random_local_part_evidence(attempts);
    if (all.cls == VerdictClass::invalid) {
        for (const auto& a : attempts) {
            Verdict one = classify_attempt(a, ctx);
            FUZZ_CHECK(one.cls != VerdictClass::valid && one.cls != VerdictClass::accept_all,
                       "MX hosts disagree but the probe says invalid: " + describe(a, one));
        }
    }
    return 0;
}
