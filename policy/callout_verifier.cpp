// Verification pipeline for one sender: syntax -> cache -> single-flight probe -> verdict.
#include "policy/callout_verifier.hpp"

#include <set>

#include "callout/tagged_sender.hpp"
#include "util/ip_net.hpp"

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

// What a tagged sender may take from its key: a valid verdict or a domain fact.
std::optional<CacheHit> valid_only(std::optional<CacheHit> hit) {
    if (hit && !hit->domain_fact && hit->verdict.cls != VerdictClass::valid) return std::nullopt;
    return hit;
}

// Whether a probe's verdict about one address may answer a request about another address with
// the same key (another tag of the same mailbox): only evidence that is not about the tag.
bool speaks_for_every_tag(const Verdict& v) {
    return v.cls == VerdictClass::valid || v.cls == VerdictClass::rate_limited ||
           v.scope == EvidenceScope::domain;
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
    // The cache may outlive us (the daemon lets the releases below reach Redis first).
    cache_.set_listener({});
    for (auto& [key, flight] : flights_) {
        callout_.cancel(flight.handle);
        budget_.release_probe(flight.sender.domain, key, flight.token);
    }
}

std::string CalloutVerifier::client_key(const std::string& client_address) const {
    if (client_address.empty()) return "unknown";
    auto ip = IpAddress::parse(client_address);
    if (!ip) return client_address;
    IpAddress a = ip->unmapped();
    if (a.is_v4()) return a.to_string();
    return Cidr(a.masked(client_ipv6_prefix_), client_ipv6_prefix_).to_string();
}

std::optional<SenderVerifier::Immediate> CalloutVerifier::verify(const PolicyRequest& req,
                                                                 Done done) {
    return verify_lazy(req, [&done] { return std::move(done); });
}

std::optional<SenderVerifier::Immediate> CalloutVerifier::verify_lazy(const PolicyRequest& req,
                                                                      const MakeDone& make_done) {
    return verify_parsed(req, parse_sender(req.sender), make_done);
}

std::optional<SenderVerifier::Immediate> CalloutVerifier::verify_parsed(const PolicyRequest& req,
                                                                        AddressParse&& parsed,
                                                                        const MakeDone& make_done) {
    Immediate answer;
    if (!verify_into(req, std::move(parsed), make_done, answer.verdict, answer.source))
        return std::nullopt;
    return answer;
}

bool CalloutVerifier::verify_into(const PolicyRequest& req, AddressParse&& parsed,
                                  const MakeDone& make_done, Verdict& verdict,
                                  DecisionSource& source) {
    auto answered = [&](std::optional<Immediate> answer) {
        return take(std::move(answer), verdict, source);
    };
    if (!parsed) {
        // Never probed: nothing from this sender string may reach the SMTP wire.
        return answered(Immediate{{VerdictClass::skipped, parsed.refusal}, DecisionSource::skip});
    }
    // Built in a reused buffer: every cached answer passes here.
    std::string& address = address_;
    address.assign(parsed.address->local).append(1, '@').append(parsed.address->domain);
    // The common case answers from memory at once. A hit of the address as given (or of a
    // domain fact) that is not due for a refresh needs nothing else: no key, no request, no
    // completion callback, and (assigned into reused strings) no allocation.
    using PeekResult = VerdictCache::PeekResult;
    PeekResult now = cache_.peek_into(parsed.address->domain, address, hit_);
    if (now == PeekResult::hit && !hit_.refresh_due) {
        ++counters_.cache_hits;
        verdict.cls = hit_.verdict.cls;
        verdict.reason = hit_.verdict.reason;
        verdict.scope = EvidenceScope::address;
        source = DecisionSource::cache;
        return true;
    }
    std::string key = sender_key(*parsed.address).key;
    Request request{{std::move(*parsed.address), std::move(key), req.client_address}, {}};
    const Asked& asked = request.asked;
    // A hit due for a refresh, or a miss of an untagged sender, is answered at once too; the
    // completion callback is made only for a miss.
    if (now == PeekResult::hit) return answered(after_lookup(request, hit_));
    if (now == PeekResult::miss && asked.key == address) {
        request.done = make_done();
        return answered(after_lookup(request, std::nullopt));
    }
    request.done = make_done();
    auto pending = std::make_shared<Request>(std::move(request));
    std::weak_ptr<bool> alive = alive_;
    auto found = find(pending->asked.sender.domain, address, pending->asked.key,
                      [this, alive, pending](std::optional<CacheHit> hit) {
                          if (alive.expired()) return;
                          answer(*pending, after_lookup(*pending, std::move(hit)));
                      });
    if (found) return answered(after_lookup(*pending, std::move(*found)));
    return false;
}

