// Sender address syntax (RFC 5321 Mailbox, RFC 6531 UTF-8 local parts) and the random local
// part used by the accept-all check: nothing reaches "RCPT TO:<...>" that is unsafe to write.
#pragma once

#include <optional>
#include <random>
#include <string>
#include <string_view>

namespace calloutd {

struct SenderAddress {
    std::string local;   // wire form as written: dot-atom, or quoted string with its escapes
    std::string domain;  // A-label form, lower case, no trailing dot
    // The domain as U-labels (lower case, NFC) when it was written with any; empty otherwise.
    std::string domain_unicode;
    // local@domain: the address's one name in caches, logs and budgets, and what goes between
    // the angle brackets of RCPT TO for an ASCII local part (no SMTPUTF8 needed).
    std::string address() const;
    // True when the local part is UTF-8: the address exists only under SMTPUTF8 (RFC 6531).
    bool needs_smtputf8() const;
    // What RCPT TO carries: address(), except that a UTF-8 local part keeps the domain in the
    // form it was written in (U-labels if any), as the internationalised address it is; a
    // server may know its domain only in that form.
    std::string wire_address() const;
};

// Either an address or why it was refused: "bad-address: <why>", "bad-domain: <why>" (the
// domain cannot be mapped to A-labels: IDNA) or "address-literal".
struct AddressParse {
    std::optional<SenderAddress> address;
    std::string refusal;
    explicit operator bool() const { return address.has_value(); }
};

inline constexpr size_t kMaxLocalPartOctets = 64;  // RFC 5321 4.5.3.1.1
inline constexpr size_t kMaxDomainOctets = 253;    // 255 on the wire: length octets + root
inline constexpr size_t kMaxAddressOctets = 254;   // RFC 5321 path 256 minus the brackets
inline constexpr size_t kMaxLabelOctets = 63;

// Parses a sender as Postfix/Exim hand it over (no angle brackets). Never throws.
AddressParse parse_sender(std::string_view text);
// The same into `out`, which the caller keeps from one sender to the next: a plain ASCII sender
// is assigned into its strings, reusing their capacity (no allocation once they are large
// enough).
void parse_sender_into(std::string_view text, AddressParse& out);
// The same without the one-pass shortcut for plain ASCII senders that parse_sender() tries
// first: the reference the shortcut is tested against.
AddressParse parse_sender_fully(std::string_view text);

// The one normalisation of a domain that every decision uses (skip rules, lists, cache keys,
// the probe itself): UTS-46 mapping by libidn2 (non-transitional), so full-width letters, an
// ideographic full stop (U+3002) as a dot and a soft hyphen all map as a resolver would map
// them; then lower-case A-labels, checked as an RFC 5321 sub-domain. No trailing dot.
struct DomainParse {
    std::string domain;   // empty when refused
    std::string refusal;  // "bad-domain: <why>" (IDNA mapping failed) or "bad-address: <why>"
    explicit operator bool() const { return refusal.empty(); }
    // The domain is not a name at all after mapping: reported as skipped reason bad-domain.
    bool idna_failed() const { return refusal.starts_with("bad-domain"); }
};
DomainParse parse_domain(std::string_view text);
// The same without the one-pass shortcut for plain LDH domains (the shortcut's reference).
DomainParse parse_domain_fully(std::string_view text);

inline constexpr std::string_view kRandomLocalPrefix = "calloutd-check-";
inline constexpr size_t kRandomLocalLength = 12;

// "calloutd-check-" + 12 characters of [a-z0-9]; deterministic for a given engine state.
template <class RNG>
std::string random_local_part(RNG& rng) {
    static constexpr std::string_view kAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
    std::uniform_int_distribution<size_t> pick(0, kAlphabet.size() - 1);
    std::string out(kRandomLocalPrefix);
    for (size_t i = 0; i < kRandomLocalLength; ++i) out += kAlphabet[pick(rng)];
    return out;
}

}  // namespace calloutd
