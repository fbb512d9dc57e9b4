// Classifier: the rules that decide which SMTP answers are evidence about a mailbox, and of what.
//
// Guiding rule: `invalid` is a claim that mail to the sender would bounce because the mailbox does
// not exist. It is made only from the real RCPT reply, only for "no such mailbox" answers, and
// never when the wording says the target is judging *us* (blocks, verification, spam filters).
// Everything else that is permanent but not about the mailbox is `policy_blocked` (the target will
// not tell us), and everything transient is `tempfail`. When in doubt, not `invalid`; and a 2xx
// is `valid` only when the random local part was refused as unknown (when in doubt, not `valid`).
//
// Wording outranks a wrong enhanced code in both directions: "550 5.7.1 No such user!" is
// `invalid`, "552 5.1.1 Mailbox delivery failure policy error" is not. Every judgement also says
// what it is evidence about (EvidenceScope): a reply to the real RCPT speaks for that address
// only, and becomes a domain fact only when the random local part got the same refusal.
// Over 500 lines as one concept: the rule and the phrase tables it cites, each table's reason next
// to the judgement that uses it; split apart, neither half reads on its own.
#include "callout/classifier.hpp"
#include "util/ascii.hpp"

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
    bool names_address = false;  // the text holds an address (a 551 forward-path, an echo)
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
    f.names_address = text.find('@') != std::string::npos;
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
// target's filters) rather than about the mailbox: such a reply is policy, not proof. The same
// wording overrides a 5.1.x code that carries no "no such user" wording ("550 5.1.1 Relaying
// denied" says nothing about a mailbox).
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

// Wording that makes even an explicit "user unknown" no proof: the target verified someone
// (usually us, by callback: "Sender verify failed", "rejected by sender verification"), counts
// our unknown recipients (a dictionary-attack guard talking about us, not the mailbox: Yahoo's
// "451 VS1-IP Excessive unknown recipients - possible Open Relay (#4.1.8)",
// https://help.yahoo.com/kb/mail-for-desktop/SLN3444.html), or a filter that blocks us chose a
// misleading code. "relay" is deliberately absent: Postfix's genuine "User unknown in relay
// recipient table" carries it.
constexpr Phrase kNotProofWords[] = {
    {"bounce"},
    {"batv"},
    {"verif"},
    {"unverif"},
    {"callout"},
    {"call-out"},
    {"callback"},
    {"backscatter"},
    {"blowback"},
    {"spam"},
    {"blacklist"},
    {"black list"},
    {"blocklist"},
    {"block list"},
    {"blocked"},
    {"dnsbl"},
    {"rbl", true},
    {"reputation"},
    {"banned"},
    {"polic"},
    {"client host"},
    {"your ip"},
    {"excessive unknown"},
    {"too many unknown"},
    {"dictionary"},
    {"harvest"},
};

