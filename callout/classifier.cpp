// Classifier: the rules that decide which SMTP answers are evidence about a mailbox, and of what.
//
// Guiding rule: `invalid` is a claim that mail to the sender would bounce because the mailbox does
// not exist. It is made only from the real RCPT reply, only for "no such mailbox" answers, and
// never when the wording says the target is judging *us* (blocks, verification, spam filters).
// Everything else that is permanent but not about the mailbox is `policy_blocked` (the target will
// not tell us), and everything transient is `tempfail`.
#include "callout/classifier.hpp"
#include "callout/ascii.hpp"

#include <array>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace calloutd {
namespace {

// An enhanced status code (RFC 3463) class.subject.detail.
struct Enhanced {
    int cls = 0;
    int subject = 0;
    int detail = 0;
};

// Reads one decimal field of at most three digits; advances `s`.
std::optional<int> read_field(std::string_view& s) {
    int value = 0;
    size_t n = 0;
    while (n < s.size() && n < 4 && s[n] >= '0' && s[n] <= '9') {
        value = value * 10 + (s[n] - '0');
        ++n;
    }
    if (n == 0 || n > 3) return std::nullopt;
    s.remove_prefix(n);
    return value;
}

// Parses "5.1.1" (and a prefix of longer text such as "5.1.1 rest" when `prefix_ok`).
std::optional<Enhanced> parse_enhanced(std::string_view s, bool prefix_ok) {
    Enhanced e;
    if (s.empty() || (s[0] != '2' && s[0] != '4' && s[0] != '5')) return std::nullopt;
    e.cls = s[0] - '0';
    s.remove_prefix(1);
    if (s.empty() || s[0] != '.') return std::nullopt;
    s.remove_prefix(1);
    auto subject = read_field(s);
    if (!subject || s.empty() || s[0] != '.') return std::nullopt;
    s.remove_prefix(1);
    auto detail = read_field(s);
    if (!detail) return std::nullopt;
    if (!s.empty() && !prefix_ok) return std::nullopt;
    e.subject = *subject;
    e.detail = *detail;
    return e;
}

bool is_word_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// What the classifier needs from one reply: code, enhanced code, lower-cased text.
struct ReplyFacts {
    int code = 0;
    std::optional<Enhanced> enhanced;
    std::string enhanced_text;  // as printed in reasons
    std::string lower;
};

// qmail and some appliances put the enhanced code in the text as "(#5.7.1)".
std::optional<Enhanced> enhanced_from_text(std::string_view text, std::string* printed) {
    for (size_t pos = text.find('#'); pos != std::string_view::npos;
         pos = text.find('#', pos + 1)) {
        auto rest = text.substr(pos + 1);
        auto e = parse_enhanced(rest, true);
        if (!e) continue;
        size_t len = 0;
        while (len < rest.size() && (rest[len] == '.' || (rest[len] >= '0' && rest[len] <= '9')))
            ++len;
        *printed = std::string(rest.substr(0, len));
        return e;
    }
    return std::nullopt;
}

// Servers echo the address ("<spam-desk@example.org>: Recipient address rejected: User unknown",
// "(bob@yahoo.com)"), and our own random local part starts with "calloutd-check-": words inside
// an address must not count as wording. Angle-bracketed spans become "<>" and tokens holding an
// '@' are blanked before the phrase search.
std::string wording_of(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    size_t i = 0;
    while (i < text.size()) {
        if (text[i] == '<') {
            size_t close = text.find('>', i);
            if (close != std::string_view::npos) {
                out += "<>";
                i = close + 1;
                continue;
            }
        }
        if (text[i] != ' ') {
            size_t end = text.find(' ', i);
            if (end == std::string_view::npos) end = text.size();
            auto token = text.substr(i, end - i);
            out += token.find('@') == std::string_view::npos ? std::string(token) : "(address)";
            i = end;
            continue;
        }
        out += text[i++];
    }
    return ascii_lower(out);
}

ReplyFacts facts_of(const SmtpReply& r) {
    ReplyFacts f;
    f.code = r.code;
    std::string text = r.text();
    if (!r.enhanced.empty()) {
        f.enhanced = parse_enhanced(r.enhanced, false);
        if (f.enhanced) f.enhanced_text = r.enhanced;
    } else {
        f.enhanced = enhanced_from_text(text, &f.enhanced_text);
    }
    f.lower = wording_of(text);
    return f;
}

// A phrase to look for in lower-cased reply text. It must start at a word boundary; when
// `whole_word` it must also end at one ("rate" must not match "separate" or "rated").
struct Phrase {
    std::string_view text;
    bool whole_word = false;
};

bool mentions(std::string_view lower, std::span<const Phrase> phrases) {
    for (const auto& p : phrases) {
        for (size_t pos = lower.find(p.text); pos != std::string_view::npos;
             pos = lower.find(p.text, pos + 1)) {
            if (pos > 0 && is_word_char(lower[pos - 1])) continue;
            size_t end = pos + p.text.size();
            if (p.whole_word && end < lower.size() && is_word_char(lower[end])) continue;
            return true;
        }
    }
    return false;
}

// Wording that shows a 5xx without enhanced code is about us (our IP, our sender, our rate, the
// target's filters) rather than about the mailbox: such a reply is policy, not proof.
constexpr Phrase kPolicyWords[] = {
    {"block"},
    {"blacklist"},
    {"black list"},
    {"denylist"},
    {"deny list"},
    {"spam"},
    {"polic"},
    {"relay"},
    {"not permitted"},
    {"not allowed"},
    {"denied"},
    {"prohibit"},
    {"refused"},
    {"rejected by"},
    {"rejected due"},
    {"rejected for"},
    {"rejected because"},
    {"message rejected"},
    {"too many"},
    {"rate", true},
    {"limit"},
    {"exceed"},
    {"throttl"},
    {"reputation"},
    {"dnsbl"},
    {"rbl", true},
    {"listed", true},
    {"abuse"},
    {"auth"},
    {"unauthori"},
    {"not authori"},
    {"sender"},
    {"verif"},
    {"unverif"},
    {"callout"},
    {"call-out"},
    {"callback"},
    {"greylist"},
    {"graylist"},
    {"grey list"},
    {"gray list"},
    {"try again"},
    {"later", true},
    {"temporar"},
    {"banned"},
    {"client host"},
    {"your ip"},
    {"ip address"},
    {"tls", true},
    {"starttls"},
    {"dmarc"},
    {"spf", true},
    {"dkim"},
    {"dictionary"},
    {"harvest"},
    {"backscatter"},
    {"blowback"},
    {"firewall"},
    {"security"},
    {"quarantin"},
    {"virus"},
    {"forbidden"},
    {"rcpthosts"},
    {"administrative"},
    {"bounce"},
    {"batv"},
};

// Wording that makes even a 5.1.x reply no proof: the target verified someone (usually us, by
// callback: "Sender verify failed", "rejected by sender verification"), or a filter that blocks
// us chose a misleading code. "relay" is deliberately absent: Postfix's genuine
// "User unknown in relay recipient table" carries it.
constexpr Phrase kNotProofWords[] = {
    {"bounce"},    {"batv"},        {"verif"},       {"unverif"}, {"callout"},   {"call-out"},
    {"callback"},  {"backscatter"}, {"blowback"},    {"spam"},    {"blacklist"}, {"black list"},
    {"blocklist"}, {"block list"},  {"blocked"},     {"dnsbl"},   {"rbl", true}, {"reputation"},
    {"banned"},    {"polic"},       {"client host"}, {"your ip"},
};

// Wording that says the reply is about the envelope sender (ours is <>), not the recipient.
// Postfix delays MAIL FROM restrictions to RCPT (smtpd_delay_reject), so these show up there.
// "Sender verify failed" is deliberately not here: it is a verification result, policy_blocked.
constexpr Phrase kSenderWords[] = {
    {"sender address rejected"}, {"null sender"},  {"null-sender"}, {"empty sender"},
    {"envelope sender"},         {"mail from:<>"},
};

// Wording in a MAIL FROM:<> rejection that names the prober's IP or host rather than the null
// sender: that is a block of us, not a fact about the domain's treatment of <>.
constexpr Phrase kClientBlockedWords[] = {
    {"client host"},
    {"your ip"},
    {"sending ip"},
    {"ip address"},
    {"ip", true},
    {"blocked using"},
    {"blocklist"},
    {"block list"},
    {"blacklist"},
    {"black list"},
    {"dnsbl"},
    {"rbl", true},
    {"spamhaus"},
    {"spamcop"},
    {"barracuda"},
    {"reputation"},
    {"banned"},
    {"listed", true},
    {"not authorized to send"},
    {"rate", true},
    {"too many"},
    {"reverse dns"},
    {"ptr", true},
    {"hostname"},
};

// Plain-language "the user does not exist", for 5xx codes outside 550/551/553 (Yahoo's 554).
constexpr Phrase kUnknownUserWords[] = {
    {"user unknown"},        {"unknown user"},        {"no such user"},
    {"no such mailbox"},     {"no such recipient"},   {"no such address"},
    {"unknown recipient"},   {"recipient unknown"},   {"unknown address"},
    {"address unknown"},     {"mailbox not found"},   {"recipient not found"},
    {"user not found"},      {"address not found"},   {"does not exist"},
    {"doesn't exist"},       {"user doesn't have a"}, {"user does not have a"},
    {"invalid recipient"},   {"invalid mailbox"},     {"not a valid mailbox"},
    {"unrouteable address"}, {"unroutable address"},
};

constexpr Phrase kTlsWords[] = {{"starttls"}, {"tls", true}, {"encryption required"}};
constexpr Phrase kGreylistWords[] = {{"greylist"}, {"graylist"}, {"grey list"}, {"gray list"}};
constexpr Phrase kQuotaWords[] = {
    {"quota"}, {"mailbox full"}, {"mailbox is full"}, {"storage"}, {"insufficient"}};

std::string describe(const ReplyFacts& f) {
    std::string s = std::to_string(f.code);
    if (f.enhanced) s += " " + f.enhanced_text;
    return s;
}

Verdict verdict(VerdictClass cls, std::string_view tag, const ReplyFacts& f, SmtpStage stage) {
    std::string reason(tag);
    reason += ' ';
    reason += describe(f);
    reason += " at ";
    reason += stage_name(stage);
    return {cls, std::move(reason)};
}

bool needs_tls(const ReplyFacts& f) {
    return mentions(f.lower, kTlsWords);
}

// Any 4xx: always tempfail; the tag says why when the reply makes it clear.
Verdict judge_temporary(const ReplyFacts& f, SmtpStage stage) {
    std::string_view tag = "deferred";
    const auto& e = f.enhanced;
    if (f.code == 421) {
        tag = "service-unavailable";
    } else if (mentions(f.lower, kGreylistWords)) {
        tag = "greylisted";
    } else if ((e && e->subject == 2 && e->detail == 2) || mentions(f.lower, kQuotaWords)) {
        // 452 4.2.2 over quota suggests the mailbox exists, but a 4xx is transient by
        // definition and some servers say 4.2.2 for system-wide trouble: no claim either way.
        tag = "mailbox-full";
    } else if (f.code == 452 || (e && e->subject == 5 && e->detail == 3)) {
        tag = "too-many-recipients";
    } else if (needs_tls(f)) {
        tag = "starttls-required";
    } else if (e && e->subject == 7) {
        tag = "temporary-policy";
    }
    return verdict(VerdictClass::tempfail, tag, f, stage);
}

// A reply that is neither success nor a 4xx/5xx: the conversation went wrong.
bool is_unexpected_code(int code) {
    return code < 200 || code > 599 || (code >= 300 && code < 400);
}

// The reply to a RCPT (real or random): the only place `invalid` can come from.
Verdict judge_rcpt(const ReplyFacts& f, SmtpStage stage) {
    if (f.code >= 200 && f.code < 300)
        return verdict(VerdictClass::valid, "rcpt-accepted", f, stage);
    if (is_unexpected_code(f.code))
        return verdict(VerdictClass::tempfail, "unexpected-reply", f, stage);
    if (f.code < 500) return judge_temporary(f, stage);

    // 530 5.7.0 Must issue a STARTTLS command first: we did not offer TLS; not a verdict.
    if (needs_tls(f)) return verdict(VerdictClass::tempfail, "starttls-required", f, stage);
    // "550 4.1.1": the two codes contradict each other; trust neither.
    if (f.enhanced && f.enhanced->cls != 5)
        return verdict(VerdictClass::policy_blocked, "inconsistent-reply", f, stage);
    const bool sender_code = f.enhanced && f.enhanced->subject == 1 &&
                             (f.enhanced->detail == 7 || f.enhanced->detail == 8);
    if (sender_code || mentions(f.lower, kSenderWords))
        return verdict(VerdictClass::null_sender_rejected, "null-sender-rejected", f, stage);

    if (f.enhanced) {
        const auto [cls, subject, detail] = *f.enhanced;
        switch (subject) {
            case 1:
                // 5.1.0 other address status (Postfix "Address rejected"), 5.1.1 bad mailbox,
                // 5.1.2 bad destination system and 5.1.3 bad mailbox syntax (this MX will not
                // deliver to the address as written), 5.1.6 mailbox moved with no forwarding
                // address ("at one time valid, no longer accepted"), 5.1.10 null MX / Exchange
                // RecipientNotFound: all mean mail to the address bounces. 5.1.4 (ambiguous),
                // 5.1.5 (valid) and unknown details are not evidence of absence.
                if (detail == 0 || detail == 1 || detail == 2 || detail == 3 || detail == 6 ||
                    detail == 10) {
                    if (mentions(f.lower, kNotProofWords))
                        return verdict(VerdictClass::policy_blocked, "unverifiable", f, stage);
                    return verdict(VerdictClass::invalid, "user-unknown", f, stage);
                }
                return verdict(VerdictClass::policy_blocked, "inconclusive", f, stage);
            case 2:
                // 5.2.2 mailbox full: the mailbox exists. 5.2.1 disabled/not accepting: it
                // exists but refuses; no claim of absence.
                if (detail == 2) return verdict(VerdictClass::valid, "mailbox-full", f, stage);
                if (detail == 1)
                    return verdict(VerdictClass::policy_blocked, "mailbox-disabled", f, stage);
                return verdict(VerdictClass::policy_blocked, "inconclusive", f, stage);
            case 4:
                // Exchange Online's "550 5.4.1 Recipient address rejected: Access denied.
                // AS(201806281)" is Directory-Based Edge Blocking: usually the recipient is not
                // in the tenant, but DBEB also rejects real users during directory-sync lag and
                // in misconfigured hybrid setups, and 5.4.x is not an address status. Not proof.
                if (detail == 1 && mentions(f.lower, std::array{Phrase{"access denied"}}))
                    return verdict(VerdictClass::policy_blocked, "recipient-access-denied", f,
                                   stage);
                return verdict(VerdictClass::policy_blocked, "inconclusive", f, stage);
            case 7:
                return verdict(VerdictClass::policy_blocked, "policy", f, stage);
            default:
                return verdict(VerdictClass::policy_blocked, "inconclusive", f, stage);
        }
    }

    // No enhanced code: the basic code and the wording are all we have. 552 "exceeded storage
    // allocation" is checked first because "exceeded" is also rate-limit wording.
    if (f.code == 552 && mentions(f.lower, kQuotaWords))
        return verdict(VerdictClass::valid, "mailbox-full", f, stage);
    if (mentions(f.lower, kPolicyWords))
        return verdict(VerdictClass::policy_blocked, "policy", f, stage);
    if (f.code == 552) return verdict(VerdictClass::valid, "mailbox-full", f, stage);
    // RFC 5321: 550 mailbox unavailable, 551 user not local, 553 mailbox name not allowed.
    if (f.code == 550 || f.code == 551 || f.code == 553)
        return verdict(VerdictClass::invalid, "user-unknown", f, stage);
    // 554 "delivery error: dd This user doesn't have a yahoo.com account": explicit wording.
    if (mentions(f.lower, kUnknownUserWords))
        return verdict(VerdictClass::invalid, "user-unknown", f, stage);
    if (f.code <= 504 || f.code == 555)
        return verdict(VerdictClass::tempfail, "command-rejected", f, stage);
    return verdict(VerdictClass::policy_blocked, "inconclusive", f, stage);
}

// 5xx to MAIL FROM:<>. It is a domain fact ("rejects <>") unless the wording shows the target is
// blocking our IP or host (DNSBL, reputation, rate): that would apply to any sender, so it is
// policy_blocked. STARTTLS demands are tempfail; 530 authentication demands are policy.
Verdict judge_mail_from_reject(const ReplyFacts& f, SmtpStage stage, bool first_was_accepted) {
    if (needs_tls(f)) return verdict(VerdictClass::tempfail, "starttls-required", f, stage);
    if (f.code == 530) return verdict(VerdictClass::policy_blocked, "auth-required", f, stage);
    if (mentions(f.lower, kClientBlockedWords))
        return verdict(VerdictClass::policy_blocked, "client-blocked", f, stage);
    // The first MAIL FROM:<> was accepted, so a later refusal is not about the null sender.
    if (first_was_accepted) return verdict(VerdictClass::policy_blocked, "policy", f, stage);
    return verdict(VerdictClass::null_sender_rejected, "null-sender-rejected", f, stage);
}

std::string waiting_for(SmtpStage stage) {
    if (stage == SmtpStage::connect) return "connecting";
    if (stage == SmtpStage::banner) return "waiting for banner";
    return "waiting for " + std::string(stage_name(stage)) + " reply";
}

// A conversation that ended without a reply: always tempfail, naming the stage.
Verdict judge_event(const HostAttempt& a) {
    const std::string where = waiting_for(a.last_stage);
    switch (a.event) {
        case StageEvent::connect_failed:
            return {VerdictClass::tempfail,
                    a.detail.empty() ? "connect failed" : "connect failed: " + a.detail};
        case StageEvent::timeout:
            return {VerdictClass::tempfail, "timeout while " + where};
        case StageEvent::deadline:
            return {VerdictClass::tempfail, "deadline expired while " + where};
        case StageEvent::closed:
            return {VerdictClass::tempfail, "connection closed while " + where};
        case StageEvent::io_error:
            return {VerdictClass::tempfail, "io error while " + where};
        case StageEvent::protocol_error:
            return {VerdictClass::tempfail, "protocol error while " + where};
        case StageEvent::reply:
            break;
    }
    return {VerdictClass::tempfail, "missing reply at " + std::string(stage_name(a.last_stage))};
}

bool is_positive(int code) {
    return code >= 200 && code < 300;
}

// The reply that ended the conversation at `stage`, when nothing earlier was decisive.
Verdict judge_final_reply(const HostAttempt& a, const ReplyFacts& f) {
    const SmtpStage stage = a.last_stage;
    if (is_unexpected_code(f.code) || is_positive(f.code))
        return verdict(VerdictClass::tempfail, "probe-incomplete", f, stage);
    if (f.code < 500) return judge_temporary(f, stage);
    switch (stage) {
        case SmtpStage::banner:
        case SmtpStage::ehlo:
        case SmtpStage::helo:
            if (needs_tls(f)) return verdict(VerdictClass::tempfail, "starttls-required", f, stage);
            return verdict(VerdictClass::policy_blocked, "policy", f, stage);
        case SmtpStage::mail_from:
            return judge_mail_from_reject(f, stage, false);
        case SmtpStage::mail_from_again:
            return judge_mail_from_reject(f, stage, a.mail_from && is_positive(a.mail_from->code));
        case SmtpStage::random_rcpt:
        case SmtpStage::rcpt:
            return judge_rcpt(f, stage);
        case SmtpStage::connect:
        case SmtpStage::rset:
        case SmtpStage::quit:
            break;
    }
    return verdict(VerdictClass::tempfail, "unexpected-reply", f, stage);
}

// Replies recorded for a stage, falling back to last_reply when the conversation ended there.
const SmtpReply* reply_at(const HostAttempt& a, const std::optional<SmtpReply>& recorded,
                          SmtpStage stage) {
    if (recorded) return &*recorded;
    if (a.last_stage == stage && a.event == StageEvent::reply && a.last_reply)
        return &*a.last_reply;
    return nullptr;
}

}  // namespace

