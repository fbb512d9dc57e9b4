// redis.url and redis.sentinels parsing (storage/redis_url.hpp). An accepted URL must name a
// host or absolute path without control bytes, hide its password when displayed, and say the
// same thing when written back as a URL and parsed again.
#include <string>

#include "fuzz/fuzz_target.hpp"
#include "storage/redis_url.hpp"

namespace {

using calloutd::RedisEndpoint;

std::string pct(const std::string& s) {
    static const char* hex = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (plain) {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

std::string as_url(const RedisEndpoint& ep) {
    if (ep.kind == RedisEndpoint::Kind::unix_socket) {
        std::string q = "?db=" + std::to_string(ep.db);
        if (!ep.password.empty()) q += "&password=" + pct(ep.password);
        if (!ep.username.empty()) q += "&user=" + pct(ep.username);
        return "unix:" + ep.path + q;
    }
    std::string auth = ep.password.empty() ? "" : pct(ep.username) + ":" + pct(ep.password) + "@";
    bool v6 = ep.host.find(':') != std::string::npos;
    return "redis://" + auth + (v6 ? "[" + ep.host + "]" : ep.host) + ":" +
           std::to_string(ep.port) + "/" + std::to_string(ep.db);
}

bool has_control(const std::string& s) {
    for (unsigned char c : s) {
        if (c < 0x20 || c == 0x7f) return true;
    }
    return false;
}

}  // namespace

CALLOUTD_FUZZ_TARGET(redis_url) {
    std::string input(reinterpret_cast<const char*>(data), size);
    std::string error;
    auto ep = calloutd::parse_redis_url(input, error);
    if (!ep) {
        FUZZ_CHECK(error.starts_with("redis.url: "), error);
    } else {
        if (ep->kind == RedisEndpoint::Kind::tcp) {
            FUZZ_CHECK(!ep->host.empty() && !has_control(ep->host), input);
            FUZZ_CHECK(ep->port != 0, input);
        } else {
            FUZZ_CHECK(ep->path.starts_with("/") && !has_control(ep->path), input);
        }
        FUZZ_CHECK(ep->db >= 0, input);
        FUZZ_CHECK(ep->username.empty() || !ep->password.empty(), input);
        std::string shown = calloutd::to_display_string(*ep);
        if (!ep->password.empty()) FUZZ_CHECK(shown.find("***") != std::string::npos, shown);
        std::string again_error;
        auto again = calloutd::parse_redis_url(as_url(*ep), again_error);
        FUZZ_CHECK(again.has_value(), input + " -> " + as_url(*ep) + ": " + again_error);
        FUZZ_CHECK(*again == *ep, input + " -> " + as_url(*ep));
    }
    auto sentinel = calloutd::parse_sentinel_address(input, error);
    if (sentinel) {
        FUZZ_CHECK(!sentinel->host.empty() && !has_control(sentinel->host), input);
        FUZZ_CHECK(sentinel->port != 0, input);
    }
    return 0;
}
