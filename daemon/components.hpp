// Maps the configuration onto the option structs of the callout and storage components.
#pragma once

#include <vector>

#include "callout/callout.hpp"
#include "daemon/config.hpp"
#include "storage/probe_budget.hpp"
#include "storage/verdict_cache.hpp"

namespace calloutd {

CalloutOptions callout_options(const Config& config, std::vector<IpAddress> own_addresses);
CacheTtls cache_ttls(const Config& config);
BudgetLimits budget_limits(const Config& config);
// IPs of the listeners as bound ("inet:IP:PORT"); the target guard refuses them.
std::vector<IpAddress> listener_addresses(const std::vector<std::string>& bound);

}  // namespace calloutd
