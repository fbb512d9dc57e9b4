// Classifier table: real wording from Postfix, Exim, Microsoft 365, Gmail, Yahoo and others.
// Over 500 lines as one concept: the classifier's case tables (verbatim vendor replies).
#include "callout/classifier.hpp"

#include <gtest/gtest.h>

#include "callout/smtp_probe.hpp"

#include <string>
#include <vector>

namespace calloutd {
namespace {

// Builds a reply from wire text: lines "550-..." / "550 ..." separated by '\n'.
SmtpReply R(const std::string& wire) {
    SmtpReply r;
    size_t start = 0;
    while (start <= wire.size()) {
        size_t nl = wire.find('\n', start);
        std::string line =
            wire.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
        if (r.code == 0) r.code = std::stoi(line.substr(0, 3));
        r.lines.push_back(line.size() > 4 ? line.substr(4) : "");
        if (nl == std::string::npos) break;
        start = nl + 1;
    }
    // Enhanced code from the first line, as the reply parser does.
    const std::string& first = r.lines.front();
    size_t sp = first.find(' ');
    std::string token = first.substr(0, sp);
    if (token.size() >= 5 && (token[0] == '2' || token[0] == '4' || token[0] == '5') &&
        token[1] == '.' && token.find_first_not_of("0123456789.") == std::string::npos)
        r.enhanced = token;
    return r;
}

const SmtpReply kOk = R("250 2.1.0 Ok");
const SmtpReply kRandomUnknown =
    R("550 5.1.1 <calloutd-check-x7k2@example.org>: Recipient address "
      "rejected: User unknown in local recipient table");

// A full conversation whose real RCPT got `rcpt` (the random RCPT was refused as unknown).
HostAttempt at_rcpt(const SmtpReply& rcpt) {
    HostAttempt a;
    a.mx_host = "mx.example.org";
    a.address = "192.0.2.25";
    a.mail_from = kOk;
    a.random_rcpt = kRandomUnknown;
    a.rcpt = rcpt;
    a.last_stage = SmtpStage::rcpt;
    a.event = StageEvent::reply;
    a.last_reply = rcpt;
    return a;
}

// Conversation that ended with `reply` at `stage` (earlier stages succeeded).
HostAttempt ended_at(SmtpStage stage, const SmtpReply& reply) {
    HostAttempt a;
    a.mx_host = "mx.example.org";
    a.address = "192.0.2.25";
    if (stage > SmtpStage::mail_from) a.mail_from = kOk;
    if (stage == SmtpStage::mail_from) a.mail_from = reply;
    if (stage > SmtpStage::random_rcpt) a.random_rcpt = kRandomUnknown;
    if (stage == SmtpStage::random_rcpt) a.random_rcpt = reply;
    if (stage == SmtpStage::rcpt) a.rcpt = reply;
    a.last_stage = stage;
    a.event = StageEvent::reply;
    a.last_reply = reply;
    return a;
}

// Conversation that ended without a reply at `stage`.
HostAttempt failed_at(SmtpStage stage, StageEvent event) {
    HostAttempt a;
    a.mx_host = "mx.example.org";
    a.address = "192.0.2.25";
    if (stage > SmtpStage::mail_from) a.mail_from = kOk;
    if (stage > SmtpStage::random_rcpt) a.random_rcpt = kRandomUnknown;
    a.last_stage = stage;
    a.event = event;
    return a;
}

HostAttempt without_random(HostAttempt a) {
    a.random_rcpt.reset();
    return a;
}

struct Case {
    const char* name;
    HostAttempt attempt;
    VerdictClass expected;
    const char* reason_has = "";  // substring the reason must contain
};

std::vector<Case> cases() {
    using S = SmtpStage;
    using E = StageEvent;
    using V = VerdictClass;
    return {
        // --- Postfix ---
        {"postfix local user unknown",
         at_rcpt(R("550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown in "
                   "local recipient table")),
         V::invalid, "user-unknown 550 5.1.1 at RCPT"},
        {"postfix virtual user unknown",
         at_rcpt(R("550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown in "
                   "virtual mailbox table")),
         V::invalid},
        {"postfix relay recipient table (word relay must not mask 5.1.1)",
         at_rcpt(R("550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown in "
                   "relay recipient table")),
         V::invalid},
        {"echoed address with policy words is not wording",
         at_rcpt(R("550 5.1.1 <spam-relay-abuse@blocked.example>: Recipient address rejected: "
                   "User unknown in local recipient table")),
         V::invalid},
        {"postfix soft user unknown 450 4.1.1",
         at_rcpt(R("450 4.1.1 <bob@example.org>: Recipient address rejected: User unknown in "
                   "local recipient table")),
         V::tempfail},
        {"postfix relay access denied",
         at_rcpt(R("554 5.7.1 <bob@example.org>: Relay access denied")), V::policy_blocked,
         "policy 554 5.7.1 at RCPT"},
        {"postfix no PTR 450 4.7.1",
         at_rcpt(R("450 4.7.1 Client host rejected: cannot find your hostname, [192.0.2.7]")),
         V::tempfail},
        {"postfix 550 5.1.0 address rejected",
         at_rcpt(R("550 5.1.0 <bob@example.org>: Address rejected")), V::invalid},
        {"postfix dnsbl at RCPT",
         at_rcpt(R("554 5.7.1 Service unavailable; Client host [192.0.2.7] blocked using "
                   "zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.7")),
         V::policy_blocked},
        {"postfix unverified recipient (backend verify, temporary)",
         at_rcpt(R("450 4.1.1 <bob@example.org>: Recipient address rejected: unverified address: "
                   "host mx.internal[10.0.0.5] said: 550 5.1.1 User unknown")),
         V::tempfail},
        {"postfix sender restriction delayed to RCPT",
         at_rcpt(R("553 5.1.8 <>: Sender address rejected: Domain not found")),
         V::null_sender_rejected},
        {"postfix client access denied",
         at_rcpt(R("554 5.7.1 <unknown[192.0.2.7]>: Client host rejected: Access denied")),
         V::policy_blocked},
        // --- Exim ---
        {"exim unrouteable", at_rcpt(R("550 Unrouteable address")), V::invalid,
         "user-unknown 550 at RCPT"},
        {"exim sender verify failed (blowback-ish, not proof)",
         at_rcpt(R("550-Verification failed for <bob@example.org>\n550-Called:   192.0.2.26\n"
                   "550-Sent:     RCPT TO:<bob@example.org>\n550-Response: 550 5.1.1 User "
                   "unknown\n550 Sender verify failed")),
         V::policy_blocked},
        {"exim recipient callout failed (second-hand, not proof)",
         at_rcpt(R("550-Callout verification failed:\n550 550 5.1.1 <bob@example.org>: User "
                   "unknown")),
         V::policy_blocked},
        {"exim temporary local problem",
         at_rcpt(R("451 Temporary local problem - please try later")), V::tempfail},
        {"exim administrative prohibition", at_rcpt(R("550 Administrative prohibition")),
         V::policy_blocked},
        {"exim relay not permitted", at_rcpt(R("550 relay not permitted")), V::policy_blocked},
        // --- Microsoft 365 / Exchange ---
        {"m365 DBEB 5.4.1 access denied (not proof: 5.4.x, sync lag)",
         at_rcpt(R("550 5.4.1 Recipient address rejected: Access denied. AS(201806281) "
                   "[DB5EUR03FT012.eop-EUR03.prod.protection.outlook.com]")),
         V::policy_blocked, "recipient-access-denied"},
        {"m365 banned sending IP at RCPT",
         at_rcpt(R("550 5.7.606 Access denied, banned sending IP [192.0.2.7]. To request removal "
                   "from this list please visit https://sender.office.com/ and follow the "
                   "directions. AS(1430)")),
         V::policy_blocked},
        {"m365 banned sending IP at MAIL FROM is a block of us, not of <>",
         ended_at(S::mail_from, R("550 5.7.606 Access denied, banned sending IP [192.0.2.7]. "
                                  "AS(1430)")),
         V::policy_blocked, "client-blocked"},
        {"exchange recipient not found 5.1.10",
         at_rcpt(R("550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP "
                   "address lookup")),
         V::invalid},
        {"m365 server busy",
         at_rcpt(R("451 4.7.500 Server busy. Please try again later from "
                   "[192.0.2.7]. (AS761)")),
         V::tempfail},
        // --- Gmail ---
        {"gmail no such user",
         at_rcpt(R("550-5.1.1 The email account that you tried to reach does not exist. Please "
                   "try\n550-5.1.1 double-checking the recipient's email address for typos "
                   "or\n550-5.1.1 unnecessary spaces. Learn more at\n550 5.1.1  "
                   "https://support.google.com/mail/?p=NoSuchUser a1si1234567qkb.123 - gsmtp")),
         V::invalid, "google-no-such-user 550 5.1.1"},
        {"gmail unusual rate 421 at RCPT",
         at_rcpt(R("421-4.7.0 [192.0.2.7      15] Our system has detected an unusual rate "
                   "of\n421-4.7.0 unsolicited mail originating from your IP address. To protect "
                   "our\n421 4.7.0 users from spam, mail sent from your IP address has been "
                   "temporarily rate limited. - gsmtp")),
         V::tempfail, "421"},
        {"gmail not authorized IP",
         at_rcpt(R("550-5.7.1 [192.0.2.7] The IP you're using to send mail is not authorized "
                   "to\n550-5.7.1 send email directly to our servers. Please use the SMTP relay "
                   "at your\n550 5.7.1 service provider instead. - gsmtp")),
         V::policy_blocked},
        {"workspace IP not in whitelist",
         at_rcpt(R("550 5.7.1 [192.0.2.7] IP not in whitelist for RCPT domain - gsmtp")),
         V::policy_blocked},
        {"gmail over quota 552 5.2.2",
         at_rcpt(R("552-5.2.2 The email account that you tried to reach is over quota. Please "
                   "direct\n552 5.2.2 the recipient to https://support.google.com/mail/?p=Over"
                   "QuotaPerm - gsmtp")),
         V::valid, "mailbox-full"},
        {"gmail disabled account 5.2.1 (exists, not absent)",
         at_rcpt(R("550-5.2.1 The email account that you tried to reach is disabled. Learn "
                   "more at\n550 5.2.1  https://support.google.com/mail/?p=DisabledUser - gsmtp")),
         V::policy_blocked},
        {"gmail receiving at a rate 450 4.2.1",
         at_rcpt(R("450-4.2.1 The user you are trying to contact is receiving mail at a rate "
                   "that\n450 4.2.1 prevents additional messages from being delivered. - gsmtp")),
         V::tempfail},
        // --- Yahoo ---
        {"yahoo 554 no such account (no enhanced code, explicit wording)",
         at_rcpt(R("554 delivery error: dd This user doesn't have a yahoo.com account "
                   "(bob@yahoo.com) [0] - mta1234.mail.gq1.yahoo.com")),
         V::invalid},
        {"yahoo 554 mailbox disabled",
         at_rcpt(R("554 delivery error: dd Sorry your message to bob@yahoo.com cannot be "
                   "delivered. This mailbox is disabled (554.30). - mta1234.mail.gq1.yahoo.com")),
         V::policy_blocked},
        {"yahoo TSS04 deferred at banner",
         ended_at(S::banner, R("421 4.7.0 [TSS04] Messages from 192.0.2.7 temporarily deferred "
                               "due to unexpected volume or user complaints - 4.16.55.1; see "
                               "https://postmaster.yahooinc.com/error-codes")),
         V::tempfail},
        {"yahoo TSS04 deferred at RCPT",
         at_rcpt(R("421 4.7.0 [TSS04] Messages from 192.0.2.7 temporarily deferred due to "
                   "unexpected volume or user complaints")),
         V::tempfail},
        {"yahoo BL21 spamhaus at banner",
         ended_at(S::banner, R("553 5.7.1 [BL21] Connections will not be accepted from "
                               "192.0.2.7, because the ip is in Spamhaus's list; see "
                               "https://postmaster.yahooinc.com/error-codes")),
         V::policy_blocked},
        // --- greylisting ---
        {"greylisting in action",
         at_rcpt(R("451 4.7.1 Greylisting in action, please come back later")), V::tempfail,
         "greylisted 451 4.7.1 at RCPT"},
        {"postgrey greylisted",
         at_rcpt(R("450 4.2.0 <bob@example.org>: Recipient address rejected: Greylisted, see "
                   "http://postgrey.schweikert.ch/help/example.org.html")),
         V::tempfail, "greylisted"},
        // --- blowback / backscatter filters ---
        {"BATV bounce filter 5.7.1",
         at_rcpt(R("550 5.7.1 Bounce rejected: we did not send the original message (BATV)")),
         V::policy_blocked},
        {"bounce filter dressed as 5.1.1",
         at_rcpt(R("550 5.1.1 <bob@example.org>: Invalid bounce: missing BATV signature")),
         V::policy_blocked},
        {"rejected by sender verification dressed as 5.1.1",
         at_rcpt(R("550 5.1.1 <bob@example.org>: rejected by sender verification")),
         V::policy_blocked},
        // --- mailbox full ---
        {"mailbox full 552 5.2.2", at_rcpt(R("552 5.2.2 <bob@example.org>: Mailbox full")),
         V::valid, "mailbox-full"},
        {"over quota 452 4.2.2 (transient: no claim)",
         at_rcpt(R("452 4.2.2 <bob@example.org>: Over quota")), V::tempfail, "mailbox-full"},
        {"552 exceeded storage without enhanced code",
         at_rcpt(R("552 Requested mail action aborted: exceeded storage allocation")), V::valid},
        {"too many recipients 452", at_rcpt(R("452 4.5.3 Error: too many recipients")), V::tempfail,
         "too-many-recipients"},
        // --- no enhanced code ---
        {"plain 550 no such user", at_rcpt(R("550 No such user here")), V::invalid},
        {"plain 550 mailbox unavailable",
         at_rcpt(R("550 Requested action not taken: mailbox unavailable")), V::invalid},
        {"551 with a forward-path: the user exists elsewhere",
         at_rcpt(R("551 User not local; please try <bob@elsewhere.example>")), V::valid,
         "user-not-local-forward-path 551 at RCPT"},
        {"551 without a forward-path is never invalid", at_rcpt(R("551 5.1.1 User not local")),
         V::policy_blocked, "user-not-local"},
        {"qmail 553 not in rcpthosts (#5.7.1)",
         at_rcpt(R("553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)")),
         V::policy_blocked},
        {"qmail 550 no mailbox (#5.1.1)",
         at_rcpt(R("550 sorry, no mailbox here by that name. (#5.1.1)")), V::invalid, "5.1.1"},
        {"plain 550 access denied", at_rcpt(R("550 Access denied")), V::policy_blocked},
        {"plain 550 rejected by policy", at_rcpt(R("550 Rejected by policy")), V::policy_blocked},
        {"plain 554 transaction failed", at_rcpt(R("554 Transaction failed")), V::policy_blocked},
        {"550 with contradicting 4.x.x", at_rcpt(R("550 4.1.1 User unknown")), V::policy_blocked},
        {"5.1.4 ambiguous is not absence", at_rcpt(R("550 5.1.4 Ambiguous destination address")),
         V::policy_blocked},
        {"5.1.6 mailbox moved", at_rcpt(R("550 5.1.6 Mailbox has moved, no forwarding address")),
         V::invalid},
        {"5.1.2 bad destination system",
         at_rcpt(R("550 5.1.2 <bob@example.org>: Recipient address rejected: Domain not found")),
         V::invalid},
        // --- MAIL FROM:<> ---
        {"null sender not accepted",
         ended_at(S::mail_from, R("550 5.7.1 Null sender not accepted")), V::null_sender_rejected,
         "null-sender-rejected 550 5.7.1 at MAIL FROM"},
        {"null sender 553 5.1.8",
         ended_at(S::mail_from, R("553 5.1.8 <>: Sender address rejected: Domain not found")),
         V::null_sender_rejected},
        {"dnsbl at MAIL FROM is a block of us",
         ended_at(S::mail_from, R("550 5.7.1 Client host rejected: blocked using bl.spamcop.net")),
         V::policy_blocked},
        {"501 5.1.7 at MAIL FROM", ended_at(S::mail_from, R("501 5.1.7 Bad sender address syntax")),
         V::null_sender_rejected},
        {"4xx at MAIL FROM", ended_at(S::mail_from, R("451 4.3.0 Error: queue file write error")),
         V::tempfail},
        {"5xx at second MAIL FROM after first accepted",
         ended_at(S::mail_from_again, R("550 5.7.1 Too many messages in this session")),
         V::policy_blocked},
        // --- banner / EHLO / HELO ---
        {"554 banner",
         ended_at(S::banner, R("554 5.7.1 mx.example.org ESMTP not accepting "
                               "messages from 192.0.2.7")),
         V::policy_blocked, "at banner"},
        {"554 no SMTP service", ended_at(S::banner, R("554 No SMTP service here")),
         V::policy_blocked},
        {"5xx at HELO after EHLO fallback", ended_at(S::helo, R("550 5.7.1 Access denied")),
         V::policy_blocked, "at HELO"},
        {"5xx at EHLO", ended_at(S::ehlo, R("550 Bad HELO - Host impersonating example.org")),
         V::policy_blocked},
        // --- STARTTLS ---
        {"STARTTLS required at MAIL FROM",
         ended_at(S::mail_from, R("530 5.7.0 Must issue a STARTTLS command first")), V::tempfail,
         "starttls-required"},
        {"STARTTLS required at RCPT", at_rcpt(R("530 5.7.0 Must issue a STARTTLS command first")),
         V::tempfail},
        {"auth required at MAIL FROM",
         ended_at(S::mail_from, R("530 5.7.0 Authentication required")), V::policy_blocked},
        // --- 421 at each stage ---
        {"421 at banner",
         ended_at(S::banner, R("421 4.3.2 Service not available, closing "
                               "transmission channel")),
         V::tempfail, "service-unavailable 421 4.3.2 at banner"},
        {"421 at EHLO", ended_at(S::ehlo, R("421 4.7.0 Too many connections")), V::tempfail},
        {"421 at MAIL FROM", ended_at(S::mail_from, R("421 4.7.0 Try again later, closing")),
         V::tempfail},
        {"421 at random RCPT", ended_at(S::random_rcpt, R("421 4.7.0 Too many errors")),
         V::tempfail, "at random RCPT"},
        {"421 at RCPT", at_rcpt(R("421 4.4.2 mx.example.org Error: timeout exceeded")),
         V::tempfail},
        // --- timeouts and other failures at each stage ---
        {"connect refused",
         [] {
             HostAttempt a = failed_at(S::connect, E::connect_failed);
             a.detail = "Connection refused";
             return a;
         }(),
         V::tempfail, "connect failed: Connection refused"},
        {"timeout connecting", failed_at(S::connect, E::timeout), V::tempfail,
         "timeout while connecting"},
        {"timeout at banner", failed_at(S::banner, E::timeout), V::tempfail,
         "timeout while waiting for banner"},
        {"closed at banner", failed_at(S::banner, E::closed), V::tempfail,
         "connection closed while waiting for banner"},
        {"timeout at EHLO", failed_at(S::ehlo, E::timeout), V::tempfail,
         "timeout while waiting for EHLO reply"},
        {"timeout at MAIL FROM", failed_at(S::mail_from, E::timeout), V::tempfail,
         "timeout while waiting for MAIL FROM reply"},
        {"timeout at random RCPT", failed_at(S::random_rcpt, E::timeout), V::tempfail,
         "timeout while waiting for random RCPT reply"},
        {"timeout at RSET", failed_at(S::rset, E::timeout), V::tempfail,
         "timeout while waiting for RSET reply"},
        {"timeout at RCPT", failed_at(S::rcpt, E::timeout), V::tempfail,
         "timeout while waiting for RCPT reply"},
        {"deadline at RCPT", failed_at(S::rcpt, E::deadline), V::tempfail,
         "probe deadline reached while waiting for RCPT reply"},
        {"io error at MAIL FROM", failed_at(S::mail_from_again, E::io_error), V::tempfail,
         "I/O error while waiting for MAIL FROM reply"},
        {"protocol error at banner", failed_at(S::banner, E::protocol_error), V::tempfail,
         "protocol error while waiting for banner"},
        // --- accept-all and the random RCPT ---
        {"random local part accepted", ended_at(S::random_rcpt, R("250 2.1.5 Ok")), V::accept_all,
         "random-local-part-accepted"},
        {"random accepted wins even if the real one was refused",
         [] {
             HostAttempt a = at_rcpt(R("550 5.1.1 User unknown"));
             a.random_rcpt = R("250 2.1.5 Ok");
             return a;
         }(),
         V::accept_all},
        {"random refused 5.1.1, real accepted", at_rcpt(R("250 2.1.5 Ok")), V::valid,
         "rcpt-accepted 250 2.1.5 at RCPT"},
        {"real accepted without accept-all check", without_random(at_rcpt(R("250 2.1.5 Ok"))),
         V::valid},
        {"real accepted, then QUIT timed out",
         [] {
             HostAttempt a = at_rcpt(R("250 2.1.5 Ok"));
             a.last_stage = S::quit;
             a.event = E::timeout;
             a.last_reply.reset();
             return a;
         }(),
         V::valid},
        {"random greylisted, real not asked",
         ended_at(S::random_rcpt, R("451 4.7.1 Greylisting in action, please come back later")),
         V::tempfail, "greylisted"},
        {"random 5.7.1, real not asked",
         ended_at(S::random_rcpt, R("550 5.7.1 Recipient address rejected: Access denied")),
         V::policy_blocked, "at random RCPT"},
        {"random refused as unknown, probe stopped (no claim)",
         ended_at(S::random_rcpt, kRandomUnknown), V::tempfail, "probe-incomplete"},
        {"random refused, then connection closed before real RCPT",
         [] {
             HostAttempt a = failed_at(S::mail_from_again, E::closed);
             return a;
         }(),
         V::tempfail, "connection closed while waiting for MAIL FROM reply"},
    };
}

TEST(Classifier, Table) {
    auto table = cases();
    ASSERT_GE(table.size(), 45u);
    for (const auto& c : table) {
        Verdict v = classify_attempt(c.attempt);
        EXPECT_EQ(to_string(v.cls), to_string(c.expected)) << c.name << " → " << v.reason;
        EXPECT_FALSE(v.reason.empty()) << c.name;
        EXPECT_NE(v.reason.find(c.reason_has), std::string::npos)
            << c.name << ": reason '" << v.reason << "' lacks '" << c.reason_has << "'";
        // classify() over a single attempt agrees with classify_attempt().
        Verdict whole = classify({c.attempt});
        EXPECT_EQ(whole.cls, v.cls) << c.name;
    }
}

// Replies that are about the prober, not the mailbox, at every code a server might pick.
TEST(Classifier, PolicyWordingIsNeverInvalid) {
    const char* texts[] = {
        "Blocked by policy",
        "Your IP is listed at zen.spamhaus.org",
        "Relaying denied",
        "relay not permitted",
        "Sender verify failed",
        "Callout verification failed",
        "Address verification failed",
        "Access denied",
        "Too many recipients from your host",
        "Rate limit exceeded",
        "Poor reputation",
        "Rejected by DNSBL",
        "RBL: client listed",
        "Greylisted, try again later",
        "Temporarily rejected, try again later",
        "Authentication required",
        "Not permitted",
        "Message rejected as spam",
        "Backscatter protection: bounce rejected",
        "blacklisted",
        "Abuse detected from your IP address",
        "Mail from your IP address is not allowed",
        "Administrative prohibition",
        "Must issue a STARTTLS command first",
    };
    const char* prefixes[] = {"550 ",       "551 ",       "553 ",       "554 ",
                              "550 5.7.1 ", "554 5.7.1 ", "550 5.1.1 ", "553 5.1.0 ",
                              "550 5.7.0 ", "530 5.7.0 ", "550 5.4.1 "};
    for (const char* p : prefixes) {
        for (const char* t : texts) {
            // Policy wording outranks the code, 5.1.x included: "550 5.1.1 Relaying denied"
            // says nothing about a mailbox. When in doubt, not invalid.
            std::string wire = std::string(p) + t;
            Verdict v = classify_attempt(at_rcpt(R(wire)));
            EXPECT_NE(v.cls, VerdictClass::invalid) << wire << " → " << v.reason;
        }
    }
    // 5.1.x with verification or blocking wording is not proof.
    const char* not_proof[] = {
        "550 5.1.1 Sender verify failed",
        "550 5.1.1 Callout verification failed",
        "550 5.1.0 Address verification failed",
        "550 5.1.1 Rejected by DNSBL",
        "550 5.1.1 Message rejected as spam",
        "550 5.1.1 Your IP is blacklisted",
        "550 5.1.1 Backscatter protection: bounce rejected",
        "550 5.1.1 Blocked by policy",
    };
    for (const char* wire : not_proof) {
        Verdict v = classify_attempt(at_rcpt(R(wire)));
        EXPECT_NE(v.cls, VerdictClass::invalid) << wire << " → " << v.reason;
    }
}

// A 5.1.1 anywhere but the real RCPT is never `invalid`.
TEST(Classifier, UserUnknownOnlyCountsAtRealRcpt) {
    const SmtpReply unknown = R("550 5.1.1 User unknown");
    for (SmtpStage s : {SmtpStage::banner, SmtpStage::ehlo, SmtpStage::helo, SmtpStage::starttls,
                        SmtpStage::mail_from, SmtpStage::random_rcpt, SmtpStage::rset,
                        SmtpStage::mail_from_again, SmtpStage::quit}) {
        Verdict v = classify_attempt(ended_at(s, unknown));
        EXPECT_NE(v.cls, VerdictClass::invalid) << stage_name(s) << " → " << v.reason;
        EXPECT_FALSE(v.reason.empty());
    }
}

TEST(Classifier, WholeProbe) {
    EXPECT_EQ(classify({}).cls, VerdictClass::tempfail);
    EXPECT_EQ(classify({}).reason, "no-attempt");

    HostAttempt refused = failed_at(SmtpStage::connect, StageEvent::connect_failed);
    refused.detail = "Connection refused";
    Verdict all_refused = classify({refused, refused, refused});
    EXPECT_EQ(all_refused.cls, VerdictClass::tempfail);
    EXPECT_NE(all_refused.reason.find("3 addresses"), std::string::npos) << all_refused.reason;
    EXPECT_NE(all_refused.reason.find("connect failed"), std::string::npos) << all_refused.reason;

    const HostAttempt busy = ended_at(SmtpStage::banner, R("421 4.3.2 Service not available"));
    const HostAttempt unknown = at_rcpt(R("550 5.1.1 <bob@example.org>: User unknown"));
    const HostAttempt accepted = at_rcpt(R("250 2.1.5 Ok"));
    const HostAttempt blocked = ended_at(SmtpStage::banner, R("554 5.7.1 Go away"));

    // The probe moved on after a 421 banner: the last host decides.
    EXPECT_EQ(classify({busy, unknown}).cls, VerdictClass::invalid);
    EXPECT_EQ(classify({refused, accepted}).cls, VerdictClass::valid);
    // A trailing connect failure does not hide what a reached host said.
    EXPECT_EQ(classify({blocked, refused}).cls, VerdictClass::policy_blocked);
    EXPECT_EQ(classify({unknown, refused}).cls, VerdictClass::invalid);
    // Hosts that disagree never produce `invalid`.
    Verdict disagree = classify({accepted, unknown});
    EXPECT_EQ(disagree.cls, VerdictClass::valid);
    EXPECT_NE(disagree.reason.find("disagree"), std::string::npos) << disagree.reason;
    // Timeouts at every host: the last one's stage is named.
    Verdict slow = classify({failed_at(SmtpStage::banner, StageEvent::timeout),
                             failed_at(SmtpStage::rcpt, StageEvent::timeout)});
    EXPECT_EQ(slow.cls, VerdictClass::tempfail);
    EXPECT_EQ(slow.reason, "timeout while waiting for RCPT reply");
}

// --- Vendor signatures: verbatim replies from public references --------------------------------

struct VendorCase {
    const char* vendor;
    const char* wire;
    VerdictClass expected;
    const char* rule;  // the rule the reason must name
};

// Each row is a reply as the vendor documents or is documented to send it at RCPT time.
std::vector<VendorCase> vendor_cases() {
    using V = VerdictClass;
    return {
        // Microsoft 365 / Exchange Online:
        // https://learn.microsoft.com/en-us/exchange/troubleshoot/email-delivery/ndr/non-delivery-reports-in-exchange-online
        {"m365",
         "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
         V::invalid, "vendor:m365-recipient-not-found"},
        {"exchange", "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found", V::invalid,
         "vendor:m365-recipient-not-found"},
        {"exchange", "550 5.1.1 RESOLVER.ADR.ExRecipNotFound; not found", V::invalid,
         "vendor:m365-recipient-not-found"},
        {"m365 restricted group", "550 5.7.1 RESOLVER.RST.AuthRequired; authentication required",
         V::policy_blocked, "vendor:m365-restricted-recipient"},
        {"m365 DBEB", "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)",
         V::policy_blocked, "recipient-access-denied"},
        // Outlook.com:
        // https://www.spamresource.com/2023/09/microsoft-multiple-types-of-invalid.html
        {"outlook.com",
         "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302). "
         "[HE1EUR01FT020.eop-EUR01.prod.protection.outlook.com 2023-09-19T15:05:34.324Z "
         "08DBB71928CA8F8E]",
         V::invalid, "vendor:outlook-mailbox-unavailable"},
        // Google Workspace / Gmail: https://support.google.com/a/answer/3726730
        {"google",
         "550 5.1.1 The email account that you tried to reach does not exist. Please try "
         "double-checking the recipient's email address for typos or unnecessary spaces. For "
         "more information, go to Send Gmail messages to the right people.",
         V::invalid, "vendor:google-no-such-user"},
        {"google", "550 5.2.1 The email account that you tried to reach is disabled.",
         V::policy_blocked, "vendor:google-account-disabled"},
        {"google", "550 5.7.1 [192.0.2.7] IP not in whitelist for RCPT domain - gsmtp",
         V::policy_blocked, "policy"},
        // Yahoo / AOL: https://help.yahoo.com/kb/mail-for-desktop/SLN3444.html
        {"yahoo",
         "554 delivery error: dd This user doesn't have a yahoo.com account (bob@yahoo.com) "
         "[0] - mta1234.mail.gq1.yahoo.com",
         V::invalid, "vendor:yahoo-no-such-account"},
        {"yahoo",
         "554 delivery error: dd Sorry your message to bob@yahoo.com cannot be delivered. This "
         "mailbox is disabled (554.30). - mta1234.mail.gq1.yahoo.com",
         V::policy_blocked, "vendor:yahoo-mailbox-disabled"},
        {"yahoo", "451 VS1-IP Excessive unknown recipients - possible Open Relay (#4.1.8)",
         V::tempfail, "deferred"},
        // Yandex: https://yandex.com/support/mail/bounces/yandex.html
        {"yandex", "550 5.7.1 No such user!", V::invalid, "vendor:yandex-no-such-user"},
        {"yandex", "550 5.7.1 Policy rejection on the target address", V::policy_blocked,
         "vendor:yandex-account-blocked"},
        // Mail.ru: https://smtp.codes/550 (Mail.ru)
        {"mail.ru",
         "550 Message was not accepted -- invalid mailbox.  Local mailbox bob@mail.ru is "
         "unavailable: user not found",
         V::invalid, "vendor:mailru-user-not-found"},
        {"mail.ru",
         "550 Message was not accepted -- invalid mailbox.  Local mailbox bob@mail.ru is "
         "unavailable: account is disabled",
         V::policy_blocked, "vendor:mailru-account-disabled"},
        // Zoho: https://smtp.codes/zoho
        {"zoho", "550 5.1.1 <bob@zoho.com> User unknown", V::invalid, "user-unknown"},
        {"zoho", "552 5.1.1 <bob@zoho.com> Mailbox delivery failure policy error",
         V::policy_blocked, "vendor:zoho-delivery-policy"},
        {"zoho", "541 5.4.1 Mail rejected by destination domain", V::policy_blocked,
         "inconclusive"},
        // Proofpoint Essentials: https://www.spambrella.com/faq/email-delivery-error-codes/
        {"proofpoint",
         "550 5.7.1 <bob@example.org>: Recipient address rejected: User email address is marked "
         "as invalid",
         V::invalid, "vendor:proofpoint-invalid-user"},
        {"proofpoint", "550 5.7.1 Relay Access denied", V::policy_blocked, "policy"},
        // Mimecast: https://community.mimecast.com/s/article/Mimecast-SMTP-Error-Codes-842605754
        {"mimecast", "550 Invalid Recipient - https://community.mimecast.com/docs/DOC-1369#550",
         V::invalid, "user-unknown"},
        {"mimecast",
         "550 Administrative prohibition - envelope blocked - "
         "https://community.mimecast.com/docs/DOC-1369#550",
         V::policy_blocked, "unverifiable"},
        // Barracuda: https://smtp.codes/550 (Barracuda)
        {"barracuda",
         "550 cuda_nsu 5.1.1 <bob@example.org> Recipient address rejected: User unknown",
         V::invalid, "vendor:barracuda-no-such-user"},
        {"barracuda", "550 No such user (bob@example.org)", V::invalid, "user-unknown"},
        {"barracuda", "550 Blocked", V::policy_blocked, "unverifiable"},
        // Cisco Secure Email (IronPort) LDAP accept:
        // https://www.cisco.com/c/en/us/support/docs/security/email-security-appliance/118580-qa-esa-00.html
        {"cisco", "550 #5.1.0 Address rejected.", V::invalid, "user-unknown 550 5.1.0"},
        // AT&T: https://smtp.codes/550 (AT&T): an unknown user under a 5.2.1 code.
        {"att", "550 5.2.1 <bob@prodigy.net>... Addressee unknown, relay=[192.0.2.7]", V::invalid,
         "user-unknown-wording"},
    };
}

TEST(Classifier, VendorSignatures) {
    auto table = vendor_cases();
    ASSERT_GE(table.size(), 25u);
    for (const auto& c : table) {
        Verdict v = classify_attempt(at_rcpt(R(c.wire)));
        EXPECT_EQ(to_string(v.cls), to_string(c.expected))
            << c.vendor << ": " << c.wire << " → " << v.reason;
        EXPECT_TRUE(v.reason.starts_with(c.rule) || v.reason.find(c.rule) != std::string::npos)
            << c.vendor << ": reason '" << v.reason << "' does not name " << c.rule;
        EXPECT_EQ(v.scope, EvidenceScope::address) << c.vendor << ": one mailbox's reply";
    }
}

// Wording outranks a wrong enhanced code in both directions; when in doubt, not invalid.
TEST(Classifier, PhraseEvidenceOverridesTheEnhancedCode) {
    struct {
        const char* wire;
        VerdictClass expected;
        const char* rule;
    } cases[] = {
        // "No such user" wording under a policy, protocol or mailbox-status code: invalid.
        {"550 5.7.1 <bob@example.org>: Recipient address rejected: User unknown",
         VerdictClass::invalid, "user-unknown-wording"},
        {"550 5.7.0 No such user here", VerdictClass::invalid, "user-unknown-wording"},
        {"554 5.0.0 Mailbox does not exist", VerdictClass::invalid, "user-unknown-wording"},
        {"550 5.5.1 Recipient not found", VerdictClass::invalid, "user-unknown-wording"},
        // ... but not when it is about us, our sender or a disabled account.
        {"550 5.7.1 Recipient verification failed: no such user", VerdictClass::policy_blocked,
         "unverifiable"},
        {"550 5.7.1 Sender domain does not exist", VerdictClass::null_sender_rejected,
         "null-sender-rejected"},
        {"550 5.7.1 User unknown or account disabled", VerdictClass::policy_blocked,
         "mailbox-disabled"},
        // Policy wording under a 5.1.x code: not invalid.
        {"550 5.1.1 Relaying denied", VerdictClass::policy_blocked, "policy-wording"},
        {"550 5.1.1 <bob@example.org>: Recipient address rejected: Access denied",
         VerdictClass::policy_blocked, "policy-wording"},
        {"550 5.1.0 Address rejected: too many recipients from your host",
         VerdictClass::policy_blocked, "policy-wording"},
        // A genuine 5.1.1 stays invalid even when "relay" appears (Postfix relay table).
        {"550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown in relay "
         "recipient table",
         VerdictClass::invalid, "user-unknown 550 5.1.1"},
    };
    for (const auto& c : cases) {
        Verdict v = classify_attempt(at_rcpt(R(c.wire)));
        EXPECT_EQ(to_string(v.cls), to_string(c.expected)) << c.wire << " → " << v.reason;
        EXPECT_TRUE(v.reason.starts_with(c.rule)) << c.wire << " → " << v.reason;
    }
}

// --- Evidence scopes ---------------------------------------------------------------------------

TEST(Classifier, OneMailboxRefusalIsAnAddressVerdict) {
    const char* refusals[] = {
        "550 5.7.1 RESOLVER.RST.AuthRequired; authentication required",
        "550 5.2.1 The email account that you tried to reach is disabled.",
        "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)",
        "550 5.7.1 Delivery not authorized, message refused",
        "554 Transaction failed",
        "550 4.1.1 inconsistent",
        "550 5.1.4 Ambiguous destination address",
    };
    for (const char* wire : refusals) {
        Verdict v = classify_attempt(at_rcpt(R(wire)));  // the random local part: 5.1.1
        EXPECT_EQ(v.cls, VerdictClass::policy_blocked) << wire << " → " << v.reason;
        EXPECT_EQ(v.scope, EvidenceScope::address) << wire << " → " << v.reason;
    }
}

TEST(Classifier, SameRefusalForTheRandomLocalPartIsADomainFact) {
    HostAttempt a = at_rcpt(R("550 5.7.1 Client host rejected: Access denied"));
    a.random_rcpt = R("550 5.7.1 Client host rejected: Access denied");
    Verdict v = classify_attempt(a);
    EXPECT_EQ(v.cls, VerdictClass::policy_blocked) << v.reason;
    EXPECT_EQ(v.scope, EvidenceScope::domain) << v.reason;
    EXPECT_TRUE(v.reason.starts_with("probes-refused: ")) << v.reason;

    // A different kind of refusal for the random local part does not widen the scope.
    HostAttempt b = at_rcpt(R("550 5.7.1 RESOLVER.RST.AuthRequired; authentication required"));
    b.random_rcpt = R("550 5.4.1 Recipient address rejected: Access denied. AS(201806281)");
    EXPECT_EQ(classify_attempt(b).scope, EvidenceScope::address);

    // <> refused for both (a delayed MAIL FROM restriction) is a domain fact too.
    HostAttempt c = at_rcpt(R("553 5.1.8 <>: Sender address rejected: Domain not found"));
    c.random_rcpt = R("553 5.1.8 <>: Sender address rejected: Domain not found");
    Verdict cv = classify_attempt(c);
    EXPECT_EQ(cv.cls, VerdictClass::null_sender_rejected);
    EXPECT_EQ(cv.scope, EvidenceScope::domain);
}

TEST(Classifier, ScopeOfEachKindOfEvidence) {
    using S = SmtpStage;
    struct {
        const char* name;
        HostAttempt attempt;
        EvidenceScope scope;
    } cases[] = {
        {"user unknown", at_rcpt(R("550 5.1.1 User unknown")), EvidenceScope::address},
        {"mailbox full", at_rcpt(R("452 4.2.2 Mailbox full, quota limit exceeded")),
         EvidenceScope::address},
        {"421 at RCPT", at_rcpt(R("421 4.7.0 Try again later, closing connection")),
         EvidenceScope::mx_host},
        {"random accepted", ended_at(S::random_rcpt, R("250 2.1.5 Ok")), EvidenceScope::domain},
        {"<> refused", ended_at(S::mail_from, R("550 5.7.1 Null sender not accepted")),
         EvidenceScope::domain},
        {"DNSBL at MAIL FROM",
         ended_at(S::mail_from, R("554 5.7.1 blocked using zen.spamhaus.org")),
         EvidenceScope::domain},
        {"banner reject", ended_at(S::banner, R("554 5.7.1 Go away")), EvidenceScope::mx_host},
        {"too many connections at EHLO",
         ended_at(S::ehlo, R("450 4.7.1 Too many connections from your IP")),
         EvidenceScope::mx_host},
        {"rate limited at MAIL FROM",
         ended_at(S::mail_from, R("451 4.7.1 Connection rate limit exceeded")),
         EvidenceScope::mx_host},
        {"bad HELO", ended_at(S::ehlo, R("550 Bad HELO - Host impersonating example.org")),
         EvidenceScope::domain},
    };
    for (const auto& c : cases) {
        Verdict v = classify_attempt(c.attempt);
        EXPECT_EQ(to_string(v.scope), to_string(c.scope)) << c.name << " → " << v.reason;
        EXPECT_EQ(pushes_back(c.attempt), c.scope == EvidenceScope::mx_host) << c.name;
    }
}

// Only connection-level push-back backs off an MX host; mailbox-level wording never does.
TEST(Classifier, PushBackIsConnectionLevelOnly) {
    using S = SmtpStage;
    struct {
        SmtpStage stage;
        const char* wire;
        bool pushes;
    } cases[] = {
        {S::banner, "421 4.3.2 Service not available", true},
        {S::banner, "554 5.7.1 Your IP is on our block list", true},
        {S::ehlo, "421 4.7.0 Too many concurrent SMTP connections", true},
        {S::mail_from, "450 4.7.0 Too many connections, slow down", true},
        {S::mail_from, "451 4.7.1 You are being throttled", true},
        {S::rcpt, "421 4.7.0 Closing connection", true},
        {S::random_rcpt, "421 4.7.0 Closing connection", true},
        // Mailbox-level wording at RCPT: never.
        {S::rcpt, "452 4.2.2 <bob@example.org>: mailbox full, quota limit exceeded", false},
        {S::rcpt,
         "450 4.2.1 The user you are trying to contact is receiving mail at a rate that "
         "prevents additional messages from being delivered",
         false},
        {S::rcpt, "550 5.7.1 Message blocked: over limit for this user", false},
        {S::rcpt, "450 4.7.1 Too many connections", false},
        // Blocks of us that are not about connections: a policy fact, not a back-off.
        {S::mail_from, "554 5.7.1 Client host rejected: blocked using zen.spamhaus.org", false},
        {S::mail_from, "550 5.7.1 Sender limit exceeded", false},
    };
    for (const auto& c : cases) {
        HostAttempt a = c.stage == S::rcpt ? at_rcpt(R(c.wire)) : ended_at(c.stage, R(c.wire));
        EXPECT_EQ(pushes_back(a), c.pushes) << stage_name(c.stage) << ": " << c.wire;
    }
}

// --- Accept-all detection that greylisting cannot fool -----------------------------------------

TEST(Classifier, RealAcceptedCountsOnlyAfterTheRandomLocalPartWasRefusedAsUnknown) {
    const SmtpReply ok = R("250 2.1.5 Ok");
    HostAttempt greylisted = at_rcpt(ok);
    greylisted.random_rcpt = R("450 4.2.0 <x>: Recipient address rejected: Greylisted");
    Verdict v = classify_attempt(greylisted);
    EXPECT_EQ(v.cls, VerdictClass::tempfail) << v.reason;
    EXPECT_TRUE(v.reason.starts_with("accept-all-unknown: ")) << v.reason;
    EXPECT_EQ(v.scope, EvidenceScope::address);

    // A cached "not accept-all" fact from an earlier refusal makes it definitive.
    ClassifyContext known;
    known.domain_not_accept_all = true;
    Verdict k = classify_attempt(greylisted, known);
    EXPECT_EQ(k.cls, VerdictClass::valid) << k.reason;
    EXPECT_NE(k.reason.find("domain known not accept-all"), std::string::npos) << k.reason;

    // A policy refusal of the random local part proves nothing about accept-all.
    HostAttempt policy = at_rcpt(ok);
    policy.random_rcpt = R("550 5.7.1 Access denied");
    EXPECT_EQ(classify_attempt(policy).cls, VerdictClass::tempfail);
    // A full catch-all mailbox neither.
    HostAttempt full = at_rcpt(R("552 5.2.2 Mailbox full"));
    full.random_rcpt = R("552 5.2.2 Mailbox full");
    EXPECT_EQ(classify_attempt(full).cls, VerdictClass::tempfail);
    // Exchange Online's directory block of the made-up address is a refusal as unknown.
    HostAttempt dbeb = at_rcpt(ok);
    dbeb.random_rcpt = R("550 5.4.1 Recipient address rejected: Access denied. AS(201806281)");
    EXPECT_EQ(classify_attempt(dbeb).cls, VerdictClass::valid);
    // So is Yandex's "No such user!" under 5.7.1.
    HostAttempt yandex = at_rcpt(ok);
    yandex.random_rcpt = R("550 5.7.1 No such user!");
    EXPECT_EQ(classify_attempt(yandex).cls, VerdictClass::valid);
    // The check switched off (callout.random_check = false): the operator trusts a 2xx.
    Verdict off = classify_attempt(without_random(at_rcpt(ok)));
    EXPECT_EQ(off.cls, VerdictClass::valid);
    EXPECT_NE(off.reason.find("accept-all check off"), std::string::npos) << off.reason;
}

TEST(Classifier, RandomLocalPartEvidence) {
    // Refused as unknown: the domain is not accept-all.
    auto unknown = random_local_part_evidence({at_rcpt(R("250 2.1.5 Ok"))});
    EXPECT_TRUE(unknown.refused_as_unknown);
    EXPECT_FALSE(unknown.deferred);

    // Greylisted: a tempfail domain fact, whatever the real address got.
    HostAttempt grey = at_rcpt(R("550 5.1.1 User unknown"));
    grey.random_rcpt = R("451 4.7.1 Greylisting in action, please come back later");
    auto deferred = random_local_part_evidence({grey});
    EXPECT_FALSE(deferred.refused_as_unknown);
    ASSERT_TRUE(deferred.deferred);
    EXPECT_EQ(deferred.deferred->cls, VerdictClass::tempfail);
    EXPECT_EQ(deferred.deferred->scope, EvidenceScope::domain);
    EXPECT_TRUE(deferred.deferred->reason.starts_with("random-local-part-greylisted 451 4.7.1"))
        << deferred.deferred->reason;
    // The real address's own answer still stands.
    EXPECT_EQ(classify({grey}).cls, VerdictClass::invalid);

    // A 421 is push-back, not greylisting; no check made, nothing learnt.
    auto closing =
        random_local_part_evidence({ended_at(SmtpStage::random_rcpt, R("421 4.7.0 Bye"))});
    EXPECT_FALSE(closing.deferred);
    EXPECT_FALSE(random_local_part_evidence({without_random(at_rcpt(R("250 ok")))}).deferred);
    EXPECT_FALSE(random_local_part_evidence({}).refused_as_unknown);
}

// STARTTLS and SMTPUTF8: what each way a probe can end around them is evidence of.
TEST(Classifier, TlsAndSmtputf8Outcomes) {
    // A UTF-8 address the server cannot take: not asked, so no claim either way.
    HostAttempt no_utf8 = failed_at(SmtpStage::ehlo, StageEvent::smtputf8_unsupported);
    Verdict skipped = classify({no_utf8});
    EXPECT_EQ(skipped.cls, VerdictClass::skipped);
    EXPECT_TRUE(skipped.reason.starts_with("smtputf8-unsupported")) << skipped.reason;
    EXPECT_EQ(skipped.scope, EvidenceScope::address);

    // callout.tls = encrypt and no STARTTLS: tempfail; a domain fact when every host said so.
    HostAttempt no_tls = failed_at(SmtpStage::ehlo, StageEvent::tls_unavailable);
    Verdict one = classify({no_tls});
    EXPECT_EQ(one.cls, VerdictClass::tempfail);
    EXPECT_TRUE(one.reason.starts_with("tls-unavailable: STARTTLS not offered")) << one.reason;
    EXPECT_EQ(one.scope, EvidenceScope::domain);
    EXPECT_EQ(classify({no_tls, no_tls}).scope, EvidenceScope::domain);
    // ... but a host that could not be asked might offer it: the address only.
    HostAttempt refused = failed_at(SmtpStage::connect, StageEvent::connect_failed);
    HostAttempt slow = failed_at(SmtpStage::banner, StageEvent::timeout);
    EXPECT_EQ(classify({refused, no_tls}).scope, EvidenceScope::address);
    EXPECT_EQ(classify({slow, no_tls}).scope, EvidenceScope::address);
    EXPECT_EQ(classify({slow, no_tls}).cls, VerdictClass::tempfail);
    EXPECT_FALSE(pushes_back(no_tls)) << "a host without TLS did not push back";

    // A handshake that failed (encrypt, or the deadline took the plaintext retry away).
    HostAttempt broken = failed_at(SmtpStage::tls_handshake, StageEvent::protocol_error);
    broken.detail = "wrong version number";
    Verdict failed = classify({broken});
    EXPECT_EQ(failed.cls, VerdictClass::tempfail);
    EXPECT_EQ(failed.reason, "tls-failed: handshake wrong version number");
    HostAttempt hung = failed_at(SmtpStage::tls_handshake, StageEvent::timeout);
    EXPECT_EQ(classify({hung}).reason, "tls-failed: handshake timeout");
    HostAttempt late = failed_at(SmtpStage::tls_handshake, StageEvent::deadline);
    EXPECT_EQ(classify({late}).reason, "probe deadline reached while doing the TLS handshake");
    // The plaintext retry after it decides.
    HostAttempt retry = at_rcpt(R("550 5.1.1 <bob@example.org>: User unknown"));
    retry.plaintext_retry = true;
    EXPECT_EQ(classify({broken, retry}).cls, VerdictClass::invalid);

    // STARTTLS refused at encrypt: tempfail whatever the wording; 421 is still push-back.
    Verdict rejected = classify({ended_at(SmtpStage::starttls, R("454 4.7.0 TLS not available"))});
    EXPECT_EQ(rejected.cls, VerdictClass::tempfail);
    EXPECT_TRUE(rejected.reason.starts_with("starttls-rejected 454 4.7.0 at STARTTLS"))
        << rejected.reason;
    EXPECT_EQ(classify({ended_at(SmtpStage::starttls, R("554 5.7.0 no"))}).cls,
              VerdictClass::tempfail);
    HostAttempt busy = ended_at(SmtpStage::starttls, R("421 4.3.2 Shutting down"));
    EXPECT_TRUE(pushes_back(busy));
    EXPECT_TRUE(classify({busy}).reason.starts_with("service-unavailable"))
        << classify({busy}).reason;

    // "Must issue a STARTTLS command first" stays tempfail, and says what TLS did here.
    const SmtpReply must = R("530 5.7.0 Must issue a STARTTLS command first");
    HostAttempt none_offered = ended_at(SmtpStage::mail_from, must);
    Verdict v = classify({none_offered});
    EXPECT_EQ(v.cls, VerdictClass::tempfail);
    EXPECT_EQ(v.reason, "starttls-required 530 5.7.0 at MAIL FROM; STARTTLS not offered");
    HostAttempt not_used = none_offered;
    not_used.starttls_offered = true;  // callout.tls = none
    EXPECT_EQ(classify({not_used}).reason,
              "starttls-required 530 5.7.0 at MAIL FROM; STARTTLS offered, not used");
    HostAttempt after_retry = not_used;
    after_retry.plaintext_retry = true;
    EXPECT_EQ(classify({broken, after_retry}).reason,
              "starttls-required 530 5.7.0 at MAIL FROM; plaintext retry after a failed TLS "
              "handshake");
    // Inside TLS, the same RCPT evidence as ever.
    HostAttempt inside = at_rcpt(R("250 2.1.5 Ok"));
    inside.tls = TlsSessionInfo{"TLSv1.3", "TLS_AES_256_GCM_SHA384", "CN=mx", "CN=mx"};
    EXPECT_EQ(classify({inside}).cls, VerdictClass::valid);
}

// One wording table: an attempt that ended without a reply reads the same in the transcript's
// last line (describe) and in the verdict's reason, which leaves out only the OS detail.
TEST(Classifier, TranscriptAndReasonUseTheSameWords) {
    for (int st = 0; st <= static_cast<int>(SmtpStage::quit); ++st) {
        const auto stage = static_cast<SmtpStage>(st);
        for (auto event :
             {StageEvent::timeout, StageEvent::deadline, StageEvent::closed, StageEvent::io_error,
              StageEvent::protocol_error, StageEvent::connect_failed}) {
            if (stage == SmtpStage::tls_handshake && event != StageEvent::deadline) continue;
            HostAttempt a = failed_at(stage, event);
            a.detail = "read: connection reset by peer";
            const Verdict v = classify_attempt(a, {});
            EXPECT_EQ(v.cls, VerdictClass::tempfail);
            EXPECT_TRUE(describe(a).starts_with(v.reason))
                << "describe: " << describe(a) << "\nreason: " << v.reason;
            EXPECT_NE(v.reason.find(event_phrase(event)), std::string::npos) << v.reason;
        }
    }
}

}  // namespace
}  // namespace calloutd
