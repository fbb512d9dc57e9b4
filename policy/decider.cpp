// Decision pipeline: skip rules -> per-message memo -> verifier -> action mapping.
#include "policy/decider.hpp"

#include "policy/skip_rules.hpp"

namespace calloutd {

namespace {
// Postfix keeps a message's instance for the life of one SMTP transaction; an hour is ample,
// and the entry cap bounds memory whatever the traffic.
constexpr auto kInstanceTtl = std::chrono::hours(1);
constexpr size_t kInstanceEntries = 65536;

// Remember what a later recipient of a message could otherwise see differently: a fresh probe
// result or a budget denial. Skips and cache hits would be answered the same again.
bool remembered(DecisionSource s) {
    return s == DecisionSource::probe || s == DecisionSource::limit;
}
}  // namespace

std::string_view to_string(DecisionSource s) {
    switch (s) {
        case DecisionSource::skip:
            return "skip";
        case DecisionSource::cache:
            return "cache";
        case DecisionSource::probe:
            return "probe";
        case DecisionSource::limit:
            return "limit";
    }
    return "skip";
}

Decider::Decider(PolicySettings settings, SenderVerifier* verifier)
    : settings_(std::move(settings)), verifier_(verifier), by_instance_(kInstanceEntries) {}

Decision Decider::finish(const std::string& instance, const std::string& sender, Verdict verdict,
                         DecisionSource source) {
    Decision d;
    d.action = settings_.dry_run ? "DUNNO" : settings_.actions[static_cast<size_t>(verdict.cls)];
    d.verdict = std::move(verdict);
    d.source = source;
    // in_progress is not final: a later recipient should see the result.
    if (!instance.empty() && remembered(source) && d.verdict.cls != VerdictClass::in_progress) {
        by_instance_.put(instance, Memo{sender, d}, Clock::now() + kInstanceTtl);
    }
    return d;
}

std::optional<Decision> Decider::decide(const PolicyRequest& req, Done done) {
    return decide_lazy(
        req, [&done] { return std::move(done); }, Clock::now());
}

std::optional<Decision> Decider::decide_lazy(const PolicyRequest& req, const MakeDone& make_done,
                                             Clock::time_point now) {
    static const std::string kNoMemo;
    if (!state_is_verified(req, settings_)) {
        return finish(kNoMemo, kNoMemo, {VerdictClass::skipped, "protocol-state"},
                      DecisionSource::skip);
    }
    if (!req.instance.empty() && by_instance_.size() > 0) {
        if (const Memo* earlier = by_instance_.get(req.instance, now);
            earlier != nullptr && earlier->sender == req.sender) {
            Decision d = earlier->decision;
            d.repeat = true;
            return d;
        }
    }
    // Parsed once, for the skip rules' domain and for the verifier.
    AddressParse sender = parse_sender(req.sender);
    // Skips are never remembered (the same request is skipped again), so they need no memo.
    if (auto skipped = skip_rule(req, settings_, sender)) {
        return finish(kNoMemo, kNoMemo, std::move(*skipped), DecisionSource::skip);
    }
    if (verifier_ == nullptr) {
        return finish(kNoMemo, kNoMemo, {VerdictClass::skipped, "no-engine"}, DecisionSource::skip);
    }
    // One pointer captured: the MakeDone handed on stays in std::function's inline storage.
    struct Pending {
        Decider* self;
        const PolicyRequest* req;
        const MakeDone* make_done;
    } pending{this, &req, &make_done};
    auto immediate =
        verifier_->verify_parsed(req, std::move(sender), [p = &pending]() -> SenderVerifier::Done {
            return [self = p->self, instance = p->req->instance, sender = p->req->sender,
                    done = (*p->make_done)()](Verdict v, DecisionSource src) {
                done(self->finish(instance, sender, std::move(v), src));
            };
        });
    if (!immediate) return std::nullopt;
    return finish(req.instance, req.sender, std::move(immediate->verdict), immediate->source);
}

}  // namespace calloutd
