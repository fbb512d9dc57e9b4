// Classifier: turns what a probe saw (HostAttempt records) into a verdict class and reason.
#pragma once

#include <vector>

#include "callout/transcript.hpp"
#include "callout/verdict.hpp"

namespace calloutd {

// Judges one MX host conversation. Pure; never throws. Only a "no such mailbox" answer to the
// real RCPT (5.1.x without verification/blocking wording, or a plain 550/551/553 without policy
// wording, or a plain 5xx that says the user does not exist) yields `invalid`.
Verdict classify_attempt(const HostAttempt& attempt);

// Judges a whole probe. The probe moves on to the next MX host after connect failures, bad
// banners, 421 and pre-RCPT timeouts, so the last attempt that reached a server decides; no
// attempts → tempfail "no-attempt"; only connect failures → tempfail naming that. If MX hosts
// disagree (one accepted the address, another says it does not exist) the result is never
// `invalid`.
Verdict classify(const std::vector<HostAttempt>& attempts);

// True when the server told us to go away: a 421, or a 4xx/5xx that says we connect too often,
// are rate limited, or are blocked. The prober then backs off from that IP and domain instead
// of knocking again.
bool pushes_back(const HostAttempt& attempt);

}  // namespace calloutd
