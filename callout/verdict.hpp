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

// A class plus the short machine-readable reason that produced it ("user-unknown",
// "timeout while waiting for RCPT reply", "no-engine" ...).
struct Verdict {
    VerdictClass cls = VerdictClass::skipped;
    std::string reason;
};

}  // namespace calloutd
