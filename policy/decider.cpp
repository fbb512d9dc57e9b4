// Decision pipeline: skip rules -> per-message memo -> verifier -> action mapping.
#include "policy/decider.hpp"

#include "policy/skip_rules.hpp"

namespace calloutd {

namespace {
// Postfix keeps a message's instance for the life of one SMTP transaction; an hour is ample,
// and the entry cap bounds memory whatever the traffic.
constexpr auto kInstanceTtl = std::chrono::hours(1);
constexpr size_t kInstanceEntries = 65536;
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

std::string Decider::memo_key(const PolicyRequest& req) {
    // Values never contain '\n', so the key is unambiguous. The sender is part of it so a new
    // MAIL FROM under a reused instance is decided afresh.
    return req.instance + '\n' + req.sender;
}

Decision Decider::finish(const std::string& memo, Verdict verdict, DecisionSource source) {
    Decision d;
    d.action = settings_.dry_run ? "DUNNO" : settings_.actions[static_cast<size_t>(verdict.cls)];
    d.verdict = std::move(verdict);
    d.source = source;
    // Remember what a later recipient of this message could otherwise see differently: a fresh
    // probe result or a budget denial. Skips and cache hits would be answered the same again,
    // and in_progress is not final: a later recipient should see the result.
    bool worth_remembering = source == DecisionSource::probe || source == DecisionSource::limit;
    if (!memo.empty() && worth_remembering && d.verdict.cls != VerdictClass::in_progress) {
        by_instance_.put(memo, d, Clock::now() + kInstanceTtl);
    }
    return d;
}

std::optional<Decision> Decider::decide(const PolicyRequest& req, Done done) {
    static const std::string kNoMemo;
    if (!state_is_verified(req, settings_)) {
        return finish(kNoMemo, {VerdictClass::skipped, "protocol-state"}, DecisionSource::skip);
    }
    std::string memo = req.instance.empty() ? std::string() : memo_key(req);
    if (!memo.empty() && by_instance_.size() > 0) {
        if (const Decision* earlier = by_instance_.get(memo, Clock::now())) {
            Decision d = *earlier;
            d.repeat = true;
            return d;
        }
    }
    if (auto skipped = skip_rule(req, settings_)) {
        return finish(memo, std::move(*skipped), DecisionSource::skip);
    }
    if (verifier_ == nullptr) {
        return finish(memo, {VerdictClass::skipped, "no-engine"}, DecisionSource::skip);
    }
    auto immediate =
        verifier_->verify(req, [this, memo, done = std::move(done)](Verdict v, DecisionSource src) {
            done(finish(memo, std::move(v), src));
        });
    if (immediate) return finish(memo, std::move(immediate->verdict), immediate->source);
    return std::nullopt;
}

}  // namespace calloutd
