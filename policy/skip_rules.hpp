// Skip rules: requests that calloutd answers without verifying anything.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "callout/address.hpp"
#include "callout/verdict.hpp"
#include "policy/request.hpp"
#include "policy/settings.hpp"

namespace calloutd {

// The domain part of an envelope address as the probe would use it (callout/address.hpp
// parse_domain: UTS-46 mapped A-labels, lower case; a trailing dot is dropped first). Refused
// when there is no '@' or the domain is no name.
DomainParse sender_domain(std::string_view sender);

// The skipped verdict for a request that must not be verified, or nullopt to verify it.
// Reasons: protocol-state, null-sender, sasl-authenticated, trusted-client, bad-domain: ...,
// own-domain, skip-domain. Domain rules compare the normalised domain, never the raw text, so
// no spelling (full-width letters, soft hyphens, U+3002 as a dot) slips past them.
std::optional<Verdict> skip_rule(const PolicyRequest& req, const PolicySettings& settings);
// The same with the sender already parsed (parse_sender(req.sender)): a sender that parsed
// gives its domain to the domain rules without a second parse; one that did not is judged by
// sender_domain() as above.
std::optional<Verdict> skip_rule(const PolicyRequest& req, const PolicySettings& settings,
                                 const AddressParse& sender);
// Only the protocol_state rule: it is checked before the one-verdict-per-message memo.
bool state_is_verified(const PolicyRequest& req, const PolicySettings& settings);

}  // namespace calloutd
