// RedisReply and RedisResult from hiredis's reply tree: RESP in, through hiredis's own reader,
// deep copies out.
#include "storage/redis_reply.hpp"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <memory>
#include <string>

namespace calloutd {

namespace {

struct ReaderFree {
    void operator()(redisReader* r) const { redisReaderFree(r); }
};
struct ReplyFree {
    void operator()(void* r) const { freeReplyObject(r); }
};

// The one reply in `resp`, as hiredis's reader builds it; the test fails if there is none.
std::unique_ptr<void, ReplyFree> read_reply(const std::string& resp) {
    std::unique_ptr<redisReader, ReaderFree> reader(redisReaderCreate());
    EXPECT_EQ(redisReaderFeed(reader.get(), resp.data(), resp.size()), REDIS_OK);
    void* raw = nullptr;
    EXPECT_EQ(redisReaderGetReply(reader.get(), &raw), REDIS_OK) << resp;
    EXPECT_NE(raw, nullptr) << "incomplete: " << resp;
    return std::unique_ptr<void, ReplyFree>(raw);
}

RedisReply copy_of(const std::string& resp) {
    auto raw = read_reply(resp);
    return RedisReply::from_hiredis(static_cast<const redisReply*>(raw.get()));
}

struct ReplyCase {
    const char* what;
    std::string resp;
    RedisReply expected;
};

}  // namespace

TEST(RedisReply, DeepCopiesEveryRespType) {
    const ReplyCase cases[] = {
        {"integer", ":42\r\n", RedisReply::integer(42)},
        {"negative integer", ":-7\r\n", RedisReply::integer(-7)},
        {"status", "+OK\r\n", RedisReply::status("OK")},
        {"error", "-WRONGTYPE no\r\n", RedisReply::error("WRONGTYPE no")},
        {"bulk string", "$5\r\nhello\r\n", RedisReply::string("hello")},
        {"binary-safe bulk", std::string("$3\r\na\0b\r\n", 9), RedisReply::string({"a\0b", 3})},
        {"empty bulk", "$0\r\n\r\n", RedisReply::string("")},
        {"nil bulk", "$-1\r\n", RedisReply()},
        {"nil array", "*-1\r\n", RedisReply()},
        {"empty array", "*0\r\n", RedisReply::array({})},
        {"nested array with nil and error", "*3\r\n:1\r\n*2\r\n$1\r\nx\r\n$-1\r\n-ERR in\r\n",
         RedisReply::array({RedisReply::integer(1),
                            RedisReply::array({RedisReply::string("x"), RedisReply()}),
                            RedisReply::error("ERR in")})},
    };
    for (const auto& c : cases) {
        EXPECT_EQ(copy_of(c.resp), c.expected) << c.what;
    }
    EXPECT_EQ(RedisReply::from_hiredis(nullptr), RedisReply());
}

TEST(RedisReply, AccessorsAndNames) {
    RedisReply i = RedisReply::integer(5);
    EXPECT_TRUE(i.is_integer());
    EXPECT_EQ(i.as_integer(), 5);
    EXPECT_EQ(RedisReply::string("s").as_integer(), 0);  // 0 unless an integer
    EXPECT_TRUE(RedisReply().is_nil());
    EXPECT_NE(RedisReply::status("OK"), RedisReply::string("OK"));  // the type is compared too
    EXPECT_EQ(to_string(RedisReply::Type::nil), "nil");
    EXPECT_EQ(to_string(RedisReply::Type::integer), "integer");
    EXPECT_EQ(to_string(RedisReply::Type::string), "string");
    EXPECT_EQ(to_string(RedisReply::Type::status), "status");
    EXPECT_EQ(to_string(RedisReply::Type::error), "error");
    EXPECT_EQ(to_string(RedisReply::Type::array), "array");
    EXPECT_EQ(to_string(RedisStatus::ok), "ok");
    EXPECT_EQ(to_string(RedisStatus::server_error), "server_error");
    EXPECT_EQ(to_string(RedisStatus::timeout), "timeout");
    EXPECT_EQ(to_string(RedisStatus::disconnected), "disconnected");
    EXPECT_EQ(to_string(RedisStatus::not_connected), "not_connected");
}

// A top-level error reply is how a command failed; an error nested in an array (a MULTI/EXEC
// or a script's table) is part of the answer.
TEST(RedisResult, TopLevelErrorIsAServerErrorNestedOneIsAReply) {
    auto top = read_reply("-NOSCRIPT No matching script\r\n");
    RedisResult r = RedisResult::from_hiredis(*static_cast<const redisReply*>(top.get()));
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.status, RedisStatus::server_error);
    EXPECT_EQ(r.error, "NOSCRIPT No matching script");

    auto nested = read_reply("*1\r\n-ERR inside\r\n");
    r = RedisResult::from_hiredis(*static_cast<const redisReply*>(nested.get()));
    EXPECT_TRUE(r.ok());
    EXPECT_EQ(r.reply, RedisReply::array({RedisReply::error("ERR inside")}));

    r = RedisResult::failure(RedisStatus::timeout, "no reply within 250 ms");
    EXPECT_EQ(r.status, RedisStatus::timeout);
    EXPECT_EQ(r.error, "no reply within 250 ms");
    EXPECT_EQ(r.reply, RedisReply());
}

}  // namespace calloutd
