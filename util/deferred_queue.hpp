// Callbacks deferred to a later turn of a libuv loop: how async components keep the promise
// "a callback never runs from inside the call that started the work".
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>

namespace calloutd {

// Callbacks run in the order posted, from a zero-delay libuv timer, never from inside post().
// A running callback may post more (they wait for the next turn, so a callback that always posts
// cannot starve the loop), cancel others, or destroy the queue's owner and with it the queue:
// the callbacks still queued are then dropped, never run.
//
// Destroying the queue drops what it holds. Its timer handle is released by libuv's close
// callback, so the loop must run once more afterwards. Not thread-safe: use from the loop's thread.
class DeferredQueue {
  public:
    using Key = std::uint64_t;  // names a callback for cancel(); 0 = not cancellable

    explicit DeferredQueue(uv_loop_t* loop);
    ~DeferredQueue();
    DeferredQueue(const DeferredQueue&) = delete;
    DeferredQueue& operator=(const DeferredQueue&) = delete;

    void post(std::function<void()> run, Key key = 0);
    // Drops the queued callback posted with `key` (the first one, if several were). False if
    // none is queued: it already ran, was cancelled, or was never posted.
    bool cancel(Key key);
    // Callbacks queued and not yet run or dropped.
    std::size_t size() const { return queue_.size(); }

  private:
    struct Entry {
        std::uint64_t seq;  // posting order: a drain runs only what was queued when it began
        Key key;
        std::function<void()> run;
    };

    // libuv may touch a handle until its close callback runs: the handle lives on the heap and
    // that callback frees it, so the queue itself can go away at once.
    struct CloseTimer {
        void operator()(uv_timer_t* timer) const;
    };

    static void on_timer(uv_timer_t* timer);
    void drain();

    std::deque<Entry> queue_;
    std::unique_ptr<uv_timer_t, CloseTimer> timer_;
    bool armed_ = false;
    std::uint64_t next_seq_ = 0;
    bool* destroyed_ = nullptr;  // while drain() runs: tells it the queue went away under it
};

}  // namespace calloutd
