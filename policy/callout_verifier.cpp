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
                                 ProbeBudget& budget, std::chrono::milliseconds reply_timeout,
                                 ProbeObserver observer)
    : loop_(loop),
      cache_(cache),
      callout_(callout),
      budget_(budget),
      reply_timeout_(reply_timeout),
      observer_(std::move(observer)) {
    cache_.set_listener([this](const std::string& domain, const std::string& address) {
        on_stored_elsewhere(domain, address);
    });
}

CalloutVerifier::~CalloutVerifier() {
    *alive_ = false;
    for (auto& [address, flight] : flights_) {
        if (flight.remote) continue;
        callout_.cancel(flight.handle);
        budget_.release_probe(flight.sender.domain, address, flight.token);
    }
}

std::optional<SenderVerifier::Immediate> CalloutVerifier::verify(const PolicyRequest& req,
                                                                 Done done) {
    return verify_lazy(req, [&done] { return std::move(done); });
}

std::optional<SenderVerifier::Immediate> CalloutVerifier::verify_lazy(const PolicyRequest& req,
                                                                      const MakeDone& make_done) {
    AddressParse parsed = parse_sender(req.sender);
    if (!parsed) {
        // Never probed: nothing from this sender string may reach the SMTP wire.
        return Immediate{{VerdictClass::skipped, parsed.refusal}, DecisionSource::skip};
    }
    const SenderAddress& sender = *parsed.address;
    std::string client = req.client_address.empty() ? "unknown" : req.client_address;
    // Built in a reused buffer: every cached answer passes here.
    std::string& address = address_;
    address.assign(sender.local).append(1, '@').append(sender.domain);
    auto now = cache_.peek(sender.domain, address);
    // A cache hit answers at once and never needs the callback: it is made for the rest only.
    Done done;
    if (!now || !*now) done = make_done();
    if (now) {
        return after_lookup(sender, client, std::move(*now), done);
    }
    std::weak_ptr<bool> alive = alive_;
    cache_.lookup(
        sender.domain, address,
        [this, alive, sender, client, done = std::move(done)](std::optional<CacheHit> hit) mutable {
            if (alive.expired()) return;
            auto answer = after_lookup(sender, client, std::move(hit), done);
            if (answer) done(std::move(answer->verdict), answer->source);
        });
    return std::nullopt;
}

std::optional<SenderVerifier::Immediate> CalloutVerifier::after_lookup(const SenderAddress& sender,
                                                                       const std::string& client,
                                                                       std::optional<CacheHit> hit,
                                                                       Done& done) {
    if (hit) {
        ++counters_.cache_hits;
        // Serve the cached positive and re-probe it in the background (refresh-ahead).
        if (hit->refresh_due && !flights_.contains(sender.address())) refresh(sender, client);
        return Immediate{{hit->verdict.cls, std::move(hit->verdict.reason)}, DecisionSource::cache};
    }
    // Joining a running probe costs no budget.
    if (auto it = flights_.find(sender.address()); it != flights_.end()) {
        ++counters_.joined;
        add_waiter(it->second, std::move(done));
        return std::nullopt;
    }
    // Admission comes before any DNS query or connection.
    std::weak_ptr<bool> alive = alive_;
    auto decision = budget_.admit_probe(sender.domain, sender.address(), client, false,
                                        [this, alive, sender, done](BudgetDecision d) mutable {
                                            if (alive.expired()) return;
                                            auto answer = after_admission(sender, d, done);
                                            if (answer)
                                                done(std::move(answer->verdict), answer->source);
                                        });
    if (!decision) return std::nullopt;
    return after_admission(sender, *decision, done);
}

