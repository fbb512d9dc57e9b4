// RedisReply and RedisResult: deep copies out of hiredis's reply tree, and their names.
#include "storage/redis_reply.hpp"

#include <hiredis/hiredis.h>

#include <utility>

namespace calloutd {

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
