// A bounded map with least-recently-used eviction and per-entry expiry.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <string>
#include <utility>
#include <vector>

#include "util/keyed_hash.hpp"

namespace calloutd {

// String keys come from outside (senders, domains, instance ids): hashed with the process's
// secret key, so nobody can choose keys that pile up in one probe run (util/keyed_hash.hpp).
template <class Key>
struct LruMapHash {
    using type = std::hash<Key>;
};
template <>
struct LruMapHash<std::string> {
    using type = KeyedStringHash;
};

// Not thread-safe: it lives on the event loop. Expired entries are dropped when touched and
// evicted first when room is needed; `capacity` bounds memory regardless of TTLs.
//
// Every cached policy answer looks up two of these (the per-message memo and the verdict cache),
// so the index is a flat open-addressing table: a power-of-two array of {hash tag, list
// position} probed linearly (no division, no bucket chains, no second copy of the key: the key
// is compared in the list node), kept at most half full, with backward-shift deletion (no
// tombstones). The recency order is a std::list whose nodes never move.
template <class Key, class Value, class Clock = std::chrono::steady_clock,
          class Hash = typename LruMapHash<Key>::type>
class LruMap {
  public:
    using time_point = typename Clock::time_point;

    explicit LruMap(size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

    // Inserts or replaces; the entry becomes the most recently used.
    void put(const Key& key, Value value, time_point expires) {
        const size_t tag = tag_of(key);
        if (size_t i = find_slot(key, tag); i != kNone) {
            auto it = slots_[i].it;
            it->value = std::move(value);
            it->expires = expires;
            order_.splice(order_.begin(), order_, it);
            return;
        }
        while (order_.size() >= capacity_) evict_one();
        if ((order_.size() + 1) * 2 > slots_.size()) grow();
        order_.push_front(Node{key, std::move(value), expires, tag});
        place(tag, order_.begin());
    }

    // The live value for key (marking it recently used), or nullptr.
    Value* get(const Key& key, time_point now) {
        size_t i = find_slot(key, tag_of(key));
        if (i == kNone) return nullptr;
        auto it = slots_[i].it;
        if (it->expires <= now) {
            remove_slot(i);
            order_.erase(it);
            return nullptr;
        }
        if (it != order_.begin()) order_.splice(order_.begin(), order_, it);
        return &it->value;
    }

    bool erase(const Key& key) {
        size_t i = find_slot(key, tag_of(key));
        if (i == kNone) return false;
        auto it = slots_[i].it;
        remove_slot(i);
        order_.erase(it);
        return true;
    }

    // The live value for key and its expiry, leaving recency alone (for inspection), or nullptr.
    const Value* peek(const Key& key, time_point now, time_point* expires) const {
        size_t i = find_slot(key, tag_of(key));
        if (i == kNone) return nullptr;
        auto it = slots_[i].it;
        if (it->expires <= now) return nullptr;
        if (expires != nullptr) *expires = it->expires;
        return &it->value;
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
            remove_slot(find_slot(it->key, it->tag));
            it = order_.erase(it);
            ++n;
        }
        return n;
    }

    void clear() {
        slots_.clear();
        order_.clear();
    }
    size_t size() const { return order_.size(); }
    size_t capacity() const { return capacity_; }

  private:
    struct Node {
        Key key;
        Value value;
        time_point expires;
        size_t tag;  // tag_of(key), kept for eviction and growth
    };
    using Position = typename std::list<Node>::iterator;
    struct Slot {
        size_t tag = 0;  // 0: empty
        Position it{};
    };
    static constexpr size_t kNone = static_cast<size_t>(-1);
    static constexpr size_t kMinSlots = 16;

    // The key's hash, mixed (std::hash of an integer is the identity) and never 0.
    static size_t tag_of(const Key& key) {
        uint64_t h = static_cast<uint64_t>(Hash{}(key));
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdULL;
        h ^= h >> 33;
        return static_cast<size_t>(h) | 1;
    }
    size_t home(size_t tag) const { return (tag >> 1) & (slots_.size() - 1); }

    size_t find_slot(const Key& key, size_t tag) const {
        if (slots_.empty()) return kNone;
        const size_t mask = slots_.size() - 1;
        for (size_t i = home(tag);; i = (i + 1) & mask) {
            const Slot& s = slots_[i];
            if (s.tag == 0) return kNone;
            if (s.tag == tag && s.it->key == key) return i;
        }
    }

    void place(size_t tag, Position it) {
        const size_t mask = slots_.size() - 1;
        size_t i = home(tag);
        while (slots_[i].tag != 0) i = (i + 1) & mask;
        slots_[i] = Slot{tag, it};
    }

    // Empties slot i and shifts later entries of its probe run back, so that every entry stays
    // reachable from its home slot without tombstones.
    void remove_slot(size_t i) {
        const size_t mask = slots_.size() - 1;
        for (size_t j = i;;) {
            j = (j + 1) & mask;
            if (slots_[j].tag == 0) break;
            const size_t k = home(slots_[j].tag);
            // The entry at j may move to i only if its home is not cyclically within (i, j].
            const bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
            if (stays) continue;
            slots_[i] = slots_[j];
            i = j;
        }
        slots_[i] = Slot{};
    }

    void grow() {
        size_t n = std::max(kMinSlots, slots_.size() * 2);
        while ((order_.size() + 1) * 2 > n) n *= 2;
        slots_.assign(n, Slot{});
        for (auto it = order_.begin(); it != order_.end(); ++it) place(it->tag, it);
    }

    void evict_one() {
        // The tail is the least recently used entry.
        auto last = std::prev(order_.end());
        remove_slot(find_slot(last->key, last->tag));
        order_.erase(last);
    }

    size_t capacity_;
    std::list<Node> order_;
    std::vector<Slot> slots_;
};

}  // namespace calloutd
