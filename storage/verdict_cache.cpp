// Cache rules shared by every backend: what is a domain fact, TTLs, replacement, precedence.
#include "storage/verdict_cache.hpp"

namespace calloutd {

bool is_domain_fact(const CachedVerdict& v) {
    // Includes `skipped` skip-mx (an MX host on policy.skip_mx_hosts: a fact about the domain's
    // MX hosts); skip rules answer without storing.
    return v.scope == EvidenceScope::domain;
}

std::chrono::milliseconds ttl_for(VerdictClass c, const CacheTtls& ttls) {
    switch (c) {
        case VerdictClass::valid:
            return ttls.positive;
        case VerdictClass::invalid:
            return ttls.negative;
        case VerdictClass::tempfail:
        // A skip rule's answer is never stored. A probe that did not ask (a UTF-8 address at a
        // server without SMTPUTF8) is kept as long as a tempfail, so the next request does not
        // connect again at once and an upgrade is noticed; skip-mx, the domain-scoped kind, is
        // kept like every domain fact (see the CachedVerdict overload).
        case VerdictClass::skipped:
            return ttls.tempfail;
        case VerdictClass::accept_all:
        case VerdictClass::null_sender_rejected:
        case VerdictClass::policy_blocked:
        case VerdictClass::no_mail_domain:
            return ttls.domain;
        // Not results of a probe: nothing to remember.
        case VerdictClass::in_progress:
        case VerdictClass::rate_limited:
            return std::chrono::milliseconds(0);
    }
    return std::chrono::milliseconds(0);
}

std::chrono::milliseconds ttl_for(const CachedVerdict& v, const CacheTtls& ttls) {
    if (v.backoff) return ttls.backoff;
    // skip-mx: an MX host on policy.skip_mx_hosts is a fact about the domain's MX hosts.
    if (v.cls == VerdictClass::skipped && v.scope == EvidenceScope::domain) return ttls.domain;
    return ttl_for(v.cls, ttls);
}

bool may_replace(const CachedVerdict& current, const CachedVerdict& incoming) {
    if (current.cls != VerdictClass::valid) return true;
    return incoming.cls == VerdictClass::valid || incoming.cls == VerdictClass::invalid;
}

// A domain fact is kept under the domain, not instead of the valid verdict, but it is still an
// answer: the refresh did not fail.
bool replaces_valid(const CachedVerdict& incoming) {
    return incoming.cls == VerdictClass::valid || incoming.cls == VerdictClass::invalid ||
           is_domain_fact(incoming);
}

CacheAnswer which_answers(const CachedVerdict* domain_fact, const CachedVerdict* address) {
    if (domain_fact != nullptr && domain_fact->cls == VerdictClass::no_mail_domain)
        return CacheAnswer::domain_fact;
    if (address != nullptr) return CacheAnswer::address;
    if (domain_fact != nullptr) return CacheAnswer::domain_fact;
    return CacheAnswer::none;
}

bool refresh_due(const CachedVerdict& v, WallClock::time_point now, const CacheTtls& ttls) {
    return v.cls == VerdictClass::valid && now - v.probed_at >= ttls.positive_refresh &&
           now - v.refresh_failed_at >= ttls.tempfail;
}

}  // namespace calloutd
