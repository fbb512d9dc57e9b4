// A bounded map with least-recently-used eviction and per-entry expiry.
#pragma once

#include <chrono>
#include <cstddef>
#include <list>
#include <unordered_map>
#include <utility>

namespace calloutd {

// Not thread-safe: it lives on the event loop. Expired entries are dropped when touched and
// evicted first when room is needed; `capacity` bounds memory regardless of TTLs.
template <class Key, class Value, class Clock = std::chrono::steady_clock>
class LruMap {
  public:
    using time_point = typename Clock::time_point;

    explicit LruMap(size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

    // Inserts or replaces; the entry becomes the most recently used.
    void put(const Key& key, Value value, time_point expires) {
        auto it = index_.find(key);
        if (it != index_.end()) {
            it->second->value = std::move(value);
            it->second->expires = expires;
            order_.splice(order_.begin(), order_, it->second);
            return;
        }
        while (index_.size() >= capacity_) evict_one();
        order_.push_front(Node{key, std::move(value), expires});
        index_.emplace(key, order_.begin());
    }

    // The live value for key (marking it recently used), or nullptr.
    Value* get(const Key& key, time_point now) {
        auto it = index_.find(key);
        if (it == index_.end()) return nullptr;
        if (it->second->expires <= now) {
            order_.erase(it->second);
            index_.erase(it);
            return nullptr;
        }
        order_.splice(order_.begin(), order_, it->second);
        return &it->second->value;
    }

    bool erase(const Key& key) {
        auto it = index_.find(key);
        if (it == index_.end()) return false;
        order_.erase(it->second);
        index_.erase(it);
        return true;
    }

    // The live value for key and its expiry, leaving recency alone (for inspection), or nullptr.
    const Value* peek(const Key& key, time_point now, time_point* expires) const {
        auto it = index_.find(key);
        if (it == index_.end() || it->second->expires <= now) return nullptr;
        if (expires != nullptr) *expires = it->second->expires;
        return &it->second->value;
    }

    // Removes every entry for which pred(key, value, expires) holds; returns how many. Walks
    // them all.
    template <class Pred>
    size_t erase_if(Pred pred) {
        size_t n = 0;
        for (auto it = order_.begin(); it != order_.end();) {
            if (!pred(it->key, it->value, it->expires)) {
                ++it;
                continue;
            }
            index_.erase(it->key);
            it = order_.erase(it);
            ++n;
        }
        return n;
    }

    void clear() {
        index_.clear();
        order_.clear();
    }
    size_t size() const { return index_.size(); }
    size_t capacity() const { return capacity_; }

  private:
    struct Node {
        Key key;
        Value value;
        time_point expires;
    };

    void evict_one() {
        // The tail is the least recently used entry.
        auto last = std::prev(order_.end());
        index_.erase(last->key);
        order_.erase(last);
    }

    size_t capacity_;
    std::list<Node> order_;
    std::unordered_map<Key, typename std::list<Node>::iterator> index_;
};

}  // namespace calloutd
