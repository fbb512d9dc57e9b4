// An owned libuv timer with a std::function callback, closed (not freed) on destruction.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>

namespace calloutd {

// libuv frees nothing itself and needs the handle memory until the close callback runs, so the
// handle lives on the heap and is released by that callback; the owner may go away at once.
class UvTimer {
  public:
    explicit UvTimer(uv_loop_t* loop) : handle_(std::make_unique<Handle>()) {
        uv_timer_init(loop, &handle_->timer);
        handle_->timer.data = handle_.get();
    }
    ~UvTimer() {
        if (!handle_) return;
        Handle* h = handle_.release();
        h->callback = nullptr;
        uv_close(reinterpret_cast<uv_handle_t*>(&h->timer), [](uv_handle_t* raw) {
            std::unique_ptr<Handle> owned(static_cast<Handle*>(raw->data));
        });
    }
    UvTimer(const UvTimer&) = delete;
    UvTimer& operator=(const UvTimer&) = delete;

    // (Re)arms a one-shot timer. The callback may destroy this UvTimer.
    void start(std::chrono::milliseconds after, std::function<void()> callback) {
        handle_->callback = std::move(callback);
        uv_timer_start(
            &handle_->timer,
            [](uv_timer_t* t) {
                auto* h = static_cast<Handle*>(t->data);
                // Move out first: the callback may destroy the owner (and reset h->callback).
                auto cb = std::move(h->callback);
                h->callback = nullptr;
                if (cb) cb();
            },
            static_cast<uint64_t>(after.count() < 0 ? 0 : after.count()), 0);
    }
    void stop() {
        uv_timer_stop(&handle_->timer);
        handle_->callback = nullptr;
    }
    // Lets the loop exit although this timer is armed (background housekeeping).
    void unref() { uv_unref(reinterpret_cast<uv_handle_t*>(&handle_->timer)); }

  private:
    struct Handle {
        uv_timer_t timer;
        std::function<void()> callback;
    };
    std::unique_ptr<Handle> handle_;
};

}  // namespace calloutd
