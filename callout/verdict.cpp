// Names of the verdict classes, exactly as DESIGN.md spells them.
#include "callout/verdict.hpp"

namespace calloutd {

std::string_view to_string(VerdictClass c) {
    switch (c) {
        case VerdictClass::valid:
            return "valid";
        case VerdictClass::invalid:
            return "invalid";
        case VerdictClass::no_mail_domain:
            return "no_mail_domain";
        case VerdictClass::accept_all:
            return "accept_all";
        case VerdictClass::null_sender_rejected:
            return "null_sender_rejected";
        case VerdictClass::policy_blocked:
            return "policy_blocked";
        case VerdictClass::tempfail:
            return "tempfail";
        case VerdictClass::in_progress:
            return "in_progress";
        case VerdictClass::rate_limited:
            return "rate_limited";
        case VerdictClass::skipped:
            return "skipped";
    }
    return "skipped";
}

std::string_view to_string(EvidenceScope s) {
    switch (s) {
        case EvidenceScope::address:
            return "address";
        case EvidenceScope::domain:
            return "domain";
        case EvidenceScope::mx_host:
            return "mx-host";
    }
    return "address";
}

std::optional<VerdictClass> verdict_class_from_string(std::string_view name) {
    for (VerdictClass c : kAllVerdictClasses) {
        if (to_string(c) == name) return c;
    }
    return std::nullopt;
}

}  // namespace calloutd
