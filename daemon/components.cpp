// Configuration -> component options.
#include "daemon/components.hpp"

namespace calloutd {

CalloutOptions callout_options(const Config& config, std::vector<IpAddress> own_addresses) {
    CalloutOptions o;
    o.dns.servers = config.dns.servers;
    o.dns.timeout = config.dns.timeout;
    o.dns.tries = static_cast<int>(config.dns.tries);
    o.dns_canary = config.dns.canary;
    o.probe.port = static_cast<uint16_t>(config.callout.port);
    o.probe.helo_name = config.callout.helo_name;
    o.probe.connect_timeout = config.callout.connect_timeout;
    o.probe.command_timeout = config.callout.command_timeout;
    o.probe.probe_timeout = config.callout.probe_timeout;
    o.probe.random_check = config.callout.random_check;
    o.probe.source_address = config.callout.source_address;
    o.probe.tls = config.callout.tls == "encrypt" ? TlsMode::encrypt
                  : config.callout.tls == "none"  ? TlsMode::none
                                                  : TlsMode::may;
    o.probe.tls_timeout = config.callout.tls_timeout;
    o.max_mx = static_cast<size_t>(config.callout.max_mx);
    o.allow_networks = config.callout.allow_networks;
    o.own_addresses = std::move(own_addresses);
    return o;
}

CacheTtls cache_ttls(const Config& config) {
    return CacheTtls{config.cache.positive_ttl,     config.cache.negative_ttl,
                     config.cache.tempfail_ttl,     config.cache.domain_ttl,
                     config.cache.positive_refresh, config.limits.backoff_ttl};
}

BudgetLimits budget_limits(const Config& config) {
    return config.limits.budgets;
}

std::vector<IpAddress> listener_addresses(const std::vector<std::string>& bound) {
    std::vector<IpAddress> out;
    for (const auto& b : bound) {
        if (!b.starts_with("inet:")) continue;
        std::string host = b.substr(5, b.rfind(':') - 5);
        if (host.starts_with("[")) host = host.substr(1, host.size() - 2);
        if (auto ip = IpAddress::parse(host)) out.push_back(*ip);
    }
    return out;
}

}  // namespace calloutd
