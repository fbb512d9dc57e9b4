// Verdict classes: the one vocabulary used by logs, metrics, cache, config and the classifier.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace calloutd {

enum class VerdictClass {
    valid,
    invalid,
    no_mail_domain,
    accept_all,
    null_sender_rejected,
    policy_blocked,
    tempfail,
    in_progress,
    rate_limited,
    skipped,
};

inline constexpr std::array<VerdictClass, 10> kAllVerdictClasses = {
    VerdictClass::valid,
    VerdictClass::invalid,
    VerdictClass::no_mail_domain,
    VerdictClass::accept_all,
    VerdictClass::null_sender_rejected,
    VerdictClass::policy_blocked,
    VerdictClass::tempfail,
    VerdictClass::in_progress,
    VerdictClass::rate_limited,
    VerdictClass::skipped,
};

std::string_view to_string(VerdictClass c);
std::optional<VerdictClass> verdict_class_from_string(std::string_view name);

// What a piece of evidence speaks for (DESIGN.md "Evidence has a scope"). Only domain-scoped
// evidence may become a domain fact; only MX-scoped evidence backs off an MX host.
enum class EvidenceScope {
    address,  // this mailbox only (any RCPT reply about the real address): kept per address
    domain,   // every address of the domain (DNS facts, MAIL FROM:<> refused, accept-all, the
              // same refusal for the random local part and the real one): a domain fact
    mx_host,  // how one MX host treats our connections (421, "too many connections", banner
              // rejects): backs off that host; the verdict itself is kept per address
};

std::string_view to_string(EvidenceScope s);

// A class plus the short machine-readable reason that produced it, which starts with the name
// of the rule that decided ("user-unknown 550 5.1.1 at RCPT", "timeout while waiting for RCPT
// reply", "dns-unhealthy: ..."), and the scope of the evidence.
struct Verdict {
    VerdictClass cls = VerdictClass::skipped;
    std::string reason;
    EvidenceScope scope = EvidenceScope::address;
};

}  // namespace calloutd
