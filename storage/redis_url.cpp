// Parsing of `redis.url` into a RedisEndpoint; pure, so it is tested with a table of cases.
#include "storage/redis_url.hpp"

#include <sys/un.h>

#include <charconv>

#include "util/host_port.hpp"
#include "util/ip_net.hpp"

namespace calloutd {

namespace {

constexpr std::string_view kRedisScheme = "redis://";
constexpr std::string_view kUnixScheme = "unix:";

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// %XX-decodes text; false on a truncated or non-hex escape.
bool percent_decode(std::string_view text, std::string& out) {
    out.clear();
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] != '%') {
            out.push_back(text[i]);
            continue;
        }
        if (i + 2 >= text.size()) return false;
        int hi = hex_value(text[i + 1]);
        int lo = hex_value(text[i + 2]);
        if (hi < 0 || lo < 0) return false;
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
    }
    return true;
}

// A decimal number in [min, max] and nothing else.
bool parse_number(std::string_view text, long min, long max, long& out) {
    if (text.empty() || text.size() > 10) return false;
    const char* end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(text.data(), end, out);
    return ec == std::errc() && ptr == end && out >= min && out <= max;
}

// A DNS host name: dot-separated labels of letters, digits and hyphens.
bool is_host_name(std::string_view host) {
    if (host.empty() || host.size() > 253) return false;
    std::size_t label = 0;
    for (std::size_t i = 0; i <= host.size(); ++i) {
        if (i == host.size() || host[i] == '.') {
            if (label == 0 || label > 63) return false;
            if (host[i - 1] == '-' || host[i - label] == '-') return false;
            label = 0;
            continue;
        }
        char c = host[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok) return false;
        ++label;
    }
    return true;
}

std::optional<RedisEndpoint> parse_tcp(std::string_view rest, std::string& error) {
    RedisEndpoint ep;
    // The last '@' ends the user info, so a password may contain '/' or an unencoded '@'.
    if (auto at = rest.rfind('@'); at != std::string_view::npos) {
        std::string_view userinfo = rest.substr(0, at);
        rest.remove_prefix(at + 1);
        auto colon = userinfo.find(':');
        if (colon == std::string_view::npos) {
            error = "redis.url: user info must be ':PASSWORD@' or 'USER:PASSWORD@'";
            return std::nullopt;
        }
        if (!percent_decode(userinfo.substr(0, colon), ep.username) ||
            !percent_decode(userinfo.substr(colon + 1), ep.password)) {
            error = "redis.url: bad %-escape in the user info";
            return std::nullopt;
        }
        if (ep.password.empty()) {
            error = "redis.url: empty password (leave out ':@' for no AUTH)";
            return std::nullopt;
        }
    }
    std::string_view hostport = rest;
    std::string_view db_text;
    bool has_db = false;
    if (auto slash = rest.find('/'); slash != std::string_view::npos) {
        hostport = rest.substr(0, slash);
        db_text = rest.substr(slash + 1);
        has_db = true;
    }
    std::string why;
    auto hp = parse_host_port(hostport, {}, &why);
    if (!hp) {
        error = "redis.url: " + why;
        return std::nullopt;
    }
    if (hp->bracketed) {
        auto ip = IpAddress::parse(hp->host);
        if (!ip || ip->is_v4()) {
            error = "redis.url: '" + std::string(hp->host) + "' in brackets is not an IPv6 address";
            return std::nullopt;
        }
    } else if (hp->host.find(':') != std::string_view::npos) {
        error = "redis.url: bad host '" + std::string(hp->host) +
                "' (an IPv6 address goes in brackets)";
        return std::nullopt;
    } else if (!IpAddress::parse(hp->host) && !is_host_name(hp->host)) {
        error = hp->host.empty() ? "redis.url: missing host"
                                 : "redis.url: bad host '" + std::string(hp->host) + "'";
        return std::nullopt;
    }
    ep.host = std::string(hp->host);
    if (hp->port) ep.port = *hp->port;
    if (has_db && !db_text.empty()) {
        long db = 0;
        if (!parse_number(db_text, 0, 1 << 20, db)) {
            error = "redis.url: database must be a number, got '" + std::string(db_text) + "'";
            return std::nullopt;
        }
        ep.db = static_cast<int>(db);
    }
    return ep;
}

