// Skip rules: requests that calloutd answers without verifying anything.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "callout/verdict.hpp"
#include "policy/request.hpp"
#include "policy/settings.hpp"

namespace calloutd {

// The lower-cased domain part of an envelope address ("" when there is no '@').
std::string sender_domain(std::string_view sender);

// The skipped verdict for a request that must not be verified, or nullopt to verify it.
// Reasons: protocol-state, null-sender, sasl-authenticated, trusted-client, own-domain,
// skip-domain.
std::optional<Verdict> skip_rule(const PolicyRequest& req, const PolicySettings& settings);
// Only the protocol_state rule: it is checked before the one-verdict-per-message memo.
bool state_is_verified(const PolicyRequest& req, const PolicySettings& settings);

}  // namespace calloutd
