// DeferredQueue: one zero-delay libuv timer draining a FIFO of callbacks.
#include "util/deferred_queue.hpp"

#include <algorithm>
#include <memory>
#include <utility>

namespace calloutd {

void DeferredQueue::CloseTimer::operator()(uv_timer_t* timer) const {
    uv_close(reinterpret_cast<uv_handle_t*>(timer), [](uv_handle_t* handle) {
        std::unique_ptr<uv_timer_t> owned(reinterpret_cast<uv_timer_t*>(handle));
    });
}

DeferredQueue::DeferredQueue(uv_loop_t* loop) {
    auto timer = std::make_unique<uv_timer_t>();
    uv_timer_init(loop, timer.get());  // cannot fail for a timer
    timer->data = this;
    timer_.reset(timer.release());
}

DeferredQueue::~DeferredQueue() {
    if (destroyed_ != nullptr) *destroyed_ = true;
}

void DeferredQueue::post(std::function<void()> run, Key key) {
    queue_.push_back(Entry{next_seq_++, key, std::move(run)});
    if (armed_) return;
    armed_ = true;
    uv_timer_start(timer_.get(), &DeferredQueue::on_timer, 0, 0);
}

bool DeferredQueue::cancel(Key key) {
    if (key == 0) return false;
    auto it =
        std::find_if(queue_.begin(), queue_.end(), [key](const Entry& e) { return e.key == key; });
    if (it == queue_.end()) return false;
    queue_.erase(it);
    return true;
}

void DeferredQueue::on_timer(uv_timer_t* timer) {
    static_cast<DeferredQueue*>(timer->data)->drain();
}

// Runs what was queued when the drain began; anything posted meanwhile waits for the next turn.
void DeferredQueue::drain() {
    armed_ = false;
    const std::uint64_t end = next_seq_;
    bool destroyed = false;
    destroyed_ = &destroyed;
    while (!queue_.empty() && queue_.front().seq < end) {
        // Moved out first: the callback may destroy the queue, and with it the deque.
        std::function<void()> run = std::move(queue_.front().run);
        queue_.pop_front();
        run();
        if (destroyed) return;
    }
    destroyed_ = nullptr;  // what was posted meanwhile armed the timer again
}

}  // namespace calloutd
