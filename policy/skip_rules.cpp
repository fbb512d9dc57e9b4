// Skip rules, evaluated in the order an admin expects to read them in the log.
#include "policy/skip_rules.hpp"

#include <algorithm>

namespace calloutd {

DomainParse sender_domain(std::string_view sender) {
    auto at = sender.rfind('@');
    if (at == std::string_view::npos) return {{}, "bad-address: missing @"};
    std::string_view domain = sender.substr(at + 1);
    if (!domain.empty() && domain.back() == '.') domain.remove_suffix(1);
    return parse_domain(domain);
}

bool state_is_verified(const PolicyRequest& req, const PolicySettings& settings) {
    const auto& states = settings.protocol_states;
    return std::find(states.begin(), states.end(), req.protocol_state) != states.end();
}

std::optional<Verdict> skip_rule(const PolicyRequest& req, const PolicySettings& settings) {
    return skip_rule(req, settings, AddressParse{});
}

std::optional<Verdict> skip_rule(const PolicyRequest& req, const PolicySettings& settings,
                                 const AddressParse& sender) {
    auto skip = [](const char* reason) { return Verdict{VerdictClass::skipped, reason}; };
    if (!state_is_verified(req, settings)) return skip("protocol-state");
    // Bounces must never be probed: there is no sender to verify.
    if (req.sender.empty() || req.sender == "<>") return skip("null-sender");
    if (!req.sasl_username.empty() || !req.sasl_method.empty()) {
        return skip("sasl-authenticated");
    }
    if (!settings.trusted_networks.empty()) {
        auto ip = IpAddress::parse(req.client_address);
        if (ip && settings.trusted_networks.contains(*ip)) return skip("trusted-client");
    }
    // A parsed sender's domain is what sender_domain() gives for it: the text after the same
    // '@', through the same parse_domain().
    DomainParse parsed_here;
    const std::string* domain = sender ? &sender.address->domain : nullptr;
    if (domain == nullptr) {
        parsed_here = sender_domain(req.sender);
        // A name that cannot be mapped could never be probed, and no list can be held against
        // it.
        if (parsed_here.idna_failed()) return Verdict{VerdictClass::skipped, parsed_here.refusal};
        // Any other refusal (plain syntax) is the verifier's to report as bad-address.
        if (!parsed_here) return std::nullopt;
        domain = &parsed_here.domain;
    }
    if (settings.own_domains.matches(*domain)) return skip("own-domain");
    if (settings.skip_domains.matches(*domain)) return skip("skip-domain");
    return std::nullopt;
}

}  // namespace calloutd
