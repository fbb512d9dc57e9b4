// The decision pipeline: skip rules, one verdict per message, verification, action.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "callout/address.hpp"
#include "callout/verdict.hpp"
#include "policy/request.hpp"
#include "policy/settings.hpp"
#include "storage/lru_map.hpp"

namespace calloutd {

// Where a verdict came from, as logged in the `source` field.
enum class DecisionSource { skip, cache, probe, limit };
std::string_view to_string(DecisionSource s);

struct Decision {
    Verdict verdict;
    std::string action;  // what is sent to the MTA
    DecisionSource source = DecisionSource::skip;
    bool repeat = false;  // repeated from an earlier request of the same message (instance)
};

// Verifies senders that passed the skip rules. Implemented by the callout engine; a verdict
// available at once is returned, otherwise `done` is called later (never from inside verify).
class SenderVerifier {
  public:
    using Done = std::function<void(Verdict, DecisionSource)>;
    // Makes `done` on demand: called at most once, only when the verdict is not available at
    // once, and only before verify_lazy() returns (it may refer to the caller's stack). Built
    // from a lambda capturing one pointer it fits std::function's inline storage, so a cached
    // answer allocates no callback.
    using MakeDone = std::function<Done()>;
    struct Immediate {
        Verdict verdict;
        DecisionSource source;
    };
    virtual ~SenderVerifier() = default;
    virtual std::optional<Immediate> verify(const PolicyRequest& req, Done done) = 0;
    // verify() with the callback made only when needed; the default makes it first.
    virtual std::optional<Immediate> verify_lazy(const PolicyRequest& req,
                                                 const MakeDone& make_done) {
        return verify(req, make_done());
    }
    // verify_lazy() with the sender already parsed: `sender` is parse_sender(req.sender), which
    // the Decider needed for the skip rules anyway. The default ignores it.
    // (An rvalue reference: the verifier moves from it only when it keeps the request.)
    virtual std::optional<Immediate> verify_parsed(const PolicyRequest& req, AddressParse&& sender,
                                                   const MakeDone& make_done) {
        (void)sender;
        return verify_lazy(req, make_done);
    }
    // verify_parsed() into the caller's verdict, which the caller keeps from one request to
    // the next: assigning into it reuses its strings' capacity, so a cached answer allocates
    // nothing. True when answered at once (`verdict` and `source` set); false when `done` will
    // be called. The default goes through verify_parsed().
    virtual bool verify_into(const PolicyRequest& req, AddressParse&& sender,
                             const MakeDone& make_done, Verdict& verdict, DecisionSource& source) {
        return take(verify_parsed(req, std::move(sender), make_done), verdict, source);
    }

  protected:
    // verify_into()'s result from an answer given at once, or false for none.
    static bool take(std::optional<Immediate> answer, Verdict& verdict, DecisionSource& source) {
        if (!answer) return false;
        verdict = std::move(answer->verdict);
        source = answer->source;
        return true;
    }
};

class Decider {
  public:
    using Clock = std::chrono::steady_clock;
    using Done = std::function<void(Decision)>;
    using MakeDone = std::function<Done()>;  // as SenderVerifier::MakeDone

    // `verifier` may be null: then every request that passes the skip rules is answered
    // skipped/no-engine rather than pretending to verify.
    Decider(PolicySettings settings, SenderVerifier* verifier);

    // Decides at once when it can (returned), otherwise calls `done` later. `done` is never
    // called from inside decide().
    std::optional<Decision> decide(const PolicyRequest& req, Done done);
    // The same, with `done` made only when the decision is not available at once (the policy
    // connection's path: a cached answer allocates no callback). `now` is the caller's reading
    // of Clock when the request arrived (the per-message memo's clock: its entries live an
    // hour), so a request costs no clock read of its own here.
    std::optional<Decision> decide_lazy(const PolicyRequest& req, const MakeDone& make_done,
                                        Clock::time_point now);
    // decide_lazy() into the caller's decision, kept from one request to the next: assigning
    // into it reuses its strings' capacity, so a cached answer allocates nothing. True when
    // decided at once (`out` set); false when `done` will be called.
    bool decide_into(const PolicyRequest& req, const MakeDone& make_done, Clock::time_point now,
                     Decision& out);
    void update_settings(PolicySettings settings) { settings_ = std::move(settings); }
    void set_verifier(SenderVerifier* verifier) { verifier_ = verifier; }
    const PolicySettings& settings() const { return settings_; }

  private:
    // What a message's later requests repeat: the decision for one sender.
    struct Memo {
        std::string sender;
        Decision decision;
    };
    // Remembers the decision under `instance` for `sender` when the source calls for it
    // (instance empty: never).
    Decision finish(const std::string& instance, const std::string& sender, Verdict verdict,
                    DecisionSource source);
    // The same for a decision whose verdict and source are already in `d`: sets the rest.
    void complete(Decision& d, const std::string& instance, const std::string& sender);

    PolicySettings settings_;
    SenderVerifier* verifier_;
    AddressParse sender_;  // decide_into()'s parsed sender, reused
    // One verdict per message: Postfix asks once per recipient; later requests repeat it. Keyed
    // by the instance alone (looked up with the request's own string, nothing built), the
    // sender kept beside the decision: a new MAIL FROM under a reused instance is decided
    // afresh and replaces the entry.
    LruMap<std::string, Memo> by_instance_;
};

}  // namespace calloutd
