// Callout orchestration: DNS -> guard every address -> probe allowed MX hosts -> classify.
#include "callout/callout.hpp"

#include <unistd.h>

#include "callout/classifier.hpp"
#include "callout/random_local_part.hpp"
#include "callout/tls_context.hpp"
#include "util/ascii.hpp"

namespace calloutd {

namespace {

std::string local_host_name() {
    char buf[256] = {};
    if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
    return buf;
}

}  // namespace

std::unique_ptr<Callout> Callout::create(uv_loop_t* loop, CalloutOptions options,
                                         std::string& error) {
    auto dns = DnsResolver::create(loop, options.dns, error);
    if (!dns) return nullptr;
    // One SSL_CTX for every probe of this configuration.
    if (options.probe.tls != TlsMode::none && !options.probe.tls_context) {
        options.probe.tls_context = TlsContext::create(error);
        if (!options.probe.tls_context) {
            error = "TLS: " + error;
            return nullptr;
        }
    }
    if (options.probe.helo_name.empty()) options.probe.helo_name = local_host_name();
    if (options.random_secret.empty()) options.random_secret = host_random_secret();
    return std::make_unique<Callout>(Key{}, loop, std::move(options), std::move(dns));
}

Callout::Callout(Key, uv_loop_t* loop, CalloutOptions options, std::unique_ptr<DnsResolver> dns)
    : loop_(loop),
      options_(std::move(options)),
      dns_(std::move(dns)),
      guard_(options_.allow_networks, options_.own_addresses),
      canary_(*dns_, options_.dns_canary, options_.canary_interval) {}

Callout::~Callout() {
    for (auto& [h, op] : ops_) {
        if (op.dns != 0) dns_->cancel(op.dns);
        if (op.probe) op.probe->cancel();
    }
}

std::string Callout::random_local_part_for(const std::string& domain) const {
    return stable_random_local_part(options_.random_secret, domain,
                                    utc_day(std::chrono::system_clock::now()));
}

Callout::Handle Callout::start(const SenderAddress& sender, Done done, ClassifyContext ctx) {
    Handle h = next_++;
    Op& op = ops_[h];
    op.sender = sender;
    op.done = std::move(done);
    op.ctx = ctx;
    op.started = std::chrono::steady_clock::now();
    // The resolver never calls back synchronously, so `op` is complete before on_mx runs.
    op.dns =
        dns_->resolve_mx(sender.domain, [this, h](MxResolution mx) { on_mx(h, std::move(mx)); });
    return h;
}

void Callout::cancel(Handle h) {
    auto it = ops_.find(h);
    if (it == ops_.end()) return;
    if (it->second.dns != 0) dns_->cancel(it->second.dns);
    if (it->second.probe) it->second.probe->cancel();
    ops_.erase(it);
}

void Callout::on_mx(Handle h, MxResolution mx) {
    auto it = ops_.find(h);
    if (it == ops_.end()) return;
    Op& op = it->second;
    op.dns = 0;
    op.report.mx = mx;
    if (mx.status == MxResolution::Status::no_mail_domain) {
        // "Nothing there" is only believed from a resolver that can resolve the canary; a null
        // MX (a record that exists) and a malformed name need no such trust.
        if (mx.reason == "nxdomain" || mx.reason == "no-mx-no-address") {
            if (auto healthy = canary_.fresh_state()) {
                on_no_mail_domain(h, *healthy);
            } else {
                canary_.after_check([this, h](bool ok) { on_no_mail_domain(h, ok); });
            }
            return;
        }
        finish(h, {VerdictClass::no_mail_domain, "dns " + mx.reason, EvidenceScope::domain});
        return;
    }
    if (mx.status == MxResolution::Status::tempfail) {
        finish(h, {VerdictClass::tempfail, "dns " + mx.reason});
        return;
    }
    if (mx_filter_) {
        for (const auto& host : mx.hosts) {
            std::string name = ascii_lower(host.name);
            if (!name.empty() && name.back() == '.') name.pop_back();
            if (!mx_filter_(name)) continue;
            op.report.skipped_mx = name;
            finish(h, {VerdictClass::skipped, "skip-mx", EvidenceScope::domain});
            return;
        }
    }
    // One address per MX host, the first the guard allows (IPv4 before IPv6), in MX order.
    std::vector<ProbeTarget> targets;
    for (const auto& host : mx.hosts) {
        for (const auto& addr : host.addresses) {
            auto ip = IpAddress::parse(addr);
            if (!ip) continue;
            if (auto why = guard_.refusal(*ip)) {
                op.report.refused.emplace_back(addr, *why);
                continue;
            }
            targets.push_back({host.name, addr});
            break;
        }
    }
    if (targets.empty()) {
        // Every MX address the domain publishes is one we must not connect to: a DNS fact.
        finish(h, {VerdictClass::policy_blocked, "target-not-allowed", EvidenceScope::domain});
        return;
    }
    if (targets.size() > options_.max_mx) targets.resize(options_.max_mx);
    op.probe = SmtpProbe::create(loop_, options_.probe);
    if (budget_ != nullptr) {
        // Admission per host right before connecting: a backup MX that is never contacted
        // spends none of its budget.
        TargetBudget* budget = budget_;
        std::weak_ptr<bool> alive = alive_;
        op.probe->set_gate(
            [this, h, budget, alive](const ProbeTarget& t, std::function<void(bool)> done) {
                budget->admit(t, [this, h, alive, budget, t,
                                  done = std::move(done)](TargetAdmission admission) {
                    // An asynchronous budget may answer after this Callout is gone
                    // (then the budget is gone with it), or after this callout was
                    // cancelled (then the probe no longer listens and the slot is
                    // given back here).
                    if (alive.expired()) return;
                    auto it = ops_.find(h);
                    if (it == ops_.end()) {
                        if (admission.admitted) budget->release(t);
                        return;
                    }
                    if (!admission.admitted) {
                        ++it->second.mx_denied;
                        it->second.denied_by = std::move(admission.denied_by);
                    }
                    done(admission.admitted);
                });
            },
            [budget](const ProbeTarget& t) { budget->release(t); });
    }
    op.probe->start(std::move(targets), op.sender.wire_address(),
                    random_local_part_for(op.sender.domain),
                    [this, h](ProbeResult r) { on_probe(h, std::move(r)); });
}

void Callout::on_no_mail_domain(Handle h, bool canary_healthy) {
    auto it = ops_.find(h);
    if (it == ops_.end()) return;  // cancelled while the canary was being checked
    const std::string& why = it->second.report.mx.reason;
    if (canary_healthy) {
        finish(h, {VerdictClass::no_mail_domain, "dns " + why, EvidenceScope::domain});
        return;
    }
    finish(h, {VerdictClass::tempfail, "dns-unhealthy: " + why + " not believed, canary " +
                                           canary_.name() + " does not resolve (" +
                                           canary_.reason() + ")"});
}

void Callout::on_probe(Handle h, ProbeResult result) {
    auto it = ops_.find(h);
    if (it == ops_.end()) return;
    Verdict v = classify(result.attempts, it->second.ctx);
    if (result.attempts.empty() && it->second.mx_denied > 0) {
        // Every MX host was over a budget: named after the one that refused last.
        const std::string& by = it->second.denied_by;
        v = {VerdictClass::rate_limited, by.empty() ? std::string("mx") : by};
    }
    // Only MX-host-scoped evidence (connection-level push-back) backs off an MX host.
    for (const auto& a : result.attempts) {
        if (pushes_back(a) && budget_ != nullptr) budget_->pushed_back(a.address);
    }
    // Back off from the domain only when the push-back decided the probe: no server gave a
    // real answer about the address.
    if (v.scope == EvidenceScope::mx_host) it->second.report.pushback = true;
    it->second.report.random = random_local_part_evidence(result.attempts);
    it->second.report.attempts = std::move(result.attempts);
    it->second.probe.reset();
    finish(h, std::move(v));
}

void Callout::finish(Handle h, Verdict verdict) {
    auto it = ops_.find(h);
    Op op = std::move(it->second);
    ops_.erase(it);
    op.report.verdict = std::move(verdict);
    op.report.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - op.started);
    if (op.done) op.done(std::move(op.report));
}

}  // namespace calloutd
