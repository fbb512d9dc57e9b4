// Domain list parsing and suffix matching.
#include "policy/domain_list.hpp"
#include "callout/ascii.hpp"

namespace calloutd {

// Defined in the generated never_probe_list.cpp (from etc/never-probe.list).
extern const char kNeverProbeList[];

std::string_view builtin_never_probe_list() {
    return kNeverProbeList;
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
        std::string domain = ascii_lower(line);
        if (!is_domain_name(domain)) {
            if (error != nullptr) {
                *error = "line " + std::to_string(line_no) + ": '" + domain + "' is not a domain";
            }
            return std::nullopt;
        }
        out.push_back(std::move(domain));
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
