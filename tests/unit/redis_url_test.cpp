// redis.url parsing: a table of accepted forms and of rejected ones with their messages.
#include "storage/redis_url.hpp"

#include <gtest/gtest.h>

namespace calloutd {

namespace {

RedisEndpoint tcp(std::string host, std::uint16_t port, int db = 0, std::string password = "",
                  std::string username = "") {
    RedisEndpoint ep;
    ep.host = std::move(host);
    ep.port = port;
    ep.db = db;
    ep.password = std::move(password);
    ep.username = std::move(username);
    return ep;
}

RedisEndpoint unix_socket(std::string path, int db = 0, std::string password = "") {
    RedisEndpoint ep;
    ep.kind = RedisEndpoint::Kind::unix_socket;
    ep.port = 0;
    ep.path = std::move(path);
    ep.db = db;
    ep.password = std::move(password);
    return ep;
}

}  // namespace

struct GoodUrl {
    const char* url;
    RedisEndpoint expected;
};

TEST(RedisUrl, AcceptsDocumentedForms) {
    const GoodUrl cases[] = {
        {"redis://127.0.0.1:6379/0", tcp("127.0.0.1", 6379)},
        {"redis://127.0.0.1", tcp("127.0.0.1", 6379)},
        {"redis://127.0.0.1/", tcp("127.0.0.1", 6379)},
        {"redis://redis.example.net:7000/3", tcp("redis.example.net", 7000, 3)},
        {"redis://localhost:6380", tcp("localhost", 6380)},
        {"redis://:s3cret@10.0.0.5:6379/2", tcp("10.0.0.5", 6379, 2, "s3cret")},
        {"redis://calloutd:s3cret@10.0.0.5:6379/2", tcp("10.0.0.5", 6379, 2, "s3cret", "calloutd")},
        {"redis://:p%40ss%2Fw%3Ard@h:1/0", tcp("h", 1, 0, "p@ss/w:rd")},
        {"redis://:pa@ss@h:1/0", tcp("h", 1, 0, "pa@ss")},  // the last '@' ends the user info
        {"redis://[::1]:6379/1", tcp("::1", 6379, 1)},
        {"redis://[2001:db8::7]", tcp("2001:db8::7", 6379)},
        {"redis://h:65535/15", tcp("h", 65535, 15)},
        {"unix:/run/redis/redis.sock", unix_socket("/run/redis/redis.sock")},
        {"unix:/tmp/r.sock?db=4", unix_socket("/tmp/r.sock", 4)},
        {"unix:/tmp/r.sock?db=4&password=a%26b", unix_socket("/tmp/r.sock", 4, "a&b")},
    };
    for (const auto& c : cases) {
        std::string error;
        auto ep = parse_redis_url(c.url, error);
        ASSERT_TRUE(ep) << c.url << ": " << error;
        EXPECT_EQ(*ep, c.expected) << c.url;
    }
}

// Found by fuzzing: a NUL in a host or socket path was cut off where it reached C APIs.
TEST(RedisUrl, RefusesNulAndControlBytesInHostsAndPaths) {
    using namespace std::string_literals;
    for (const std::string& bad :
         {"redis://127.0.0.1\0junk:6379/0"s, "redis://[::1\0]:6379"s, "redis://host\0x:1"s,
          "unix:/tmp/r\0.sock"s, "unix:\0abstract"s, "unix:/tmp/r.sock\n"s}) {
        std::string error;
        EXPECT_FALSE(parse_redis_url(bad, error)) << bad;
        EXPECT_FALSE(error.empty());
    }
    std::string error;
    EXPECT_FALSE(parse_sentinel_address("127.0.0.1\0junk:26379"s, error));
    EXPECT_FALSE(parse_sentinel_address("127.0.0.1:26379\0"s, error));
}

struct BadUrl {
    const char* url;
    const char* message;  // a substring of the error
};

TEST(RedisUrl, RejectsWithAReason) {
    const BadUrl cases[] = {
        {"", "expected 'redis://HOST:PORT/DB' or 'unix:PATH'"},
        {"127.0.0.1:6379", "expected"},
        {"rediss://h:6379", "expected"},
        {"redis://", "missing host"},
        {"redis://:6379/0", "missing host"},
        {"redis://h:0/0", "port must be 1-65535"},
        {"redis://h:65536", "port must be 1-65535"},
        {"redis://h:port", "port must be 1-65535"},
        {"redis://h:", "port must be 1-65535"},
        {"redis://h:6379/x", "database must be a number"},
        {"redis://h:6379/-1", "database must be a number"},
        {"redis://h_:6379/0/extra", "database must be a number"},
        {"redis://bad host:1", "bad host"},
        {"redis://-h:1", "bad host"},
        {"redis://a..b:1", "bad host"},
        {"redis://secret@h:1", "user info must be"},
        {"redis://:@h:1", "empty password"},
        {"redis://:%zz@h:1", "bad %-escape"},
        {"redis://:%4@h:1", "bad %-escape"},
        {"redis://[::1:6379", "without ']'"},
        {"redis://[10.0.0.1]:6379", "not an IPv6 address"},
        {"redis://[::1]6379", "expected ':PORT'"},
        {"unix:", "must be absolute"},
        {"unix:redis.sock", "must be absolute"},
        {"unix:/tmp/r.sock?db=x", "database must be a number"},
        {"unix:/tmp/r.sock?color=red", "unknown or empty query parameter 'color'"},
        {"unix:/tmp/r.sock?db", "bad query parameter"},
        {"unix:/tmp/r.sock?user=u", "'user' needs a 'password'"},
        {"unix:/tmp/"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock",
         "longer than 107 bytes"},
    };
    for (const auto& c : cases) {
        std::string error;
        auto ep = parse_redis_url(c.url, error);
        EXPECT_FALSE(ep) << c.url;
        EXPECT_NE(error.find(c.message), std::string::npos) << c.url << " -> " << error;
        EXPECT_TRUE(error.starts_with("redis.url: ")) << error;
    }
}

TEST(RedisUrl, DisplayHidesThePassword) {
    std::string error;
    EXPECT_EQ(to_display_string(*parse_redis_url("redis://:s3cret@10.0.0.5:6379/2", error)),
              "redis://:***@10.0.0.5:6379/2");
    EXPECT_EQ(to_display_string(*parse_redis_url("redis://u:s3cret@h", error)),
              "redis://u:***@h:6379/0");
    EXPECT_EQ(to_display_string(*parse_redis_url("redis://[::1]:7/1", error)), "redis://[::1]:7/1");
    EXPECT_EQ(to_display_string(*parse_redis_url("unix:/r.sock?db=2&password=x", error)),
              "unix:/r.sock?db=2&password=***");
}

TEST(RedisUrl, SentinelAddresses) {
    struct Case {
        const char* text;
        std::optional<RedisHostPort> expected;
    };
    const Case cases[] = {
        {"127.0.0.1:26379", RedisHostPort{"127.0.0.1", 26379}},
        {"[::1]:26380", RedisHostPort{"::1", 26380}},
        {"[2001:db8::5]:1", RedisHostPort{"2001:db8::5", 1}},
        {"127.0.0.1", std::nullopt},
        {"127.0.0.1:", std::nullopt},
        {"127.0.0.1:0", std::nullopt},
        {"127.0.0.1:65536", std::nullopt},
        {"::1:26379", std::nullopt},
        {"[127.0.0.1]:26379", std::nullopt},
        {"sentinel.example:26379", std::nullopt},
        {"", std::nullopt},
    };
    for (const auto& c : cases) {
        std::string error;
        EXPECT_EQ(parse_sentinel_address(c.text, error), c.expected) << c.text;
        if (!c.expected) {
            EXPECT_NE(error.find("IP:PORT or [V6]:PORT"), std::string::npos) << c.text;
        }
    }
}

}  // namespace calloutd