// From a callback: a stage that answered at once is answered through the request's callback.
void CalloutVerifier::answer(Request& req, std::optional<Immediate> answer) {
    if (answer) req.done(std::move(answer->verdict), answer->source);
}

// The cached answer for one sender: a domain fact or the verdict of the address as given, then,
// for a tagged sender, a valid verdict kept under its key (find_by_key).
VerdictCache::Immediate CalloutVerifier::find(const std::string& domain, const std::string& address,
                                              const std::string& key,
                                              VerdictCache::LookupDone done) {
    if (auto now = cache_.peek(domain, address)) {
        if (*now || key == address) return now;
        return find_by_key(domain, key, std::move(done));
    }
    std::weak_ptr<bool> alive = alive_;
    cache_.lookup(domain, address,
                  [this, alive, domain, address, key, done](std::optional<CacheHit> hit) mutable {
                      if (alive.expired()) return;
                      if (hit || key == address) {
                          done(std::move(hit));
                          return;
                      }
                      // From a lookup callback, so answering at once is not synchronous.
                      if (auto now = find_by_key(domain, key, done)) done(std::move(*now));
                  });
    return std::nullopt;
}

// Anything but a valid verdict (or a domain fact) under a tagged sender's key may be about
// another tag, or for BATV about the untagged address, and is not taken.
VerdictCache::Immediate CalloutVerifier::find_by_key(const std::string& domain,
                                                     const std::string& key,
                                                     VerdictCache::LookupDone done) {
    if (auto now = cache_.peek(domain, key)) {
        return VerdictCache::Immediate(std::in_place, valid_only(std::move(*now)));
    }
    std::weak_ptr<bool> alive = alive_;
    cache_.lookup(domain, key, [alive, done = std::move(done)](std::optional<CacheHit> hit) {
        if (!alive.expired()) done(valid_only(std::move(hit)));
    });
    return std::nullopt;
}

std::optional<SenderVerifier::Immediate> CalloutVerifier::after_lookup(
    Request& req, std::optional<CacheHit> hit) {
    const Asked& asked = req.asked;
    if (hit) {
        ++counters_.cache_hits;
        // Serve the cached positive and re-probe it in the background (refresh-ahead).
        if (hit->refresh_due && !flights_.contains(asked.key) &&
            !remote_waits_.contains(asked.key)) {
            refresh(asked);
        }
        return Immediate{{hit->verdict.cls, std::move(hit->verdict.reason)}, DecisionSource::cache};
    }
    // Joining a running probe, ours or another node's, costs no budget.
    if (auto it = flights_.find(asked.key); it != flights_.end()) {
        ++counters_.joined;
        add_waiter(it->second.waiters, asked.key, req);
        return std::nullopt;
    }
    if (auto it = remote_waits_.find(asked.key); it != remote_waits_.end()) {
        ++counters_.joined;
        add_waiter(it->second.waiters, asked.key, req);
        return std::nullopt;
    }
    // Admission comes before any DNS query or connection. For a tagged sender the verdict
    // under its key may be about another tag, so it is no reason to refuse the probe. An
    // admission that answers later gets the request; one that answers at once leaves it here.
    auto pending = std::make_shared<Request>(std::move(req));
    std::weak_ptr<bool> alive = alive_;
    auto decision = budget_.admit_probe(
        pending->asked.sender.domain, pending->asked.key, client_key(pending->asked.client),
        pending->asked.tagged(), [this, alive, pending](BudgetDecision d) {
            if (alive.expired()) return;
            answer(*pending, after_admission(*pending, std::move(d)));
        });
    if (!decision) return std::nullopt;
    req = std::move(*pending);
    return after_admission(req, std::move(*decision));
}

