// RedisReply and RedisResult: deep copies out of hiredis's reply tree, and their names.
#include "storage/redis_reply.hpp"

#include <hiredis/hiredis.h>

#include <utility>

#include "util/panic.hpp"

namespace calloutd {

namespace {

// hiredis's own reply functions, with createArray bounded (see bound_reply_arrays()).
redisReplyObjectFunctions g_bounded_functions;
void* (*g_create_array)(const redisReadTask*, int) = nullptr;

void* bounded_create_array(const redisReadTask* task, int elements) {
    if (elements < 0 || elements > kMaxReplyElements) return nullptr;
    return g_create_array(task, elements);
}

}  // namespace

void bound_reply_arrays(redisReader* reader) {
    // Every reader starts with hiredis's static default functions: copy them once.
    static const bool copied = [reader] {
        g_bounded_functions = *reader->fn;
        g_create_array = reader->fn->createArray;
        g_bounded_functions.createArray = &bounded_create_array;
        return true;
    }();
    (void)copied;
    if (reader->fn == &g_bounded_functions) return;
    if (reader->fn->createArray != g_create_array) {
        panic(__func__, "the reader does not use hiredis's functions");
    }
    reader->fn = &g_bounded_functions;
}

RedisReply RedisReply::integer(long long value) {
    RedisReply r;
    r.type_ = Type::integer;
    r.integer_ = value;
    return r;
}
RedisReply RedisReply::string(std::string text) {
    RedisReply r;
    r.type_ = Type::string;
    r.text_ = std::move(text);
    return r;
}
RedisReply RedisReply::status(std::string text) {
    RedisReply r = string(std::move(text));
    r.type_ = Type::status;
    return r;
}
RedisReply RedisReply::error(std::string text) {
    RedisReply r = string(std::move(text));
    r.type_ = Type::error;
    return r;
}
RedisReply RedisReply::array(std::vector<RedisReply> elements) {
    RedisReply r;
    r.type_ = Type::array;
    r.elements_ = std::move(elements);
    return r;
}

RedisReply RedisReply::from_hiredis(const redisReply* reply) {
    if (reply == nullptr) return {};
    switch (reply->type) {
        case REDIS_REPLY_INTEGER:
            return integer(reply->integer);
        case REDIS_REPLY_STRING:
            return string(std::string(reply->str, reply->len));
        case REDIS_REPLY_STATUS:
            return status(std::string(reply->str, reply->len));
        case REDIS_REPLY_ERROR:
            return error(std::string(reply->str, reply->len));
        case REDIS_REPLY_ARRAY: {
            std::vector<RedisReply> elements;
            elements.reserve(reply->elements);
            for (std::size_t i = 0; i < reply->elements; ++i) {
                elements.push_back(from_hiredis(reply->element[i]));
            }
            return array(std::move(elements));
        }
        default:
            return {};
    }
}

std::string_view to_string(RedisReply::Type t) {
    switch (t) {
        case RedisReply::Type::nil:
            return "nil";
        case RedisReply::Type::integer:
            return "integer";
        case RedisReply::Type::string:
            return "string";
        case RedisReply::Type::status:
            return "status";
        case RedisReply::Type::error:
            return "error";
        case RedisReply::Type::array:
            return "array";
    }
    return "?";
}

std::string_view to_string(RedisStatus s) {
    switch (s) {
        case RedisStatus::ok:
            return "ok";
        case RedisStatus::server_error:
            return "server_error";
        case RedisStatus::timeout:
            return "timeout";
        case RedisStatus::disconnected:
            return "disconnected";
        case RedisStatus::not_connected:
            return "not_connected";
    }
    return "?";
}

RedisResult RedisResult::from_hiredis(const redisReply& reply) {
    if (reply.type == REDIS_REPLY_ERROR) {
        return failure(RedisStatus::server_error, std::string(reply.str, reply.len));
    }
    RedisResult r;
    r.reply = RedisReply::from_hiredis(&reply);
    return r;
}

RedisResult RedisResult::failure(RedisStatus status, std::string why) {
    RedisResult r;
    r.status = status;
    r.error = std::move(why);
    return r;
}

}  // namespace calloutd
