// Cache rules shared by every backend: what is a domain fact, TTLs, replacement, precedence.
#include "storage/verdict_cache.hpp"

namespace calloutd {

bool is_domain_fact(const CachedVerdict& v) {
    return v.scope == EvidenceScope::domain;
}

std::chrono::milliseconds ttl_for(VerdictClass c, const CacheTtls& ttls) {
    switch (c) {
        case VerdictClass::valid:
            return ttls.positive;
        case VerdictClass::invalid:
            return ttls.negative;
        case VerdictClass::tempfail:
        // A skip rule's answer is never stored; the only stored `skipped` is a probe that did not
        // ask (a UTF-8 address at a server without SMTPUTF8), kept as long as a tempfail so the
        // next request does not connect again at once, and so that an upgrade is noticed.
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
    return ttl_for(v.cls, ttls);
}

bool may_replace(const CachedVerdict& current, const CachedVerdict& incoming) {
    if (current.cls != VerdictClass::valid) return true;
    return incoming.cls == VerdictClass::valid || incoming.cls == VerdictClass::invalid;
}

CacheAnswer which_answers(const CachedVerdict* domain_fact, const CachedVerdict* address) {
    if (domain_fact != nullptr && domain_fact->cls == VerdictClass::no_mail_domain)
        return CacheAnswer::domain_fact;
    if (address != nullptr) return CacheAnswer::address;
    if (domain_fact != nullptr) return CacheAnswer::domain_fact;
    return CacheAnswer::none;
}

}  // namespace calloutd