std::optional<SenderVerifier::Immediate> CalloutVerifier::after_admission(
    const SenderAddress& sender, BudgetDecision d, Done& done) {
    if (d.cached) {
        // Stored by another node between our cache lookup and the admission.
        ++counters_.cache_hits;
        return Immediate{{d.cached->cls, d.cached->reason}, DecisionSource::cache};
    }
    if (d.in_flight_elsewhere) {
        // Another node probes this address: wait for its verdict within our reply budget.
        ++counters_.joined;
        auto it = flights_.find(sender.address());
        Flight& flight = it != flights_.end() ? it->second : flights_[sender.address()];
        bool first_waiter = it == flights_.end();
        if (first_waiter) {
            flight.sender = sender;
            flight.remote = true;
        }
        add_waiter(flight, std::move(done));
        // The prober's "stored" message travels on the pub/sub connection and can be handled
        // before this admission reply, when no flight was registered to receive it: look once
        // more, or this request would wait out the whole reply budget for nothing. (Runs from
        // the admission's Redis callback, so a hit answering at once is not a synchronous call.)
        if (first_waiter) on_stored_elsewhere(sender.domain, sender.address());
        return std::nullopt;
    }
    if (!d.admitted) {
        count_denial(d.denied_by);
        return Immediate{{VerdictClass::rate_limited, std::string(to_string(d.denied_by))},
                         DecisionSource::limit};
    }
    ++counters_.admitted;
    auto it = flights_.find(sender.address());
    if (it != flights_.end() && !it->second.remote) {
        // Another request started the probe while our admission was pending.
        budget_.release_probe(sender.domain, sender.address(), d.token);
        add_waiter(it->second, std::move(done));
        return std::nullopt;
    }
    add_waiter(start_flight(sender, false, d.token), std::move(done));
    return std::nullopt;
}

void CalloutVerifier::refresh(const SenderAddress& sender, const std::string& client) {
    // A refresh is a real probe and spends budget; over budget, the cached verdict is enough.
    std::weak_ptr<bool> alive = alive_;
    auto start = [this, alive, sender](BudgetDecision d) {
        if (alive.expired()) return;
        if (!d.admitted) {
            if (d.denied()) count_denial(d.denied_by);
            return;
        }
        ++counters_.admitted;
        if (flights_.contains(sender.address())) {
            budget_.release_probe(sender.domain, sender.address(), d.token);
            return;
        }
        start_flight(sender, true, d.token);
    };
    if (auto d = budget_.admit_probe(sender.domain, sender.address(), client, true, start)) {
        start(*d);
    }
}

void CalloutVerifier::on_stored_elsewhere(const std::string& domain, const std::string& address) {
    auto it = flights_.find(address);
    if (it == flights_.end() || !it->second.remote) return;
    auto finish = [this, address](std::optional<CacheHit> hit) {
        auto f = flights_.find(address);
        if (f == flights_.end() || !f->second.remote || !hit) return;
        Flight flight = std::move(f->second);
        flights_.erase(f);
        Verdict v{hit->verdict.cls, hit->verdict.reason};
        for (auto& w : flight.waiters) {
            w.budget.reset();
            w.done(v, DecisionSource::cache);
        }
    };
    if (auto now = cache_.peek(domain, address)) {
        finish(std::move(*now));
        return;
    }
    std::weak_ptr<bool> alive = alive_;
    cache_.lookup(domain, address, [alive, finish](std::optional<CacheHit> hit) {
        if (!alive.expired()) finish(std::move(hit));
    });
}

void CalloutVerifier::count_denial(BudgetKind kind) {
    switch (kind) {
        case BudgetKind::domain:
            ++counters_.denied_domain;
            break;
        case BudgetKind::client:
            ++counters_.denied_client;
            break;
        case BudgetKind::global:
            ++counters_.denied_global;
            break;
        case BudgetKind::mx:
            ++counters_.denied_mx;
            break;
    }
}

void CalloutVerifier::add_waiter(Flight& flight, Done done) {
    Waiter& w = flight.waiters.emplace_back();
    w.id = next_waiter_++;
    w.done = std::move(done);
    w.budget = std::make_unique<UvTimer>(loop_);
    w.budget->start(reply_timeout_, [this, address = flight.sender.address(), id = w.id] {
        on_budget_spent(address, id);
    });
}

