// HOST:PORT text as configuration and Redis write it: "HOST", "HOST:PORT", "[V6]", "[V6]:PORT",
// and a bare IPv6 literal. One parser for every caller; each caller judges the host itself
// (IP only, IP or name, "localhost") and says what it expected in its own words.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace calloutd {

struct HostPort {
    std::string_view host;  // without the brackets; may be empty
    bool bracketed = false;
    std::optional<std::uint16_t> port;
};

struct HostPortRules {
    bool port_required = false;
    std::uint16_t min_port = 1;  // 0 lets "HOST:0" through (a listener on any free port)
};

// Splits and checks the port; the host is returned as written (callers check it). Unbracketed
// text with two or more ':' is a bare IPv6 literal without a port; callers that want IPv6 in
// brackets test `!bracketed && host contains ':'`. On failure, *why (when given) says what is
// wrong: "'[' without ']' around an IPv6 address", "expected ':PORT' after ']'", "no port", "port
// must be 1-65535, got 'X'".
std::optional<HostPort> parse_host_port(std::string_view text, HostPortRules rules = {},
                                        std::string* why = nullptr);

// A decimal port in [min_port, 65535]: digits only, at most five.
std::optional<std::uint16_t> parse_port(std::string_view text, std::uint16_t min_port = 1);

// "HOST:PORT", with brackets around a host containing ':' (IPv6).
std::string format_host_port(std::string_view host, std::uint16_t port);

}  // namespace calloutd
