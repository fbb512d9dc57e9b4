// Verification pipeline for one sender: syntax -> cache -> single-flight probe -> verdict.
#include "policy/callout_verifier.hpp"

namespace calloutd {

namespace {

// A short excerpt of the reply that decided the verdict, kept with the cached verdict.
std::string decisive_reply(const CalloutReport& report) {
    if (report.attempts.empty()) return {};
    const HostAttempt& last = report.attempts.back();
    const std::optional<SmtpReply>& r = last.rcpt ? last.rcpt : last.last_reply;
    if (!r) return {};
    std::string text = std::to_string(r->code) + " " + r->text();
    if (text.size() > 200) text.resize(200);
    return text;
}

}  // namespace

CalloutVerifier::CalloutVerifier(uv_loop_t* loop, VerdictCache& cache, Callout& callout,
                                 std::chrono::milliseconds reply_timeout, ProbeObserver observer)
    : loop_(loop),
      cache_(cache),
      callout_(callout),
      reply_timeout_(reply_timeout),
      observer_(std::move(observer)) {}

CalloutVerifier::~CalloutVerifier() {
    *alive_ = false;
    for (auto& [address, flight] : flights_) callout_.cancel(flight.handle);
}

std::optional<SenderVerifier::Immediate> CalloutVerifier::verify(const PolicyRequest& req,
                                                                 Done done) {
    AddressParse parsed = parse_sender(req.sender);
    if (!parsed) {
        // Never probed: nothing from this sender string may reach the SMTP wire.
        return Immediate{{VerdictClass::skipped, parsed.refusal}, DecisionSource::skip};
    }
    const SenderAddress& sender = *parsed.address;
    std::weak_ptr<bool> alive = alive_;
    auto immediate =
        cache_.lookup(sender.domain, sender.address(),
                      [this, alive, sender, done](std::optional<CacheHit> hit) mutable {
                          if (alive.expired()) return;
                          auto answer = after_lookup(sender, std::move(hit), done);
                          if (answer) done(std::move(answer->verdict), answer->source);
                      });
    if (!immediate) return std::nullopt;  // the backend answers later
    return after_lookup(sender, std::move(*immediate), done);
}

std::optional<SenderVerifier::Immediate> CalloutVerifier::after_lookup(const SenderAddress& sender,
                                                                       std::optional<CacheHit> hit,
                                                                       Done& done) {
    if (hit) {
        // Serve the cached positive and re-probe it in the background (refresh-ahead).
        if (hit->refresh_due && !flights_.contains(sender.address())) start_flight(sender, true);
        return Immediate{{hit->verdict.cls, hit->verdict.reason}, DecisionSource::cache};
    }
    join(sender, std::move(done));
    return std::nullopt;
}

void CalloutVerifier::join(const SenderAddress& sender, Done done) {
    auto it = flights_.find(sender.address());
    Flight& flight = it != flights_.end() ? it->second : start_flight(sender, false);
    Waiter& w = flight.waiters.emplace_back();
    w.id = next_waiter_++;
    w.done = std::move(done);
    w.budget = std::make_unique<UvTimer>(loop_);
    w.budget->start(reply_timeout_, [this, address = sender.address(), id = w.id] {
        on_budget_spent(address, id);
    });
}

CalloutVerifier::Flight& CalloutVerifier::start_flight(const SenderAddress& sender, bool refresh) {
    Flight& flight = flights_[sender.address()];
    flight.sender = sender;
    flight.refresh = refresh;
    flight.handle = callout_.start(sender, [this, address = sender.address()](CalloutReport r) {
        on_report(address, std::move(r));
    });
    return flight;
}

void CalloutVerifier::on_budget_spent(const std::string& address, uint64_t waiter_id) {
    auto it = flights_.find(address);
    if (it == flights_.end()) return;
    auto& waiters = it->second.waiters;
    for (auto w = waiters.begin(); w != waiters.end(); ++w) {
        if (w->id != waiter_id) continue;
        Done done = std::move(w->done);
        waiters.erase(w);  // the probe goes on; its verdict lands in the cache for the retry
        done({VerdictClass::in_progress, "probe-running"}, DecisionSource::probe);
        return;
    }
}

void CalloutVerifier::on_report(const std::string& address, CalloutReport report) {
    auto it = flights_.find(address);
    if (it == flights_.end()) return;
    Flight flight = std::move(it->second);
    flights_.erase(it);

    CachedVerdict cached{report.verdict.cls, report.verdict.reason, WallClock::now(),
                         decisive_reply(report)};
    cache_.store(flight.sender.domain, address, cached);
    if (observer_) observer_(flight.sender, report, flight.refresh);
    for (auto& w : flight.waiters) {
        w.budget.reset();
        w.done(report.verdict, DecisionSource::probe);
    }
}

}  // namespace calloutd
