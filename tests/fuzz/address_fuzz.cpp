// Sender address parser and domain normalisation (callout/address.hpp): quoted local parts,
// UTF-8, IDN. Whatever it accepts is written into "RCPT TO:<...>", so it must be safe on the
// wire, within RFC 5321's lengths, a lower-case A-label domain, and parse again to itself.
#include <string>

#include "callout/address.hpp"
#include "fuzz/fuzz_target.hpp"

namespace {

// The domain as DNS and the SMTP line see it: LDH labels (A-labels), lower case, bounded.
void check_domain(const std::string& domain, const std::string& why) {
    FUZZ_CHECK(!domain.empty() && domain.size() <= calloutd::kMaxDomainOctets, why);
    std::size_t label = 0;
    for (std::size_t i = 0; i <= domain.size(); ++i) {
        if (i == domain.size() || domain[i] == '.') {
            FUZZ_CHECK(label >= 1 && label <= calloutd::kMaxLabelOctets, why);
            label = 0;
            continue;
        }
        char c = domain[i];
        FUZZ_CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_', why);
        ++label;
    }
}

void check_wire_safe(const calloutd::SenderAddress& a, const std::string& input) {
    const std::string addr = a.address();
    const std::string why = "input [" + input + "] -> [" + addr + "]";
    FUZZ_CHECK(!a.local.empty(), why);
    FUZZ_CHECK(a.local.size() <= calloutd::kMaxLocalPartOctets, why);
    FUZZ_CHECK(addr.size() <= calloutd::kMaxAddressOctets, why);
    bool quoted = a.local.front() == '"';
    for (std::size_t i = 0; i < addr.size(); ++i) {
        auto u = static_cast<unsigned char>(addr[i]);
        FUZZ_CHECK(u >= 0x20 && u != 0x7f, why);  // no CR, LF, NUL or other controls
        bool in_quotes = quoted && i < a.local.size();
        if (!in_quotes) FUZZ_CHECK(u != ' ' && u != '<' && u != '>', why);
    }
    check_domain(a.domain, why);
}

}  // namespace

CALLOUTD_FUZZ_TARGET(address) {
    std::string input(reinterpret_cast<const char*>(data), size);
    auto parsed = calloutd::parse_sender(input);
    // The one-pass shortcut for plain senders answers exactly as the full parse does.
    auto full = calloutd::parse_sender_fully(input);
    FUZZ_CHECK(parsed.refusal == full.refusal,
               input + ": " + parsed.refusal + " / " + full.refusal);
    FUZZ_CHECK(!parsed || (parsed.address->local == full.address->local &&
                           parsed.address->domain == full.address->domain &&
                           parsed.address->domain_unicode == full.address->domain_unicode),
               input);
    // The one domain normalisation every decision uses: what it accepts is a lower-case LDH
    // name that maps to itself.
    auto domain = calloutd::parse_domain(input);
    auto full_domain = calloutd::parse_domain_fully(input);
    FUZZ_CHECK(domain.refusal == full_domain.refusal && domain.domain == full_domain.domain,
               input + ": " + domain.domain + " / " + full_domain.domain);
    if (domain) {
        check_domain(domain.domain, "input [" + input + "] -> [" + domain.domain + "]");
        auto again = calloutd::parse_domain(domain.domain);
        FUZZ_CHECK(again && again.domain == domain.domain, domain.domain + " -> " + again.domain);
    } else {
        FUZZ_CHECK(
            domain.refusal.starts_with("bad-address") || domain.refusal.starts_with("bad-domain"),
            domain.refusal);
    }
    if (!parsed) {
        FUZZ_CHECK(parsed.refusal.starts_with("bad-address") ||
                       parsed.refusal.starts_with("bad-domain") ||
                       parsed.refusal == "address-literal",
                   parsed.refusal);
        return 0;
    }
    check_wire_safe(*parsed.address, input);
    // What went on the wire is itself an address that means the same mailbox.
    auto again = calloutd::parse_sender(parsed.address->address());
    FUZZ_CHECK(again.address.has_value(),
               input + " -> " + parsed.address->address() + ": " + again.refusal);
    FUZZ_CHECK(again.address->address() == parsed.address->address(),
               parsed.address->address() + " -> " + again.address->address());
    return 0;
}