std::optional<SenderVerifier::Immediate> CalloutVerifier::after_admission(Request& req,
                                                                          BudgetDecision d) {
    const Asked& asked = req.asked;
    if (d.cached) {
        // Stored by another node between our cache lookup and the admission.
        ++counters_.cache_hits;
        return Immediate{{d.cached->cls, d.cached->reason}, DecisionSource::cache};
    }
    if (d.in_flight_elsewhere) {
        ++counters_.joined;
        // Our own probe of this key started while the admission was on its way: join it.
        if (auto it = flights_.find(asked.key); it != flights_.end()) {
            add_waiter(it->second.waiters, asked.key, req);
            return std::nullopt;
        }
        // Another node probes this key: wait for its verdict within our reply budget.
        std::string domain = asked.sender.domain;
        std::string address = asked.sender.address();
        auto [wait, first_waiter] = remote_waits_.try_emplace(asked.key);
        add_waiter(wait->second.waiters, wait->first, req);
        // The prober's "stored" message travels on the pub/sub connection and can be handled
        // before this admission reply, when no wait was registered to receive it: look once
        // more, or this request would wait out the whole reply budget for nothing. (Runs from
        // the admission's Redis callback, so a hit answering at once is not a synchronous call.)
        if (first_waiter) on_stored_elsewhere(domain, address);
        return std::nullopt;
    }
    if (!d.admitted) {
        count_denial(d.denied_by);
        return Immediate{{VerdictClass::rate_limited, std::string(to_string(d.denied_by))},
                         DecisionSource::limit};
    }
    ++counters_.admitted;
    if (auto it = flights_.find(asked.key); it != flights_.end()) {
        // Another request started the probe while our admission was pending.
        budget_.release_probe(asked.sender.domain, asked.key, d.token);
        add_waiter(it->second.waiters, asked.key, req);
        return std::nullopt;
    }
    Flight& flight = start_flight(asked, false, std::move(d.token));
    add_waiter(flight.waiters, flight.key, req);
    return std::nullopt;
}

void CalloutVerifier::refresh(const Asked& asked) {
    // A refresh is a real probe and spends budget; over budget, the cached verdict is enough.
    std::weak_ptr<bool> alive = alive_;
    auto start = [this, alive, asked](BudgetDecision d) {
        if (alive.expired()) return;
        if (!d.admitted) {
            if (d.denied()) count_denial(d.denied_by);
            return;
        }
        ++counters_.admitted;
        if (flights_.contains(asked.key) || remote_waits_.contains(asked.key)) {
            budget_.release_probe(asked.sender.domain, asked.key, d.token);
            return;
        }
        start_flight(asked, true, std::move(d.token));
    };
    if (auto d = budget_.admit_probe(asked.sender.domain, asked.key, client_key(asked.client), true,
                                     start)) {
        start(*d);
    }
}

void CalloutVerifier::on_stored_elsewhere(const std::string& domain, const std::string& address) {
    // Published under the address stored: a key, or an address as given; waits go by key.
    AddressParse parsed = parse_sender(address);
    std::string key = parsed ? sender_key(*parsed.address).key : address;
    auto it = remote_waits_.find(key);
    if (it == remote_waits_.end()) return;
    // Each waiter asked about its own address: answer those the cache answers now.
    std::set<std::string> asked;
    for (const auto& w : it->second.waiters) asked.insert(w.address);
    for (const auto& one : asked) {
        auto answer = [this, key, one](std::optional<CacheHit> hit) {
            answer_remote(key, one, std::move(hit));
        };
        if (auto now = find(domain, one, key, answer)) answer(std::move(*now));
    }
}

