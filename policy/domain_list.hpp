// Domain lists for skip rules: parsing list files and fast "domain or subdomain" matching.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace calloutd {

// The never-probe list shipped in etc/never-probe.list, compiled in ("builtin:never-probe").
std::string_view builtin_never_probe_list();
// The MX host-name suffixes shipped in etc/never-probe-mx.list ("builtin:never-probe-mx").
std::string_view builtin_never_probe_mx_list();
// The text of a "builtin:NAME" list entry, or nullopt when there is no such list.
std::optional<std::string_view> builtin_list(std::string_view entry);

// True for a lower-case host name (LDH labels, '_' tolerated, no empty labels).
bool is_domain_name(std::string_view s);

// A list entry in the form every rule compares: U-labels and A-labels alike, mapped with the
// probe's own normalisation (callout/address.hpp parse_domain), lower case, no trailing dot.
// nullopt when the entry is not a domain name.
std::optional<std::string> list_domain(std::string_view entry);

// One domain per line, '#' comments, blank lines ignored, each entry as list_domain() gives
// it. nullopt on a bad line, with "line N: why" in *error.
std::optional<std::vector<std::string>> parse_domain_list(std::string_view text,
                                                          std::string* error);

// Matches a domain and all its subdomains against a set: O(labels) per lookup.
class DomainSet {
  public:
    DomainSet() = default;
    explicit DomainSet(const std::vector<std::string>& domains)
        : domains_(domains.begin(), domains.end()) {}
    bool matches(std::string_view domain) const;
    bool empty() const { return domains_.empty(); }
    size_t size() const { return domains_.size(); }
    friend bool operator==(const DomainSet&, const DomainSet&) = default;

  private:
    // Transparent hashing: lookups by string_view allocate nothing.
    struct Hash {
        using is_transparent = void;
        size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    };
    std::unordered_set<std::string, Hash, std::equal_to<>> domains_;
};

}  // namespace calloutd
