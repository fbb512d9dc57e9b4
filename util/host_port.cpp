// parse_host_port(): the one HOST:PORT splitter (see host_port.hpp).
#include "util/host_port.hpp"

namespace calloutd {

namespace {

void say(std::string* why, std::string text) {
    if (why != nullptr) *why = std::move(text);
}

}  // namespace

std::optional<std::uint16_t> parse_port(std::string_view text, std::uint16_t min_port) {
    if (text.empty() || text.size() > 5) return std::nullopt;
    std::uint32_t port = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        port = port * 10 + static_cast<std::uint32_t>(c - '0');
    }
    if (port < min_port || port > 65535) return std::nullopt;
    return static_cast<std::uint16_t>(port);
}

std::optional<HostPort> parse_host_port(std::string_view text, HostPortRules rules,
                                        std::string* why) {
    HostPort out;
    std::optional<std::string_view> port_text;
    if (text.starts_with('[')) {
        auto close = text.find(']');
        if (close == std::string_view::npos) {
            say(why, "'[' without ']' around an IPv6 address");
            return std::nullopt;
        }
        out.host = text.substr(1, close - 1);
        out.bracketed = true;
        std::string_view after = text.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') {
                say(why, "expected ':PORT' after ']'");
                return std::nullopt;
            }
            port_text = after.substr(1);
        }
    } else if (auto colon = text.find(':'); colon != std::string_view::npos &&
                                            text.find(':', colon + 1) == std::string_view::npos) {
        out.host = text.substr(0, colon);
        port_text = text.substr(colon + 1);
    } else {
        out.host = text;  // no ':' at all, or a bare IPv6 literal
    }
    if (port_text) {
        out.port = parse_port(*port_text, rules.min_port);
        if (!out.port) {
            say(why, "port must be " + std::to_string(rules.min_port) + "-65535, got '" +
                         std::string(*port_text) + "'");
            return std::nullopt;
        }
    } else if (rules.port_required) {
        say(why, "no port");
        return std::nullopt;
    }
    return out;
}

std::string format_host_port(std::string_view host, std::uint16_t port) {
    std::string out;
    bool v6 = host.find(':') != std::string_view::npos;
    if (v6) out += '[';
    out += host;
    if (v6) out += ']';
    out += ':';
    out += std::to_string(port);
    return out;
}

}  // namespace calloutd
