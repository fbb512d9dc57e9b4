// A SenderVerifier for in-process server tests whose late answers come from libuv timers on the
// server's loop, as a probe's would.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <list>
#include <variant>

#include "policy/decider.hpp"

namespace calloutd::test {

class TimerVerifier : public SenderVerifier {
  public:
    // `verdict` delivered by a timer `after` the request, with source probe.
    struct Later {
        std::chrono::milliseconds after;
        Verdict verdict;
    };
    using Plan = std::function<std::variant<Immediate, Later>(const PolicyRequest&)>;

    TimerVerifier(uv_loop_t* loop, Plan plan) : loop_(loop), plan_(std::move(plan)) {}

    std::optional<Immediate> verify(const PolicyRequest& req, Done done) override;
    // Closes the timers (answered or not) before the loop is closed.
    void close_all();

  private:
    struct Pending {
        uv_timer_t timer;
        Done done;
        Verdict verdict;
    };
    uv_loop_t* loop_;
    Plan plan_;
    std::list<Pending> pending_;
};

}  // namespace calloutd::test
