// Replies as RedisClient reads them: hiredis's reader with arrays bounded before allocation.
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <string>

#include "storage/redis_reply.hpp"

namespace calloutd {
namespace {

// The reply to `resp` through a bounded reader, or "error: ..." where the reader refuses it.
std::string read_one(const std::string& resp) {
    redisReader* reader = redisReaderCreate();
    bound_reply_arrays(reader);
    redisReaderFeed(reader, resp.data(), resp.size());
    void* raw = nullptr;
    std::string out;
    if (redisReaderGetReply(reader, &raw) != REDIS_OK) {
        out = std::string("error: ") + reader->errstr;
    } else if (raw == nullptr) {
        out = "incomplete";
    } else {
        RedisReply r = RedisReply::from_hiredis(static_cast<redisReply*>(raw));
        freeReplyObject(raw);
        out = std::string(to_string(r.type())) + " " + std::to_string(r.elements().size());
    }
    redisReaderFree(reader);
    return out;
}

// Found by fuzzing: "*999999991" made hiredis 0.14 calloc 8 GB at once, before any element.
TEST(RedisReader, HugeOrNegativeArrayCountsAreRefusedBeforeAllocating) {
    EXPECT_EQ(read_one("*999999991\r\n"), "error: Out of memory");
    EXPECT_EQ(read_one("*2\r\n*2147483647\r\n"), "error: Out of memory");
    EXPECT_TRUE(read_one("*-5\r\n").starts_with("error: ")) << read_one("*-5\r\n");
    EXPECT_EQ(read_one("*" + std::to_string(kMaxReplyElements + 1) + "\r\n"),
              "error: Out of memory");
    EXPECT_EQ(read_one("*" + std::to_string(kMaxReplyElements) + "\r\n"), "incomplete");
    EXPECT_EQ(read_one("*3\r\n:1\r\n$1\r\nx\r\n$-1\r\n"), "array 3");
    EXPECT_EQ(read_one("*-1\r\n"), "nil 0");
}

}  // namespace
}  // namespace calloutd
