// A first-in-first-out queue that reuses its elements: a ring over a power-of-two vector that
// doubles when full and never shrinks. For per-connection reply slots: a std::deque allocates
// and frees a block every few elements as the queue moves along, on every request.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace calloutd {

template <class T>
class RingQueue {
  public:
    bool empty() const { return size_ == 0; }
    size_t size() const { return size_; }
    T& front() { return ring_[head_]; }
    T& operator[](size_t i) { return ring_[(head_ + i) & (ring_.size() - 1)]; }

    // A new last element: one popped earlier, as it was when popped (strings keep their
    // capacity), or a default-constructed one. The caller sets every field it reads.
    T& push_back_reused() {
        if (size_ == ring_.size()) grow();
        T& slot = ring_[(head_ + size_) & (ring_.size() - 1)];
        ++size_;
        return slot;
    }
    void pop_front() {
        head_ = (head_ + 1) & (ring_.size() - 1);
        --size_;
    }

  private:
    void grow() {
        std::vector<T> bigger(ring_.empty() ? 4 : ring_.size() * 2);
        for (size_t i = 0; i < size_; ++i) bigger[i] = std::move((*this)[i]);
        ring_ = std::move(bigger);
        head_ = 0;
    }

    std::vector<T> ring_;
    size_t head_ = 0;
    size_t size_ = 0;
};

}  // namespace calloutd