std::optional<RedisEndpoint> parse_unix(std::string_view rest, std::string& error) {
    RedisEndpoint ep;
    ep.kind = RedisEndpoint::Kind::unix_socket;
    ep.port = 0;
    std::string_view query;
    if (auto q = rest.find('?'); q != std::string_view::npos) {
        query = rest.substr(q + 1);
        rest = rest.substr(0, q);
    }
    for (char c : rest) {
        // A NUL would cut the path where hiredis hands it to connect(2).
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
            error = "redis.url: control byte in the unix socket path";
            return std::nullopt;
        }
    }
    if (rest.empty() || rest.front() != '/') {
        error = "redis.url: unix socket path must be absolute, got '" + std::string(rest) + "'";
        return std::nullopt;
    }
    if (rest.size() >= sizeof(sockaddr_un::sun_path)) {
        error = "redis.url: unix socket path longer than " +
                std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes";
        return std::nullopt;
    }
    ep.path = std::string(rest);
    while (!query.empty()) {
        auto amp = query.find('&');
        std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
        auto eq = pair.find('=');
        std::string_view key = pair.substr(0, eq);
        std::string value;
        if (eq == std::string_view::npos || !percent_decode(pair.substr(eq + 1), value)) {
            error = "redis.url: bad query parameter '" + std::string(pair) + "'";
            return std::nullopt;
        }
        if (key == "db") {
            long db = 0;
            if (!parse_number(value, 0, 1 << 20, db)) {
                error = "redis.url: database must be a number, got '" + value + "'";
                return std::nullopt;
            }
            ep.db = static_cast<int>(db);
        } else if (key == "password" && !value.empty()) {
            ep.password = value;
        } else if (key == "user") {
            ep.username = value;
        } else {
            error = "redis.url: unknown or empty query parameter '" + std::string(key) + "'";
            return std::nullopt;
        }
    }
    if (!ep.username.empty() && ep.password.empty()) {
        error = "redis.url: 'user' needs a 'password'";
        return std::nullopt;
    }
    return ep;
}

}  // namespace

std::optional<RedisEndpoint> parse_redis_url(std::string_view url, std::string& error) {
    if (url.starts_with(kRedisScheme)) return parse_tcp(url.substr(kRedisScheme.size()), error);
    if (url.starts_with(kUnixScheme)) return parse_unix(url.substr(kUnixScheme.size()), error);
    error = "redis.url: expected 'redis://HOST:PORT/DB' or 'unix:PATH', got '" +
            std::string(url.substr(0, 64)) + "'";
    return std::nullopt;
}

std::optional<RedisHostPort> parse_sentinel_address(std::string_view text, std::string& error) {
    auto hp = parse_host_port(text, {.port_required = true});
    std::optional<IpAddress> ip;
    if (hp) ip = IpAddress::parse(hp->host);
    if (!ip || ip->is_v4() == hp->bracketed) {
        error = "redis.sentinels: '" + std::string(text) + "' is not IP:PORT or [V6]:PORT";
        return std::nullopt;
    }
    return RedisHostPort{std::string(hp->host), *hp->port};
}

std::string to_display_string(const RedisEndpoint& ep) {
    std::string auth;
    if (!ep.password.empty()) auth = ep.username + ":***@";
    if (ep.kind == RedisEndpoint::Kind::unix_socket) {
        std::string out = "unix:" + ep.path;
        char sep = '?';
        if (ep.db != 0) {
            out += sep + ("db=" + std::to_string(ep.db));
            sep = '&';
        }
        if (!ep.password.empty()) out += sep + std::string("password=***");
        return out;
    }
    return "redis://" + auth + format_host_port(ep.host, ep.port) + "/" + std::to_string(ep.db);
}

}  // namespace calloutd
