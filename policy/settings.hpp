// What the decision pipeline is configured with (filled from [policy] and [actions]).
#pragma once

#include <array>
#include <string>
#include <vector>

#include "callout/verdict.hpp"
#include "policy/domain_list.hpp"
#include "util/ip_net.hpp"

namespace calloutd {

// The Postfix action returned for each verdict class, indexed by VerdictClass.
using ActionTable = std::array<std::string, kAllVerdictClasses.size()>;

struct PolicySettings {
    std::vector<std::string> protocol_states;  // upper case, e.g. {"RCPT"}
    CidrSet trusted_networks;
    DomainSet own_domains;   // each matches the domain and its subdomains
    DomainSet skip_domains;  // "builtin:never-probe" and "file:" lists already expanded
    // MX host-name suffixes never connected to (checked after the MX lookup): the domain is
    // answered skipped/skip-mx and that is cached as a domain fact.
    DomainSet skip_mx_hosts;
    bool dry_run = false;
    ActionTable actions;
};

}  // namespace calloutd
