// Parsing of `redis.url`: where the Redis server is and how to log in to it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace calloutd {

struct RedisEndpoint {
    enum class Kind { tcp, unix_socket };
    Kind kind = Kind::tcp;
    std::string host;  // tcp: a host name or an IP literal (IPv6 without brackets)
    std::uint16_t port = 6379;
    std::string path;      // unix_socket: absolute path of the socket
    std::string username;  // empty = the default user (AUTH PASSWORD)
    std::string password;  // empty = no AUTH
    int db = 0;            // SELECT db (0 = no SELECT needed)

    friend bool operator==(const RedisEndpoint&, const RedisEndpoint&) = default;
};

// Accepted forms (user, password and query values are %XX-decoded):
//   redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]      HOST may be [IPv6]; PORT defaults to 6379
//   unix:PATH[?db=N][&password=P][&user=U]          PATH must be absolute
// Returns nullopt and sets `error` (one line naming what is wrong) on anything else.
std::optional<RedisEndpoint> parse_redis_url(std::string_view url, std::string& error);

// A Redis Sentinel (or a master it names): an IP literal and a port.
struct RedisHostPort {
    std::string host;  // IPv6 without brackets
    std::uint16_t port = 0;

    friend bool operator==(const RedisHostPort&, const RedisHostPort&) = default;
};

// "IP:PORT" or "[V6]:PORT" (an entry of `redis.sentinels`). Only IP literals: hiredis would
// resolve a host name with a blocking getaddrinfo() for every query.
std::optional<RedisHostPort> parse_sentinel_address(std::string_view text, std::string& error);

// The endpoint for logs: the URL without its password ("redis://:***@host:6379/2").
std::string to_display_string(const RedisEndpoint& endpoint);

}  // namespace calloutd