// Order: accept-all check, real RCPT, refusals recorded on the way, then how it ended.
Verdict classify_attempt(const HostAttempt& a) {
    const SmtpReply* random = reply_at(a, a.random_rcpt, SmtpStage::random_rcpt);
    if (random != nullptr && is_positive(random->code))
        return verdict(VerdictClass::accept_all, "random-local-part-accepted", facts_of(*random),
                       SmtpStage::random_rcpt);

    // Once the real RCPT is answered, nothing later (RSET, QUIT, a dropped connection) matters.
    if (const SmtpReply* rcpt = reply_at(a, a.rcpt, SmtpStage::rcpt))
        return judge_rcpt(facts_of(*rcpt), SmtpStage::rcpt);

    if (const SmtpReply* mail = reply_at(a, a.mail_from, SmtpStage::mail_from);
        mail != nullptr && !is_positive(mail->code)) {
        HostAttempt at_mail;
        at_mail.last_stage = SmtpStage::mail_from;
        return judge_final_reply(at_mail, facts_of(*mail));
    }

    // The random address is expected to be refused as unknown; any other refusal (4xx, 5.7.x,
    // policy wording) is how the target treats our probe, and the real RCPT was never asked.
    if (random != nullptr) {
        Verdict v = judge_rcpt(facts_of(*random), SmtpStage::random_rcpt);
        if (v.cls != VerdictClass::invalid && v.cls != VerdictClass::valid) return v;
    }

    if (a.event == StageEvent::reply && a.last_reply) {
        Verdict v = judge_final_reply(a, facts_of(*a.last_reply));
        // A refusal of the random address at its own stage says nothing about the sender.
        if (v.cls == VerdictClass::invalid || v.cls == VerdictClass::valid)
            return {VerdictClass::tempfail, "probe-incomplete after " + v.reason};
        return v;
    }
    return judge_event(a);
}

