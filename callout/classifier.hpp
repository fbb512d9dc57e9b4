// Classifier: turns what a probe saw (HostAttempt records) into a verdict class, reason and scope.
#pragma once

#include <optional>
#include <vector>

#include "callout/transcript.hpp"
#include "callout/verdict.hpp"

namespace calloutd {

// What the caller knows beyond the conversation itself.
struct ClassifyContext {
    // A recent probe saw this domain refuse its random local part as unknown (a cached domain
    // fact): a 2xx for the real address may count as `valid` although this probe could not
    // repeat the check (the random local part was greylisted, timed out ...).
    bool domain_not_accept_all = false;
};

// Judges one MX host conversation. Pure; never throws. Only a "no such mailbox" answer to the
// real RCPT (5.1.x without policy or verification wording, a plain 550/553 without policy
// wording, explicit "no such user" wording whatever the code, or a vendor signature) yields
// `invalid`. A 2xx to the real RCPT yields `valid` only when the random local part was refused
// as unknown in the same conversation (or `ctx` says the domain is known not to accept all);
// otherwise it is `tempfail` "accept-all-unknown". A UTF-8 address the server could not be
// asked about (no SMTPUTF8) is `skipped` "smtputf8-unsupported"; at callout.tls = encrypt, no
// STARTTLS, a refused one or a failed handshake is `tempfail` ("tls-unavailable",
// "starttls-rejected", "tls-failed"). Every verdict carries its evidence scope.
Verdict classify_attempt(const HostAttempt& attempt, const ClassifyContext& ctx = {});

// Judges a whole probe. The probe moves on to the next MX host after connect failures, bad
// banners and pre-RCPT timeouts, so the last attempt that reached a server decides; no
// attempts → tempfail "no-attempt"; only connect failures → tempfail naming that. If MX hosts
// disagree (one accepted the address, another says it does not exist) the result is never
// `invalid`. "tls-unavailable" is domain-scoped when every host tried said it.
Verdict classify(const std::vector<HostAttempt>& attempts, const ClassifyContext& ctx = {});

// What the random local part of the deciding conversation said about the domain, besides the
// verdict; the caller stores it as domain facts.
struct RandomLocalPartEvidence {
    // Refused as unknown: the domain is not accept-all (kept for cache.domain_ttl).
    bool refused_as_unknown = false;
    // Deferred (4xx, typically greylisting): a tempfail domain fact for cache.tempfail_ttl, so
    // the domain's other senders wait for the greylist delay instead of each costing a probe.
    std::optional<Verdict> deferred;
};
RandomLocalPartEvidence random_local_part_evidence(const std::vector<HostAttempt>& attempts);

// True when the server pushed back at the connection level: a 421 at any stage, a banner that
// refuses us, or "too many connections"/rate wording at banner, EHLO/HELO or MAIL FROM. That is
// MX-host-scoped evidence: the prober backs off that IP (and, when it decided the probe, the
// domain) instead of knocking again. Mailbox-level replies (quota, one user's rate) never are.
bool pushes_back(const HostAttempt& attempt);

}  // namespace calloutd
