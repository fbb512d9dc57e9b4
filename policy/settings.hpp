// What the decision pipeline is configured with (filled from [policy] and [actions]).
#pragma once

#include <array>
#include <string>
#include <vector>

#include "callout/ip_net.hpp"
#include "callout/verdict.hpp"

namespace calloutd {

// The Postfix action returned for each verdict class, indexed by VerdictClass.
using ActionTable = std::array<std::string, kAllVerdictClasses.size()>;

struct PolicySettings {
    std::vector<std::string> protocol_states;  // upper case, e.g. {"RCPT"}
    CidrSet trusted_networks;
    std::vector<std::string> own_domains;   // lower case; match the domain and its subdomains
    std::vector<std::string> skip_domains;  // lower case; match the domain and its subdomains
    bool dry_run = false;
    ActionTable actions;
};

}  // namespace calloutd
