// Domain list parsing and suffix matching.
#include "policy/domain_list.hpp"
#include "callout/address.hpp"
#include "util/ascii.hpp"

namespace calloutd {

// Defined in the generated never_probe_list.cpp (from etc/never-probe.list and
// etc/never-probe-mx.list).
extern const char kNeverProbeList[];
extern const char kNeverProbeMxList[];

std::string_view builtin_never_probe_list() {
    return kNeverProbeList;
}

std::string_view builtin_never_probe_mx_list() {
    return kNeverProbeMxList;
}

std::optional<std::string_view> builtin_list(std::string_view entry) {
    if (entry == "builtin:never-probe") return builtin_never_probe_list();
    if (entry == "builtin:never-probe-mx") return builtin_never_probe_mx_list();
    return std::nullopt;
}

std::optional<std::string> list_domain(std::string_view entry) {
    if (!entry.empty() && entry.back() == '.') entry.remove_suffix(1);
    bool ascii = true;
    for (char c : entry) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
    if (ascii) {
        // Plain ASCII maps to its lower case under UTS-46; '_' stays tolerated in lists.
        std::string domain = ascii_lower(entry);
        if (!is_domain_name(domain)) return std::nullopt;
        if (domain.find("xn--") != std::string::npos && !parse_domain(domain)) return std::nullopt;
        return domain;
    }
    DomainParse d = parse_domain(entry);
    if (!d) return std::nullopt;
    return d.domain;
}

bool is_domain_name(std::string_view s) {
    if (s.empty() || s.size() > 253) return false;
    for (char c : s) {
        bool ok =
            (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
        if (!ok) return false;
    }
    return s.front() != '.' && s.back() != '.' && s.find("..") == std::string_view::npos;
}

std::optional<std::vector<std::string>> parse_domain_list(std::string_view text,
                                                          std::string* error) {
    std::vector<std::string> out;
    int line_no = 0;
    while (!text.empty()) {
        ++line_no;
        auto nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
        if (auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
        while (!line.empty() && (line.front() == ' ' || line.front() == '\t'))
            line.remove_prefix(1);
        while (!line.empty() &&
               (line.back() == ' ' || line.back() == '\t' || line.back() == '\r')) {
            line.remove_suffix(1);
        }
        if (line.empty()) continue;
        auto domain = list_domain(line);
        if (!domain) {
            if (error != nullptr) {
                *error = "line " + std::to_string(line_no) + ": '" + std::string(line) +
                         "' is not a domain";
            }
            return std::nullopt;
        }
        out.push_back(std::move(*domain));
    }
    return out;
}

bool DomainSet::matches(std::string_view domain) const {
    if (domains_.empty()) return false;
    // Try the domain, then each parent: a.b.example.org, b.example.org, example.org, org.
    while (true) {
        if (domains_.contains(domain)) return true;
        auto dot = domain.find('.');
        if (dot == std::string_view::npos) return false;
        domain.remove_prefix(dot + 1);
    }
}

}  // namespace calloutd
