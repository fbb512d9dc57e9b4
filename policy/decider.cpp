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

std::string Decider::memo_key(const PolicyRequest& req) {
    std::string key;
    memo_key(req, key);
    return key;
}

void Decider::memo_key(const PolicyRequest& req, std::string& out) {
    // Values never contain '\n', so the key is unambiguous. The sender is part of it so a new
    // MAIL FROM under a reused instance is decided afresh.
    out.assign(req.instance).append(1, '\n').append(req.sender);
}

Decision Decider::finish(const std::string& memo, Verdict verdict, DecisionSource source) {
    Decision d;
    d.action = settings_.dry_run ? "DUNNO" : settings_.actions[static_cast<size_t>(verdict.cls)];
    d.verdict = std::move(verdict);
    d.source = source;
    // in_progress is not final: a later recipient should see the result.
    if (!memo.empty() && remembered(source) && d.verdict.cls != VerdictClass::in_progress) {
        by_instance_.put(memo, d, Clock::now() + kInstanceTtl);
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
        return finish(kNoMemo, {VerdictClass::skipped, "protocol-state"}, DecisionSource::skip);
    }
    // The memo key is built only where it is used (a lookup in a non-empty memo, a verdict to
    // remember), in a reused buffer for the lookup: most answers never need it.
    bool has_memo = !req.instance.empty();
    if (has_memo && by_instance_.size() > 0) {
        memo_key(req, memo_scratch_);
        if (const Decision* earlier = by_instance_.get(memo_scratch_, now)) {
            Decision d = *earlier;
            d.repeat = true;
            return d;
        }
    }
    // Parsed once, for the skip rules' domain and for the verifier.
    AddressParse sender = parse_sender(req.sender);
    // Skips are never remembered (the same request is skipped again), so they need no memo.
    if (auto skipped = skip_rule(req, settings_, sender)) {
        return finish(kNoMemo, std::move(*skipped), DecisionSource::skip);
    }
    if (verifier_ == nullptr) {
        return finish(kNoMemo, {VerdictClass::skipped, "no-engine"}, DecisionSource::skip);
    }
    // One pointer captured: the MakeDone handed on stays in std::function's inline storage.
    struct Pending {
        Decider* self;
        const PolicyRequest* req;
        const MakeDone* make_done;
    } pending{this, &req, &make_done};
    auto immediate =
        verifier_->verify_parsed(req, std::move(sender), [p = &pending]() -> SenderVerifier::Done {
            std::string memo = p->req->instance.empty() ? std::string() : memo_key(*p->req);
            return
                [self = p->self, memo = std::move(memo), done = (*p->make_done)()](
                    Verdict v, DecisionSource src) { done(self->finish(memo, std::move(v), src)); };
        });
    if (!immediate) return std::nullopt;
    return finish(has_memo && remembered(immediate->source) ? memo_key(req) : kNoMemo,
                  std::move(immediate->verdict), immediate->source);
}

}  // namespace calloutd