void CalloutVerifier::answer_remote(const std::string& key, const std::string& address,
                                    std::optional<CacheHit> hit) {
    if (!hit) return;
    auto wait = remote_waits_.find(key);
    if (wait == remote_waits_.end()) return;
    std::list<Waiter> answered;
    auto& waiters = wait->second.waiters;
    for (auto w = waiters.begin(); w != waiters.end();) {
        auto next = std::next(w);
        if (w->address == address) answered.splice(answered.end(), waiters, w);
        w = next;
    }
    if (waiters.empty()) remote_waits_.erase(wait);
    Verdict v{hit->verdict.cls, hit->verdict.reason};
    for (auto& w : answered) {
        w.reply_timer.reset();
        w.done(v, DecisionSource::cache);
    }
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
        case BudgetKind::provider:
            ++counters_.denied_provider;
            break;
    }
}

// The request waits in `waiters` (those of the flight or remote wait for `key`) until the probe
// answers it or its reply timer runs out.
void CalloutVerifier::add_waiter(std::list<Waiter>& waiters, const std::string& key, Request& req) {
    Waiter& w = waiters.emplace_back();
    w.id = next_waiter_++;
    w.address = req.asked.sender.address();
    w.done = std::move(req.done);
    w.reply_timer = std::make_unique<UvTimer>(loop_);
    w.reply_timer->start(reply_timeout_, [this, key, id = w.id] { on_reply_timeout(key, id); });
}

// A new local probe of `asked`; requests that were waiting for another node's probe of the same
// key are answered by this one.
CalloutVerifier::Flight& CalloutVerifier::start_flight(const Asked& asked, bool refresh,
                                                       ProbeToken token) {
    Flight& flight = flights_[asked.key];
    flight.sender = asked.sender;
    flight.key = asked.key;
    flight.id = next_flight_++;
    flight.refresh = refresh;
    flight.token = std::move(token);
    if (auto wait = remote_waits_.find(asked.key); wait != remote_waits_.end()) {
        flight.waiters.splice(flight.waiters.end(), wait->second.waiters);
        remote_waits_.erase(wait);
    }
    // Whether a recent probe saw the domain refuse its random local part as unknown: then a 2xx
    // counts even if this probe cannot repeat the check (the random local part is greylisted).
    std::weak_ptr<bool> alive = alive_;
    auto known = cache_.not_accept_all(asked.sender.domain,
                                       [this, alive, key = asked.key, id = flight.id](bool yes) {
                                           if (!alive.expired()) start_callout(key, id, yes);
                                       });
    if (known) start_callout(asked.key, flight.id, *known);
    return flight;
}

void CalloutVerifier::start_callout(const std::string& key, uint64_t flight_id,
                                    bool not_accept_all) {
    auto it = flights_.find(key);
    if (it == flights_.end() || it->second.id != flight_id) return;
    ClassifyContext ctx;
    ctx.domain_not_accept_all = not_accept_all;
    it->second.handle = callout_.start(
        it->second.sender, [this, key](CalloutReport r) { on_report(key, std::move(r)); }, ctx);
}

