// Exact sliding-window event counters per key, with idle keys evicted and a hard key bound.
#pragma once

#include <chrono>
#include <cstdint>
#include <list>
#include <string>
#include <unordered_map>
#include <vector>

#include "storage/rate.hpp"

namespace calloutd {

// Counts events per key over the last `period` exactly (a log of event times, not fixed
// buckets, which would let 2x through at a bucket boundary). A key whose newest event is older
// than the period is idle and is dropped; when `max_keys` live keys exist, a new key is refused
// rather than forgetting a live one, so memory pressure can only make us probe less.
class SlidingWindows {
  public:
    using Clock = std::chrono::steady_clock;

    SlidingWindows(Rate rate, size_t max_keys) : rate_(rate), max_keys_(max_keys) {}

    // True when one more event for `key` at `now` stays within the rate.
    bool allows(const std::string& key, Clock::time_point now);
    // Records an event: after allows() said yes, or for an event admitted elsewhere that must
    // count against this window all the same.
    void record(const std::string& key, Clock::time_point now);
    // Forget everything (limits changed).
    void set_rate(Rate rate) { rate_ = rate; }
    size_t keys() const { return windows_.size(); }
    // Events currently counted for `key`.
    size_t count(const std::string& key, Clock::time_point now);

  private:
    struct Window {
        std::vector<Clock::time_point> events;  // ascending
        std::list<std::string>::iterator recency;
    };
    void expire(Window& w, Clock::time_point now) const;
    void sweep(Clock::time_point now);

    Rate rate_;
    size_t max_keys_;
    std::unordered_map<std::string, Window> windows_;
    std::list<std::string> recency_;  // front: most recent event
};

}  // namespace calloutd
