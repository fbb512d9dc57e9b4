// cache-get/del/flush against the memory cache, worded like `calloutd cache` against Redis.
#include "daemon/cache_control.hpp"

#include "daemon/cache_command.hpp"

namespace calloutd {

namespace {

std::string ttl_text(WallClock::time_point expires, WallClock::time_point now) {
    return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(expires - now).count()) +
           "s";
}

// Adds the entry's line, or "not cached"; true when there was one.
bool describe(ControlReply& reply, const std::string& label,
              const std::optional<MemoryVerdictCache::Entry>& e, WallClock::time_point now) {
    if (!e) {
        reply.data.push_back(label + ": not cached");
        return false;
    }
    reply.data.push_back(describe_cache_entry(label, e->verdict, ttl_text(e->expires, now), now));
    return true;
}

}  // namespace

ControlReply cache_control(MemoryVerdictCache& cache, const ControlRequest& request,
                           WallClock::time_point now) {
    ControlReply reply;
    std::string error;
    auto t = parse_cache_target(request.argument, error);
    if (!t) return {{}, ControlStatus::error, request.argument + ": " + error};
    bool address = !t->address.empty();
    bool found = false;
    switch (request.verb) {
        case ControlVerb::cache_get:
            if (address)
                found =
                    describe(reply, "address " + t->address, cache.address_entry(t->address), now);
            found =
                describe(reply, "domain " + t->domain, cache.domain_entry(t->domain), now) || found;
            break;
        case ControlVerb::cache_del: {
            std::string label = address ? "address " + t->address : "domain " + t->domain;
            found = address ? cache.erase_address(t->address) : cache.erase_domain_fact(t->domain);
            reply.data.push_back(label + (found ? ": deleted" : ": not cached"));
            break;
        }
        case ControlVerb::cache_flush: {
            if (address) {
                return {{},
                        ControlStatus::error,
                        "flush takes a domain; use cache-del for one address"};
            }
            size_t addresses = cache.erase_addresses_of(t->domain);
            bool fact = cache.erase_domain_fact(t->domain);
            reply.data.push_back("domain " + t->domain + ": deleted " + std::to_string(addresses) +
                                 " address verdict(s)" +
                                 (fact ? " and the domain fact" : ", no domain fact"));
            found = addresses > 0 || fact;
            break;
        }
        case ControlVerb::status:
            return {{}, ControlStatus::error, "not a cache command"};
    }
    reply.status = found ? ControlStatus::ok : ControlStatus::none;
    return reply;
}

}  // namespace calloutd
