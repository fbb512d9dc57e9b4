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
    d.verdict = std::move(verdict);
    d.source = source;
    complete(d, instance, sender);
    return d;
}

void Decider::complete(Decision& d, const std::string& instance, const std::string& sender) {
    if (settings_.dry_run) {
        d.action = "DUNNO";
    } else {
        d.action = settings_.actions[static_cast<size_t>(d.verdict.cls)];
    }
    d.repeat = false;
    // in_progress is not final: a later recipient should see the result.
    if (!instance.empty() && remembered(d.source) && d.verdict.cls != VerdictClass::in_progress) {
        by_instance_.put(instance, Memo{sender, d}, Clock::now() + kInstanceTtl);
    }
}

std::optional<Decision> Decider::decide(const PolicyRequest& req, Done done) {
    return decide_lazy(
        req, [&done] { return std::move(done); }, Clock::now());
}

std::optional<Decision> Decider::decide_lazy(const PolicyRequest& req, const MakeDone& make_done,
                                             Clock::time_point now) {
    Decision d;
    if (!decide_into(req, make_done, now, d)) return std::nullopt;
    return d;
}

bool Decider::decide_into(const PolicyRequest& req, const MakeDone& make_done,
                          Clock::time_point now, Decision& out) {
    static const std::string kNoMemo;
    // Skips are never remembered (the same request is skipped again), so they need no memo.
    auto skip = [&](Verdict verdict) {
        out.verdict = std::move(verdict);
        out.source = DecisionSource::skip;
        complete(out, kNoMemo, kNoMemo);
        return true;
    };
    if (!state_is_verified(req, settings_)) return skip({VerdictClass::skipped, "protocol-state"});
    if (!req.instance.empty() && by_instance_.size() > 0) {
        if (const Memo* earlier = by_instance_.get(req.instance, now);
            earlier != nullptr && earlier->sender == req.sender) {
            out = earlier->decision;
            out.repeat = true;
            return true;
        }
    }
    // Parsed once, for the skip rules' domain and for the verifier, into reused strings (the
    // verifier moves from them only when it keeps the request).
    AddressParse& sender = sender_;
    parse_sender_into(req.sender, sender);
    if (auto skipped = skip_rule(req, settings_, sender)) return skip(std::move(*skipped));
    if (verifier_ == nullptr) return skip({VerdictClass::skipped, "no-engine"});
    // One pointer captured: the MakeDone handed on stays in std::function's inline storage.
    struct Pending {
        Decider* self;
        const PolicyRequest* req;
        const MakeDone* make_done;
    } pending{this, &req, &make_done};
    bool immediate = verifier_->verify_into(
        req, std::move(sender),
        [p = &pending]() -> SenderVerifier::Done {
            return [self = p->self, instance = p->req->instance, sender = p->req->sender,
                    done = (*p->make_done)()](Verdict v, DecisionSource src) {
                done(self->finish(instance, sender, std::move(v), src));
            };
        },
        out.verdict, out.source);
    if (!immediate) return false;
    complete(out, req.instance, req.sender);
    return true;
}

}  // namespace calloutd
