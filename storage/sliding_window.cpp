// Sliding-window log: per key, the times of the events inside the period.
#include "storage/sliding_window.hpp"

#include <algorithm>

namespace calloutd {

void SlidingWindows::expire(Window& w, Clock::time_point now) const {
    // An event at t counts while now < t + period.
    auto first_live = std::upper_bound(w.events.begin(), w.events.end(), now - rate_.period);
    w.events.erase(w.events.begin(), first_live);
}

void SlidingWindows::sweep(Clock::time_point now) {
    // The least recently recorded keys sit at the back; drop them while they are idle.
    while (!recency_.empty()) {
        auto it = windows_.find(recency_.back());
        if (it->second.events.empty() || it->second.events.back() > now - rate_.period) break;
        windows_.erase(it);
        recency_.pop_back();
    }
}

size_t SlidingWindows::count(const std::string& key, Clock::time_point now) {
    auto it = windows_.find(key);
    if (it == windows_.end()) return 0;
    expire(it->second, now);
    return it->second.events.size();
}

bool SlidingWindows::allows(const std::string& key, Clock::time_point now) {
    if (rate_.unlimited) return true;
    sweep(now);
    auto it = windows_.find(key);
    if (it == windows_.end()) return windows_.size() < max_keys_;
    expire(it->second, now);
    return it->second.events.size() < rate_.count;
}

void SlidingWindows::record(const std::string& key, Clock::time_point now) {
    if (rate_.unlimited) return;
    // Events recorded without asking (admitted elsewhere) must not pile up idle keys either.
    sweep(now);
    auto it = windows_.find(key);
    if (it == windows_.end()) {
        recency_.push_front(key);
        it = windows_.emplace(key, Window{{}, recency_.begin()}).first;
    } else {
        recency_.splice(recency_.begin(), recency_, it->second.recency);
    }
    it->second.events.push_back(now);
}

}  // namespace calloutd