CalloutVerifier::Flight& CalloutVerifier::start_flight(const SenderAddress& sender, bool refresh,
                                                       std::string token) {
    Flight& flight = flights_[sender.address()];
    flight.sender = sender;
    flight.id = next_flight_++;
    flight.refresh = refresh;
    flight.remote = false;
    flight.token = std::move(token);
    // Whether a recent probe saw the domain refuse its random local part as unknown: then a 2xx
    // counts even if this probe cannot repeat the check (the random local part is greylisted).
    std::weak_ptr<bool> alive = alive_;
    auto known = cache_.not_accept_all(
        sender.domain, [this, alive, address = sender.address(), id = flight.id](bool yes) {
            if (!alive.expired()) start_callout(address, id, yes);
        });
    if (known) start_callout(sender.address(), flight.id, *known);
    return flight;
}

void CalloutVerifier::start_callout(const std::string& address, uint64_t flight_id,
                                    bool not_accept_all) {
    auto it = flights_.find(address);
    if (it == flights_.end() || it->second.remote || it->second.id != flight_id) return;
    ClassifyContext ctx;
    ctx.domain_not_accept_all = not_accept_all;
    it->second.handle = callout_.start(
        it->second.sender, [this, address](CalloutReport r) { on_report(address, std::move(r)); },
        ctx);
}

// Keeps each piece of evidence at its scope: the verdict under the address or (domain-scoped)
// the domain, and what the probe learnt about the domain on the way as domain facts.
void CalloutVerifier::store_report(const SenderAddress& sender, const CalloutReport& report) {
    const std::string address = sender.address();
    const Verdict& v = report.verdict;
    CachedVerdict cached{v.cls, v.reason, WallClock::now(), decisive_reply(report), false, v.scope};
    cache_.store(sender.domain, address, cached);
    if (report.pushback) {
        // The server pushed back at the connection level and nothing else decided the probe:
        // leave the whole domain alone for limits.backoff_ttl.
        CachedVerdict fact{VerdictClass::policy_blocked,
                           "backoff: " + v.reason,
                           cached.probed_at,
                           cached.remote_reply,
                           true,
                           EvidenceScope::domain};
        cache_.store(sender.domain, address, fact);
    } else if (report.random.deferred && v.scope != EvidenceScope::domain) {
        // The random local part is greylisted: no sender of this domain can be `valid` until the
        // greylist delay has passed, so the others wait (cache.tempfail_ttl) without a probe.
        const Verdict& d = *report.random.deferred;
        cache_.store(sender.domain, address,
                     CachedVerdict{d.cls, d.reason, cached.probed_at, {}, false, d.scope});
    }
    if (report.random.refused_as_unknown)
        cache_.store_not_accept_all(sender.domain, cached.probed_at);
}

void CalloutVerifier::on_budget_spent(const std::string& address, uint64_t waiter_id) {
    auto it = flights_.find(address);
    if (it == flights_.end()) return;
    auto& waiters = it->second.waiters;
    for (auto w = waiters.begin(); w != waiters.end(); ++w) {
        if (w->id != waiter_id) continue;
        Done done = std::move(w->done);
        waiters.erase(w);  // the probe goes on; its verdict lands in the cache for the retry
        // Nobody waits for another node's probe any more: forget it (the retry asks again).
        if (it->second.remote && waiters.empty()) flights_.erase(it);
        done({VerdictClass::in_progress, "probe-running"}, DecisionSource::probe);
        return;
    }
}

void CalloutVerifier::on_report(const std::string& address, CalloutReport report) {
    auto it = flights_.find(address);
    if (it == flights_.end()) return;
    Flight flight = std::move(it->second);
    flights_.erase(it);

    if (report.verdict.cls == VerdictClass::rate_limited) ++counters_.denied_mx;
    store_report(flight.sender, report);
    // Released after the verdict is stored, so no other node probes in between.
    budget_.release_probe(flight.sender.domain, address, flight.token);
    if (observer_) observer_(flight.sender, report, flight.refresh);
    for (auto& w : flight.waiters) {
        w.budget.reset();
        w.done(report.verdict, DecisionSource::probe);
    }
}

}  // namespace calloutd
