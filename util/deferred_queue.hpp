// Callbacks deferred to a later point of a libuv loop: how async components keep the promise
// "a callback never runs from inside the call that started the work".
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>

namespace calloutd {

// Callbacks run in the order posted, never from inside post(): in the loop's check phase, right
// after I/O polling (as Node's setImmediate). Work posted from an I/O callback therefore runs in
// the same loop iteration, once that callback has returned; work posted while the queue drains
// waits for the next iteration, after the next poll, so a callback that always posts cannot
// starve I/O. An idle handle, active only while something is queued, keeps the poll from
// blocking meanwhile.
//
// Not a zero-delay timer: libuv before 1.48 runs a zero-delay timer re-armed from its own
// callback again in the same pass, before any I/O.
//
// A running callback may post more, cancel others, or destroy the queue's owner and with it the
// queue: the callbacks still queued are then dropped, never run. Destroying the queue drops what
// it holds; its handles are released by libuv's close callbacks, so the loop must run once more
// afterwards. Not thread-safe: use from the loop's thread.
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
    // libuv may touch a handle until its close callback runs: handles live on the heap and that
    // callback frees them, so the queue itself can go away at once.
    struct Close {
        void operator()(uv_check_t* check) const;
        void operator()(uv_idle_t* idle) const;
    };

    void arm();
    void drain();

    std::deque<Entry> queue_;
    std::unique_ptr<uv_check_t, Close> check_;  // runs drain()
    std::unique_ptr<uv_idle_t, Close> idle_;    // keeps the poll from blocking
    bool armed_ = false;                        // both are started
    std::uint64_t next_seq_ = 0;
    bool* destroyed_ = nullptr;  // while drain() runs: tells it the queue went away under it
};

}  // namespace calloutd