// Keeps each piece of evidence at its scope: the verdict under the address or (domain-scoped)
// the domain, and what the probe learnt about the domain on the way as domain facts.
void CalloutVerifier::store_report(const Flight& flight, const CalloutReport& report) {
    const std::string& domain = flight.sender.domain;
    const std::string address = flight.sender.address();
    const Verdict& v = report.verdict;
    CachedVerdict cached{v.cls, v.reason, WallClock::now(), decisive_reply(report), false, v.scope};
    // `valid` speaks for every tag of the mailbox and is kept under the key; anything else
    // about the address only under the address as probed.
    cache_.store(domain, cached.cls == VerdictClass::valid ? flight.key : address, cached);
    if (report.pushback) {
        // The server pushed back at the connection level and nothing else decided the probe:
        // leave the whole domain alone for limits.backoff_ttl.
        CachedVerdict fact{VerdictClass::policy_blocked,
                           "backoff: " + v.reason,
                           cached.probed_at,
                           cached.remote_reply,
                           true,
                           EvidenceScope::domain};
        cache_.store(domain, address, fact);
    } else if (report.random.deferred && v.scope != EvidenceScope::domain) {
        // The random local part is greylisted: no sender of this domain can be `valid` until the
        // greylist delay has passed, so the others wait (cache.tempfail_ttl) without a probe.
        const Verdict& d = *report.random.deferred;
        cache_.store(domain, address,
                     CachedVerdict{d.cls, d.reason, cached.probed_at, {}, false, d.scope});
    }
    if (report.random.refused_as_unknown) cache_.store_not_accept_all(domain, cached.probed_at);
    if (flight.refresh) {
        // A refresh that did not take the place of the valid verdict under the key failed:
        // the stale valid is still served, and the next refresh waits cache.tempfail_ttl.
        bool replaced = replaces_valid(cached) &&
                        (flight.key == address || cached.cls != VerdictClass::invalid);
        if (!replaced) cache_.note_failed_refresh(domain, flight.key);
    }
}

void CalloutVerifier::on_reply_timeout(const std::string& key, uint64_t waiter_id) {
    // The waiter is in the flight of `key`, or in the remote wait (a remote wait may have become
    // a flight meanwhile, see start_flight).
    auto take = [waiter_id](std::list<Waiter>& waiters) -> std::optional<Done> {
        for (auto w = waiters.begin(); w != waiters.end(); ++w) {
            if (w->id != waiter_id) continue;
            Done done = std::move(w->done);
            waiters.erase(w);  // the probe goes on; its verdict lands in the cache for the retry
            return done;
        }
        return std::nullopt;
    };
    std::optional<Done> done;
    if (auto flight = flights_.find(key); flight != flights_.end()) {
        done = take(flight->second.waiters);
    } else if (auto wait = remote_waits_.find(key); wait != remote_waits_.end()) {
        done = take(wait->second.waiters);
        // Nobody waits for another node's probe any more: forget it (the retry asks again).
        if (wait->second.waiters.empty()) remote_waits_.erase(wait);
    }
    if (done) (*done)({VerdictClass::in_progress, "probe-running"}, DecisionSource::probe);
}

void CalloutVerifier::on_report(const std::string& key, CalloutReport report) {
    auto it = flights_.find(key);
    if (it == flights_.end()) return;
    Flight flight = std::move(it->second);
    flights_.erase(it);
    const std::string& domain = flight.sender.domain;
    std::string address = flight.sender.address();

    if (report.verdict.cls == VerdictClass::rate_limited) {
        count_denial(report.verdict.reason == to_string(BudgetKind::provider) ? BudgetKind::provider
                                                                              : BudgetKind::mx);
    }
    store_report(flight, report);
    // Released after the verdict is stored, so no other node probes in between.
    budget_.release_probe(domain, key, flight.token);
    if (observer_) observer_(flight.sender, report, flight.refresh);
    // A skip-mx ending sent no probe: logged as a skip, like the skip rules. (A skipped
    // smtputf8-unsupported did talk to the server: a probe.)
    DecisionSource source = report.verdict.cls == VerdictClass::skipped && report.attempts.empty()
                                ? DecisionSource::skip
                                : DecisionSource::probe;
    for (auto& w : flight.waiters) {
        w.reply_timer.reset();
        if (w.address == address || speaks_for_every_tag(report.verdict)) {
            w.done(report.verdict, source);
        } else {
            // The verdict may be about the probed tag only; the retry probes this address.
            w.done({VerdictClass::in_progress, "probe-running"}, DecisionSource::probe);
        }
    }
}

}  // namespace calloutd
