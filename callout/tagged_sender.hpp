// Per-message sender tags (BATV, SRS, VERP) and the canonical key of the mailbox behind them.
//
// Some envelope senders change with every message although the mailbox does not: a BATV signer
// adds a dated signature to each message's return path, a forwarder's SRS address carries a
// hash and a timestamp, a mailing list encodes the recipient in its bounce address (VERP). Keyed
// by the address as given, every such message is a cache miss and costs a probe at the same
// server (Postfix's documentation warns that such senders "pollute the address verification
// cache"). calloutd still probes the address exactly as given (a BATV-enforcing server rejects
// the untagged form), but keeps the result under a canonical key, so the next message from the
// same mailbox hits the cache and the same single-flight marker.
//
// What may be shared under the canonical key is deliberately narrow: only evidence that speaks
// for every tag of the mailbox. A `valid` answer proves that the mailbox behind the tag exists;
// a rejection may be about this one tag (an expired BATV signature, a stale SRS timestamp, a
// forged hash), so `invalid` (and every other address verdict) stays under the address as
// given. A recognised tag can therefore make calloutd answer `valid` for a forged tag of a real
// mailbox (a missed rejection), never `invalid` for a good one (a wrong rejection).
//
// Forms recognised (prefixes case-insensitive; quoted local parts are never rewritten):
//   BATV, draft-levine-smtp-batv-01 "prvs=TAG=local"   -> local@domain
//   BATV as Microsoft signs it, "msprvs1=TAG=local"    -> local@domain
//   BATV as Barracuda signs it, "btv1==TAG==local"     -> local@domain
//     TAG is 4..64 letters and digits; `local` may itself be a VERP address (below).
//   SRS (Shevek's Sender Rewriting Scheme, libsrs2 and postsrsd), separator '=', '+' or '-':
//     "SRS0=HASH=TT=orig.domain=orig-local@fwd"             -> SRS0=orig.domain=orig-local@fwd
//     "SRS1=HASH=first.fwd==HASH=TT=orig.domain=orig-local@fwd"
//                                                     -> SRS1=first.fwd==orig.domain=orig-local@fwd
//     The original address inside is attacker-chosen text and is *not* taken for the mailbox:
//     the key stays a key of the forwarder's SRS namespace (its domain, the original domain and
//     local part), only the per-message hash and timestamp are dropped.
//   VERP with Postfix's default delimiters "+=" (Mailman, Postfix's own VERP, most list
//   managers): "list-bounces+rcpt=rcpt.domain"        -> list-bounces@domain
//   VERP as ezmlm writes it: "list-return-NUM-rcpt=rcpt.domain"  -> list-return@domain
//     The part after the delimiter must look like an encoded address (an '=' followed by a name
//     with a dot), so a plain sub-address ("alice+news") is left alone.
#pragma once

#include <string>
#include <string_view>

#include "callout/address.hpp"

namespace calloutd {

struct SenderKey {
    std::string key;        // the canonical address; the address as given when untagged
    std::string_view form;  // "batv", "srs0", "srs1", "verp", or "" (untagged)
    bool tagged() const { return !form.empty(); }
};

// The canonical cache key of `sender` (a parsed, normalised address).
SenderKey sender_key(const SenderAddress& sender);

}  // namespace calloutd
