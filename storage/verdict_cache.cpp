// Cache rules shared by every backend: which classes are domain facts, TTLs, replacement.
#include "storage/verdict_cache.hpp"

namespace calloutd {

bool is_domain_fact(VerdictClass c) {
    // `skipped` is only ever stored by a callout that found an MX host on policy.skip_mx_hosts
    // (skip-mx): a fact about the domain's MX hosts. Skip rules answer without storing.
    return c == VerdictClass::accept_all || c == VerdictClass::null_sender_rejected ||
           c == VerdictClass::policy_blocked || c == VerdictClass::no_mail_domain ||
           c == VerdictClass::skipped;
}

std::chrono::milliseconds ttl_for(VerdictClass c, const CacheTtls& ttls) {
    switch (c) {
        case VerdictClass::valid:
            return ttls.positive;
        case VerdictClass::invalid:
            return ttls.negative;
        case VerdictClass::tempfail:
            return ttls.tempfail;
        case VerdictClass::accept_all:
        case VerdictClass::null_sender_rejected:
        case VerdictClass::policy_blocked:
        case VerdictClass::no_mail_domain:
        case VerdictClass::skipped:  // skip-mx, see is_domain_fact()
            return ttls.domain;
        // Not results of a probe: nothing to remember.
        case VerdictClass::in_progress:
        case VerdictClass::rate_limited:
            return std::chrono::milliseconds(0);
    }
    return std::chrono::milliseconds(0);
}

std::chrono::milliseconds ttl_for(const CachedVerdict& v, const CacheTtls& ttls) {
    if (v.backoff && is_domain_fact(v.cls)) return ttls.backoff;
    return ttl_for(v.cls, ttls);
}

bool may_replace(const CachedVerdict& current, const CachedVerdict& incoming) {
    if (current.cls != VerdictClass::valid) return true;
    return replaces_valid(incoming);
}

bool replaces_valid(const CachedVerdict& incoming) {
    return incoming.cls == VerdictClass::valid || incoming.cls == VerdictClass::invalid ||
           is_domain_fact(incoming.cls);
}

bool refresh_due(const CachedVerdict& v, WallClock::time_point now, const CacheTtls& ttls) {
    return v.cls == VerdictClass::valid && now - v.probed_at >= ttls.positive_refresh &&
           now - v.refresh_failed_at >= ttls.tempfail;
}

}  // namespace calloutd
