#include "support/timer_verifier.hpp"

namespace calloutd::test {

std::optional<SenderVerifier::Immediate> TimerVerifier::verify(const PolicyRequest& req,
                                                               Done done) {
    auto plan = plan_(req);
    if (auto* now = std::get_if<Immediate>(&plan)) return *now;
    const auto& later = std::get<Later>(plan);
    auto& p = pending_.emplace_back();
    p.done = std::move(done);
    p.verdict = later.verdict;
    uv_timer_init(loop_, &p.timer);
    p.timer.data = &p;
    uv_timer_start(
        &p.timer,
        [](uv_timer_t* t) {
            auto* self = static_cast<Pending*>(t->data);
            self->done(self->verdict, DecisionSource::probe);
        },
        static_cast<uint64_t>(later.after.count()), 0);
    return std::nullopt;
}

void TimerVerifier::close_all() {
    for (auto& p : pending_) uv_close(reinterpret_cast<uv_handle_t*>(&p.timer), nullptr);
}

}  // namespace calloutd::test
