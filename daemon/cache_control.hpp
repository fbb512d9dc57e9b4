// The daemon's side of `calloutd cache` over the control socket: its in-memory cache.
#pragma once

#include "daemon/control_protocol.hpp"
#include "storage/memory_cache.hpp"

namespace calloutd {

// Answers cache-get, cache-del and cache-flush from `cache` (in Redis mode: this node's local
// copies), in the words of the Redis backend's output. `now` is for ages and TTLs.
ControlReply cache_control(MemoryVerdictCache& cache, const ControlRequest& request,
                           WallClock::time_point now);

}  // namespace calloutd