// Wording that says the reply is about the envelope sender (ours is <>), not the recipient.
// Postfix delays MAIL FROM restrictions to RCPT (smtpd_delay_reject), so these show up there.
// "Sender verify failed" is deliberately not here: it is a verification result, policy_blocked.
constexpr Phrase kSenderWords[] = {
    {"sender address rejected"}, {"null sender"},  {"null-sender"},   {"empty sender"},
    {"envelope sender"},         {"mail from:<>"}, {"sender domain"},
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

// Plain-language "the user does not exist". It decides whatever the code (Yandex answers an
// unknown user "550 5.7.1 No such user!"), unless kNotProofWords or kDisabledWords say
// otherwise. Yandex lists these among the non-existence replies of other servers
// (https://yandex.com/support/mail/bounces/other.html); qmail says "no mailbox here by that
// name", AT&T "Addressee unknown" (https://smtp.codes/550).
constexpr Phrase kUnknownUserWords[] = {
    {"user unknown"},        {"unknown user"},
    {"no such user"},        {"no such mailbox"},
    {"no such recipient"},   {"no such address"},
    {"no such account"},     {"unknown recipient"},
    {"recipient unknown"},   {"unknown address"},
    {"address unknown"},     {"addressee unknown"},
    {"mailbox not found"},   {"recipient not found"},
    {"user not found"},      {"address not found"},
    {"does not exist"},      {"doesn't exist"},
    {"user doesn't have a"}, {"user does not have a"},
    {"invalid recipient"},   {"invalid mailbox"},
    {"not a valid mailbox"}, {"not a valid recipient"},
    {"unrouteable address"}, {"unroutable address"},
    {"no mailbox here"},     {"bad destination mailbox"},
};

// Wording of a mailbox that exists but does not take mail (disabled, suspended, blocked by its
// provider). Mail to it bounces today, but the address is real: policy_blocked, never invalid.
constexpr Phrase kDisabledWords[] = {
    {"disabled"}, {"inactive"}, {"suspended"}, {"deactivated"}, {"terminated"}, {"locked"},
};

// A vendor reply recognised by a token only that vendor uses; the rule name appears in reasons
// ("vendor:yandex-no-such-user 550 5.7.1 at RCPT").
struct Signature {
    std::string_view rule;
    Phrase phrase;
    VerdictClass cls;
};

// Vendor signatures, checked before the generic tables: a policy signature wins over any
// "no such user" wording, a non-existence signature over any enhanced code (but not over
// kNotProofWords). Each cites the public reference it comes from.
constexpr Signature kVendorSignatures[] = {
    // Microsoft 365 / Exchange Online: "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient
    // not found by SMTP address lookup", "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",
    // "... RESOLVER.ADR.ExRecipNotFound; not found": the recipient is not in the directory.
    // https://learn.microsoft.com/en-us/exchange/troubleshoot/email-delivery/ndr/non-delivery-reports-in-exchange-online
    {"m365-recipient-not-found", {"resolver.adr.recipientnotfound"}, VerdictClass::invalid},
    {"m365-recipient-not-found", {"resolver.adr.recipnotfound"}, VerdictClass::invalid},
    {"m365-recipient-not-found", {"resolver.adr.exrecipnotfound"}, VerdictClass::invalid},
    // ... while RESOLVER.RST.* (AuthRequired, NotAuthorized, RestrictedToRecipientsPermission,
    // SenderNotAuthenticatedForGroup ...) is a restricted mailbox or group refusing outsiders:
    // the recipient exists. Same page, 5.7.1 and 5.7.12x-13x entries.
    {"m365-restricted-recipient", {"resolver.rst."}, VerdictClass::policy_blocked},
    // Outlook.com (consumer): "550 5.5.0 Requested action not taken: mailbox unavailable
    // (S2017062302)" is its unknown-user reply.
    // https://www.spamresource.com/2023/09/microsoft-multiple-types-of-invalid.html
    {"outlook-mailbox-unavailable", {"s2017062302"}, VerdictClass::invalid},
    // Google Workspace / Gmail: "550-5.1.1 The email account that you tried to reach does not
    // exist" vs "550-5.2.1 The email account that you tried to reach is disabled".
    // https://support.google.com/a/answer/3726730
    {"google-no-such-user",
     {"the email account that you tried to reach does not exist"},
     VerdictClass::invalid},
    {"google-account-disabled",
     {"the email account that you tried to reach is disabled"},
     VerdictClass::policy_blocked},
    // Yahoo / AOL (one platform): "554 delivery error: dd This user doesn't have a yahoo.com
    // account" vs "... This mailbox is disabled (554.30)".
    // https://help.yahoo.com/kb/mail-for-desktop/SLN3444.html
    {"yahoo-no-such-account", {"dd this user doesn't have a"}, VerdictClass::invalid},
    {"yahoo-mailbox-disabled", {"this mailbox is disabled"}, VerdictClass::policy_blocked},
    // Yandex: "550 5.7.1 No such user!" (a policy code for an unknown user) vs "550 5.7.1
    // Policy rejection on the target address" (the account exists but is blocked).
    // https://yandex.com/support/mail/bounces/yandex.html
    {"yandex-no-such-user", {"no such user!"}, VerdictClass::invalid},
    {"yandex-account-blocked",
     {"policy rejection on the target address"},
     VerdictClass::policy_blocked},
    // Mail.ru: "550 Message was not accepted -- invalid mailbox.  Local mailbox x@mail.ru is
    // unavailable: user not found" vs "... is unavailable: account is disabled".
    // https://help.mail.ru/mail/error/  and https://smtp.codes/550 (Mail.ru)
    {"mailru-user-not-found", {"is unavailable: user not found"}, VerdictClass::invalid},
    {"mailru-account-disabled",
     {"is unavailable: account is disabled"},
     VerdictClass::policy_blocked},
    // Zoho: "550 5.1.1 <x> User unknown" is generic wording; "552 5.1.1 <x> Mailbox delivery
    // failure policy error" and "452 <x> Mailbox delivery restricted by policy error" are
    // recipient filters of the receiving organisation, whatever the 5.1.1 says.
    // https://smtp.codes/zoho
    {"zoho-delivery-policy",
     {"mailbox delivery failure policy error"},
     VerdictClass::policy_blocked},
    {"zoho-delivery-policy",
     {"mailbox delivery restricted by policy"},
     VerdictClass::policy_blocked},
    // Proofpoint Essentials: "550 5.7.1 Recipient address rejected: User email address is
    // marked as invalid" (SMTP Discovery found no such user behind the filter).
    // https://www.spambrella.com/faq/email-delivery-error-codes/
    {"proofpoint-invalid-user", {"user email address is marked as invalid"}, VerdictClass::invalid},
    // Mimecast: "550 Invalid Recipient - https://community.mimecast.com/docs/DOC-1369#550" is
    // generic wording; its policy rejects ("550 Administrative prohibition - envelope blocked")
    // are caught by kPolicyWords.
    // https://community.mimecast.com/s/article/Mimecast-SMTP-Error-Codes-842605754
    // Barracuda: "550 cuda_nsu 5.1.1 <x> Recipient address rejected: User unknown" ("nsu": no
    // such user; the token hides the enhanced code from the reply parser).
    // https://smtp.codes/550 (Barracuda)
    {"barracuda-no-such-user", {"cuda_nsu", true}, VerdictClass::invalid},
    // Cisco Secure Email (IronPort) LDAP accept query: "550 #5.1.0 Address rejected." is decided
    // by its enhanced code in the text.
    // https://www.cisco.com/c/en/us/support/docs/security/email-security-appliance/118580-qa-esa-00.html
};

constexpr Phrase kTlsWords[] = {{"starttls"}, {"tls", true}, {"encryption required"}};
constexpr Phrase kGreylistWords[] = {{"greylist"}, {"graylist"}, {"grey list"}, {"gray list"}};
constexpr Phrase kQuotaWords[] = {
    {"quota"}, {"mailbox full"}, {"mailbox is full"}, {"storage"}, {"insufficient"}};
// RFC 5321 3.4: "551 User not local; please try <forward-path>".
constexpr Phrase kForwardPathWords[] = {{"try"}, {"forward"}, {"moved to"}, {"send to"}};

// Connection-level push-back: the server wants fewer connections from us, whoever we ask about.
// Only these back off an MX host (besides any 421 and a banner that refuses us); mailbox-level
// wording ("quota limit exceeded", "receiving mail at a rate") never does.
constexpr Phrase kConnectionPushbackWords[] = {
    // Connection-count limits: Postfix anvil "421 4.7.0 Error: too many connections from ...",
    // Exim "too many concurrent SMTP connections", Rackspace "Too many concurrent connections
    // from this client (G2)" (https://smtp.codes/rackspace), "too many sessions".
    {"too many connections"},
    {"too many concurrent"},
    {"concurrent connections"},
    {"too many sessions"},
    // Connection-rate limits, said before any recipient is named, so about our IP: "connection
    // rate limit exceeded", "rate limited", "rate-limited".
    {"connection rate"},
    {"rate limit"},
    {"rate-limit"},
    {"rate exceeded"},
    // The same said in other words: "you are being throttled", "throttling failure", "slow
    // down" (qmail/netqmail tarpits and appliances).
    {"throttl"},
    {"slow down"},
};

std::string describe(const ReplyFacts& f) {
    std::string s = std::to_string(f.code);
    if (f.enhanced) s += " " + f.enhanced_text;
    return s;
}

// A reply at a stage before any recipient is named that says the server wants fewer
// connections from us, or any 421, or a banner that is not a greeting.
bool connection_pushback(const ReplyFacts& f, SmtpStage stage) {
    if (f.code == 421) return true;
    if (f.code < 400 || f.code > 599) return false;
    switch (stage) {
        case SmtpStage::banner:
            return true;
        case SmtpStage::ehlo:
        case SmtpStage::helo:
        case SmtpStage::mail_from:
        case SmtpStage::mail_from_again:
            return mentions(f.lower, kConnectionPushbackWords);
        default:
            return false;
    }
}

// The rule tag starts the reason; connection push-back makes any judgement MX-host-scoped.
Verdict verdict(VerdictClass cls, std::string_view tag, const ReplyFacts& f, SmtpStage stage,
                EvidenceScope scope = EvidenceScope::address) {
    std::string reason(tag);
    reason += ' ';
    reason += describe(f);
    reason += " at ";
    reason += stage_name(stage);
    if (connection_pushback(f, stage)) scope = EvidenceScope::mx_host;
    return {cls, std::move(reason), scope};
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
    } else if (connection_pushback(f, stage)) {
        tag = "too-many-connections";
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

// 5.1.0 other address status (Postfix "Address rejected", Cisco "#5.1.0 Address rejected"),
// 5.1.1 bad mailbox, 5.1.2 bad destination system and 5.1.3 bad mailbox syntax (this MX will not
// deliver to the address as written), 5.1.6 mailbox moved with no forwarding address ("at one
// time valid, no longer accepted"), 5.1.10 null MX / Exchange RecipientNotFound: all mean mail
// to the address bounces. 5.1.4 (ambiguous), 5.1.5 (valid) and unknown details are not.
bool is_absence_code(const Enhanced& e) {
    return e.cls == 5 && e.subject == 1 &&
           (e.detail == 0 || e.detail == 1 || e.detail == 2 || e.detail == 3 || e.detail == 6 ||
            e.detail == 10);
}

const Signature* vendor_signature(const ReplyFacts& f) {
    for (const auto& s : kVendorSignatures) {
        if (mentions(f.lower, std::span<const Phrase>(&s.phrase, 1))) return &s;
    }
    return nullptr;
}

// Exchange Online's "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)" is
// Directory-Based Edge Blocking: the recipient is not in the tenant's directory.
// https://learn.microsoft.com/en-us/exchange/troubleshoot/email-delivery/ndr/non-delivery-reports-in-exchange-online
bool is_directory_edge_block(const ReplyFacts& f) {
    return f.enhanced && f.enhanced->cls == 5 && f.enhanced->subject == 4 &&
           f.enhanced->detail == 1 && mentions(f.lower, std::array{Phrase{"access denied"}});
}

// The reply to a RCPT (real or random): the only place `invalid` can come from. The scope is
// the address's; classify_attempt() widens it when the random local part got the same.
Verdict judge_rcpt(const ReplyFacts& f, SmtpStage stage) {
    using V = VerdictClass;
    if (f.code >= 200 && f.code < 300) return verdict(V::valid, "rcpt-accepted", f, stage);
    if (is_unexpected_code(f.code)) return verdict(V::tempfail, "unexpected-reply", f, stage);
    if (f.code < 500) return judge_temporary(f, stage);

    // 530 5.7.0 Must issue a STARTTLS command first: we did not offer TLS; not a verdict.
    if (needs_tls(f)) return verdict(V::tempfail, "starttls-required", f, stage);
    // "550 4.1.1": the two codes contradict each other; trust neither.
    if (f.enhanced && f.enhanced->cls != 5)
        return verdict(V::policy_blocked, "inconsistent-reply", f, stage);
    const bool sender_code = f.enhanced && f.enhanced->subject == 1 &&
                             (f.enhanced->detail == 7 || f.enhanced->detail == 8);
    if (sender_code || mentions(f.lower, kSenderWords))
        return verdict(V::null_sender_rejected, "null-sender-rejected", f, stage);
    // 551 says the server knows the user and that mail belongs elsewhere: never absence.
    // With a forward-path the mailbox exists (valid), without one the server just will not
    // take it here (policy_blocked).
    if (f.code == 551) {
        if (f.names_address && mentions(f.lower, kForwardPathWords))
            return verdict(V::valid, "user-not-local-forward-path", f, stage);
        return verdict(V::policy_blocked, "user-not-local", f, stage);
    }

    const Signature* vendor = vendor_signature(f);
    if (vendor != nullptr && vendor->cls != V::invalid)
        return verdict(vendor->cls, "vendor:" + std::string(vendor->rule), f, stage);
    if (mentions(f.lower, kNotProofWords))
        return verdict(V::policy_blocked, "unverifiable", f, stage);
    if (vendor != nullptr)
        return verdict(V::invalid, "vendor:" + std::string(vendor->rule), f, stage);
    if (mentions(f.lower, kDisabledWords))
        return verdict(V::policy_blocked, "mailbox-disabled", f, stage);
    if (mentions(f.lower, kUnknownUserWords)) {
        // Said in words; "user-unknown-wording" when the code alone would have said otherwise.
        const bool code_agrees =
            f.enhanced ? is_absence_code(*f.enhanced) : (f.code == 550 || f.code == 553);
        return verdict(V::invalid, code_agrees ? "user-unknown" : "user-unknown-wording", f, stage);
    }

    if (f.enhanced) {
        const auto [cls, subject, detail] = *f.enhanced;
        switch (subject) {
            case 1:
                if (is_absence_code(*f.enhanced)) {
                    // Policy wording and no "no such user" wording: the code is not the news.
                    if (mentions(f.lower, kPolicyWords))
                        return verdict(V::policy_blocked, "policy-wording", f, stage);
                    return verdict(V::invalid, "user-unknown", f, stage);
                }
                return verdict(V::policy_blocked, "inconclusive", f, stage);
            case 2:
                // 5.2.2 mailbox full: the mailbox exists. 5.2.1 disabled/not accepting: it
                // exists but refuses; no claim of absence.
                if (detail == 2) return verdict(V::valid, "mailbox-full", f, stage);
                if (detail == 1) return verdict(V::policy_blocked, "mailbox-disabled", f, stage);
                return verdict(V::policy_blocked, "inconclusive", f, stage);
            case 4:
                // DBEB usually means the recipient is not in the tenant, but it also rejects
                // real users during directory-sync lag and in misconfigured hybrid setups, and
                // 5.4.x is not an address status: not proof for the real address (it does count
                // as a refusal of the random local part, see refused_as_unknown()).
                if (is_directory_edge_block(f))
                    return verdict(V::policy_blocked, "recipient-access-denied", f, stage);
                return verdict(V::policy_blocked, "inconclusive", f, stage);
            case 7:
                return verdict(V::policy_blocked, "policy", f, stage);
            default:
                return verdict(V::policy_blocked, "inconclusive", f, stage);
        }
    }

    // No enhanced code: the basic code and the wording are all we have. 552 "exceeded storage
    // allocation" is checked first because "exceeded" is also rate-limit wording.
    if (f.code == 552 && mentions(f.lower, kQuotaWords))
        return verdict(V::valid, "mailbox-full", f, stage);
    if (mentions(f.lower, kPolicyWords)) return verdict(V::policy_blocked, "policy", f, stage);
    if (f.code == 552) return verdict(V::valid, "mailbox-full", f, stage);
    // RFC 5321: 550 mailbox unavailable, 553 mailbox name not allowed.
    if (f.code == 550 || f.code == 553) return verdict(V::invalid, "user-unknown", f, stage);
    if (f.code <= 504 || f.code == 555) return verdict(V::tempfail, "command-rejected", f, stage);
    return verdict(V::policy_blocked, "inconclusive", f, stage);
}

// The random local part was refused in a way that shows the server knows its users: the same
// "no such user" that would make the real address invalid, or Exchange Online's directory
// block (for an address we made up, "not in the directory" is the whole point).
bool refused_as_unknown(const ReplyFacts& f) {
    return judge_rcpt(f, SmtpStage::random_rcpt).cls == VerdictClass::invalid ||
           is_directory_edge_block(f);
}

// 5xx to MAIL FROM:<>. It is a domain fact ("rejects <>") unless the wording shows the target is
// blocking our IP or host (DNSBL, reputation, rate): that would apply to any sender, so it is
// policy_blocked (still about the domain's MX, never about an address). STARTTLS demands are
// tempfail; 530 authentication demands are policy.
Verdict judge_mail_from_reject(const ReplyFacts& f, SmtpStage stage, bool first_was_accepted) {
    using V = VerdictClass;
    const EvidenceScope domain = EvidenceScope::domain;
    if (needs_tls(f)) return verdict(V::tempfail, "starttls-required", f, stage);
    if (f.code == 530) return verdict(V::policy_blocked, "auth-required", f, stage, domain);
    if (mentions(f.lower, kClientBlockedWords))
        return verdict(V::policy_blocked, "client-blocked", f, stage, domain);
    // The first MAIL FROM:<> was accepted, so a later refusal is not about the null sender.
    if (first_was_accepted) return verdict(V::policy_blocked, "policy", f, stage, domain);
    return verdict(V::null_sender_rejected, "null-sender-rejected", f, stage, domain);
}

// A conversation that ended without a reply: tempfail naming the event and the stage in the
// words of the wording table (transcript.cpp), except that an address the server cannot be asked
// about without SMTPUTF8 is `skipped` (never asked, so no claim).
Verdict judge_event(const HostAttempt& a) {
    const std::string stage(stage_name(a.last_stage));
    const std::string detail = a.detail.empty() ? std::string() : ": " + a.detail;
    if (a.last_stage == SmtpStage::tls_handshake && a.event != StageEvent::deadline) {
        std::string what = a.event == StageEvent::protocol_error
                               ? a.detail
                               : std::string(event_phrase(a.event)) + detail;
        return {VerdictClass::tempfail, "tls-failed: handshake " + what};
    }
    switch (a.event) {
        case StageEvent::connect_failed:
            // The OS reason tells refused from unreachable; other events name the stage only, so
            // their reasons stay the same from one failure to the next.
            return {VerdictClass::tempfail, event_in_stage(a.event, a.last_stage) + detail};
        case StageEvent::timeout:
        case StageEvent::deadline:
        case StageEvent::closed:
        case StageEvent::io_error:
        case StageEvent::protocol_error:
            return {VerdictClass::tempfail, event_in_stage(a.event, a.last_stage)};
        case StageEvent::tls_unavailable:
            // callout.tls = encrypt: MAIL FROM is never sent in plaintext. The scope is decided
            // over all MX hosts in classify().
            return {VerdictClass::tempfail,
                    "tls-unavailable: " + (a.detail.empty()
                                               ? std::string(event_phrase(a.event)) + " at " + stage
                                               : a.detail)};
        case StageEvent::smtputf8_unsupported:
            return {VerdictClass::skipped,
                    "smtputf8-unsupported: " + std::string(event_phrase(a.event)) + " at " + stage};
        case StageEvent::reply:
            break;
    }
    return {VerdictClass::tempfail, "missing reply at " + stage};
}

bool is_positive(int code) {
    return code >= 200 && code < 300;
}

// The reply that ended the conversation at `stage`, when nothing earlier was decisive.
Verdict judge_final_reply(const HostAttempt& a, const ReplyFacts& f) {
    const SmtpStage stage = a.last_stage;
    if (is_unexpected_code(f.code) || is_positive(f.code))
        return verdict(VerdictClass::tempfail, "probe-incomplete", f, stage);
    // Only callout.tls = encrypt ends at a refused STARTTLS ("454 4.7.0 TLS not available"): the
    // server will not encrypt today, whatever its wording says.
    if (stage == SmtpStage::starttls && f.code != 421)
        return verdict(VerdictClass::tempfail, "starttls-rejected", f, stage);
    if (f.code < 500) return judge_temporary(f, stage);
    switch (stage) {
        case SmtpStage::banner:
        case SmtpStage::ehlo:
        case SmtpStage::helo:
            if (needs_tls(f)) return verdict(VerdictClass::tempfail, "starttls-required", f, stage);
            // The server refuses to talk to us, whoever we ask about (a banner reject is also
            // connection push-back: MX-host-scoped, see verdict()).
            return verdict(VerdictClass::policy_blocked, "policy", f, stage, EvidenceScope::domain);
        case SmtpStage::mail_from:
            return judge_mail_from_reject(f, stage, false);
        case SmtpStage::mail_from_again:
            return judge_mail_from_reject(f, stage, a.mail_from && is_positive(a.mail_from->code));
        case SmtpStage::random_rcpt:
        case SmtpStage::rcpt:
            return judge_rcpt(f, stage);
        case SmtpStage::connect:
        case SmtpStage::starttls:
        case SmtpStage::tls_handshake:
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

// The rule tag at the start of a reason ("policy" of "policy 550 5.7.1 at RCPT").
std::string_view rule_of(std::string_view reason) {
    return reason.substr(0, reason.find(' '));
}

// A 2xx (or 552 mailbox full) for the real address counts only if the server showed it does not
// accept everything: the random local part refused as unknown in this conversation, or a cached
// fact from such a refusal. A greylisted or unanswered random local part proves nothing.
Verdict gate_positive(Verdict v, const SmtpReply* random, const ClassifyContext& ctx) {
    if (random == nullptr) {
        // callout.random_check = false: the operator chose to trust a 2xx.
        v.reason += "; accept-all check off";
        return v;
    }
    ReplyFacts rf = facts_of(*random);
    if (refused_as_unknown(rf)) {
        v.reason += "; random local part refused " + describe(rf);
        return v;
    }
    if (ctx.domain_not_accept_all) {
        v.reason += "; domain known not accept-all";
        return v;
    }
    Verdict why = judge_rcpt(rf, SmtpStage::random_rcpt);
    return {VerdictClass::tempfail,
            "accept-all-unknown: " + v.reason + "; random local part " + why.reason};
}

// "Must issue a STARTTLS command first" means something different depending on what happened to
// TLS on that connection; the reason says which (callout.tls = none, a server that demands TLS
// without offering it, the plaintext retry after a broken handshake).
Verdict with_tls_context(Verdict v, const HostAttempt& a) {
    if (rule_of(v.reason) != "starttls-required") return v;
    if (a.plaintext_retry)
        v.reason += "; plaintext retry after a failed TLS handshake";
    else if (a.tls)
        v.reason += "; inside TLS";
    else if (a.starttls_offered)
        v.reason += "; STARTTLS offered, not used";
    else
        v.reason += "; STARTTLS not offered";
    return v;
}

// The conversation that decides a probe: the last one that reached a server.
std::optional<size_t> decisive_index(const std::vector<HostAttempt>& attempts) {
    std::optional<size_t> decisive;
    for (size_t i = 0; i < attempts.size(); ++i) {
        if (attempts[i].last_stage != SmtpStage::connect) decisive = i;
    }
    return decisive;
}

// Order: accept-all check, real RCPT, refusals recorded on the way, then how it ended.
Verdict judge_attempt(const HostAttempt& a, const ClassifyContext& ctx) {
    const SmtpReply* random = reply_at(a, a.random_rcpt, SmtpStage::random_rcpt);
    if (random != nullptr && is_positive(random->code))
        return verdict(VerdictClass::accept_all, "random-local-part-accepted", facts_of(*random),
                       SmtpStage::random_rcpt, EvidenceScope::domain);

    // Once the real RCPT is answered, nothing later (RSET, QUIT, a dropped connection) matters.
    if (const SmtpReply* rcpt = reply_at(a, a.rcpt, SmtpStage::rcpt)) {
        Verdict v = judge_rcpt(facts_of(*rcpt), SmtpStage::rcpt);
        if (v.cls == VerdictClass::valid) return gate_positive(std::move(v), random, ctx);
        // One mailbox's refusal speaks for that mailbox. The same kind of refusal for the
        // random local part means the server refuses probes, not one mailbox: a domain fact.
        if (random != nullptr && v.scope == EvidenceScope::address &&
            (v.cls == VerdictClass::policy_blocked ||
             v.cls == VerdictClass::null_sender_rejected)) {
            Verdict r = judge_rcpt(facts_of(*random), SmtpStage::random_rcpt);
            if (r.cls == v.cls && rule_of(r.reason) == rule_of(v.reason)) {
                return {v.cls, "probes-refused: " + v.reason + "; random local part " + r.reason,
                        EvidenceScope::domain};
            }
        }
        return v;
    }

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

// callout.tls = encrypt and no MX host offered STARTTLS: a fact about the domain's mail servers
// (no mailbox was named, so none can speak for the domain), kept under the domain for
// cache.tempfail_ttl so its other senders do not each cost a connection. It takes every host
// tried to say so: if another MX host failed otherwise (refused, timeout), it might offer TLS,
// and the verdict stays with the address. Never MX-host scope: that means push-back, and backs
// off a host that did nothing wrong.
bool no_server_offers_tls(const std::vector<HostAttempt>& attempts) {
    for (const auto& a : attempts) {
        if (a.event != StageEvent::tls_unavailable) return false;
    }
    return !attempts.empty();
}

}  // namespace

Verdict classify_attempt(const HostAttempt& a, const ClassifyContext& ctx) {
    return with_tls_context(judge_attempt(a, ctx), a);
}

Verdict classify(const std::vector<HostAttempt>& attempts, const ClassifyContext& ctx) {
    if (attempts.empty()) return {VerdictClass::tempfail, "no-attempt"};

    std::optional<size_t> decisive = decisive_index(attempts);
    if (!decisive) {
        Verdict last = classify_attempt(attempts.back(), ctx);
        if (attempts.size() == 1) return last;
        return {VerdictClass::tempfail, "no MX host reachable (" + std::to_string(attempts.size()) +
                                            " addresses tried); last: " + last.reason};
    }

    Verdict v = classify_attempt(attempts[*decisive], ctx);
    if (attempts[*decisive].event == StageEvent::tls_unavailable && no_server_offers_tls(attempts))
        v.scope = EvidenceScope::domain;
    if (v.cls != VerdictClass::invalid) return v;
    // Another MX host accepted the address: the hosts disagree, so absence is not proven.
    for (size_t i = 0; i < attempts.size(); ++i) {
        if (i == *decisive) continue;
        Verdict other = classify_attempt(attempts[i], ctx);
        if (other.cls == VerdictClass::valid || other.cls == VerdictClass::accept_all) {
            other.reason += " (MX hosts disagree: " + v.reason + ")";
            return other;
        }
    }
    return v;
}

RandomLocalPartEvidence random_local_part_evidence(const std::vector<HostAttempt>& attempts) {
    RandomLocalPartEvidence e;
    std::optional<size_t> decisive = decisive_index(attempts);
    if (!decisive) return e;
    const HostAttempt& a = attempts[*decisive];
    const SmtpReply* random = reply_at(a, a.random_rcpt, SmtpStage::random_rcpt);
    if (random == nullptr) return e;
    ReplyFacts f = facts_of(*random);
    if (refused_as_unknown(f)) {
        e.refused_as_unknown = true;
    } else if (f.code >= 400 && f.code < 500 && f.code != 421) {
        e.deferred = Verdict{VerdictClass::tempfail,
                             "random-local-part-greylisted " + describe(f) + " at random RCPT",
                             EvidenceScope::domain};
    }
    return e;
}

bool pushes_back(const HostAttempt& attempt) {
    if (attempt.event != StageEvent::reply || !attempt.last_reply) return false;
    return connection_pushback(facts_of(*attempt.last_reply), attempt.last_stage);
}

}  // namespace calloutd