Verdict classify(const std::vector<HostAttempt>& attempts) {
    if (attempts.empty()) return {VerdictClass::tempfail, "no-attempt"};

    std::optional<size_t> decisive;
    for (size_t i = 0; i < attempts.size(); ++i) {
        if (attempts[i].last_stage != SmtpStage::connect) decisive = i;
    }
    if (!decisive) {
        Verdict last = classify_attempt(attempts.back());
        if (attempts.size() == 1) return last;
        return {VerdictClass::tempfail, "no MX host reachable (" + std::to_string(attempts.size()) +
                                            " addresses tried); last: " + last.reason};
    }

    Verdict v = classify_attempt(attempts[*decisive]);
    if (v.cls != VerdictClass::invalid) return v;
    // Another MX host accepted the address: the hosts disagree, so absence is not proven.
    for (size_t i = 0; i < attempts.size(); ++i) {
        if (i == *decisive) continue;
        Verdict other = classify_attempt(attempts[i]);
        if (other.cls == VerdictClass::valid || other.cls == VerdictClass::accept_all) {
            other.reason += " (MX hosts disagree: " + v.reason + ")";
            return other;
        }
    }
    return v;
}

namespace {

// Wording of a server that wants fewer (or no) connections from us.
constexpr Phrase kPushbackWords[] = {
    {"too many"},  {"rate", true}, {"limit"},     {"throttl"},         {"block"},
    {"blacklist"}, {"denylist"},   {"banned"},    {"dnsbl"},           {"rbl", true},
    {"spamhaus"},  {"reputation"}, {"slow down"}, {"try again later"},
};

}  // namespace

bool pushes_back(const HostAttempt& attempt) {
    if (attempt.event != StageEvent::reply || !attempt.last_reply) return false;
    const SmtpReply& r = *attempt.last_reply;
    if (r.code == 421) return true;
    if (r.code < 400) return false;
    return mentions(wording_of(r.text()), kPushbackWords);
}

}  // namespace calloutd
