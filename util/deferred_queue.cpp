// DeferredQueue: a FIFO of callbacks drained by a libuv check handle.
#include "util/deferred_queue.hpp"

#include <algorithm>
#include <utility>

namespace calloutd {

namespace {

template <typename Handle>
void close_and_free(Handle* handle) {
    uv_close(reinterpret_cast<uv_handle_t*>(handle), [](uv_handle_t* closed) {
        std::unique_ptr<Handle> owned(reinterpret_cast<Handle*>(closed));
    });
}

}  // namespace

void DeferredQueue::Close::operator()(uv_check_t* check) const {
    close_and_free(check);
}

void DeferredQueue::Close::operator()(uv_idle_t* idle) const {
    close_and_free(idle);
}

DeferredQueue::DeferredQueue(uv_loop_t* loop) {
    auto check = std::make_unique<uv_check_t>();
    auto idle = std::make_unique<uv_idle_t>();
    uv_check_init(loop, check.get());  // neither can fail
    uv_idle_init(loop, idle.get());
    check->data = this;
    check_.reset(check.release());
    idle_.reset(idle.release());
}

DeferredQueue::~DeferredQueue() {
    if (destroyed_ != nullptr) *destroyed_ = true;
}

void DeferredQueue::post(std::function<void()> run, Key key) {
    queue_.push_back(Entry{next_seq_++, key, std::move(run)});
    arm();
}

void DeferredQueue::arm() {
    if (armed_) return;
    armed_ = true;
    uv_check_start(check_.get(),
                   [](uv_check_t* check) { static_cast<DeferredQueue*>(check->data)->drain(); });
    uv_idle_start(idle_.get(), [](uv_idle_t*) {});
}

bool DeferredQueue::cancel(Key key) {
    if (key == 0) return false;
    auto it =
        std::find_if(queue_.begin(), queue_.end(), [key](const Entry& e) { return e.key == key; });
    if (it == queue_.end()) return false;
    queue_.erase(it);
    return true;
}

// Runs what was queued when the drain began. Anything posted meanwhile starts the handles
// again, and libuv runs a check handle started from a check callback in the next iteration.
void DeferredQueue::drain() {
    uv_check_stop(check_.get());
    uv_idle_stop(idle_.get());
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
    destroyed_ = nullptr;
}

}  // namespace calloutd
