// Redis replies as calloutd reads them: RESP bytes through hiredis's reader (as its async
// context does, in any chunking), deep-copied into RedisReply, then decoded the way the
// scripts' results are (admission, MX admission, cache lookups, stored verdicts). A hostile
// or corrupted Redis must get "malformed", never undefined behaviour or a verdict from garbage.
#include <hiredis/hiredis.h>

#include <string>
#include <vector>

#include "fuzz/fuzz_target.hpp"
#include "storage/redis_reply.hpp"
#include "storage/redis_schema.hpp"

namespace {

using calloutd::RedisReply;

std::string render(const RedisReply& r) {
    switch (r.type()) {
        case RedisReply::Type::nil:
            return "nil";
        case RedisReply::Type::integer:
            return "i" + std::to_string(r.as_integer());
        case RedisReply::Type::string:
        case RedisReply::Type::status:
        case RedisReply::Type::error:
            return std::string(calloutd::to_string(r.type())) + ":" + r.text();
        case RedisReply::Type::array: {
            std::string s = "[";
            for (const auto& e : r.elements()) s += render(e) + ",";
            return s + "]";
        }
    }
    return "?";
}

// Every string that could be a stored verdict is decoded; what decodes must be sane.
void decode_all(const RedisReply& r) {
    if (r.is_string()) {
        if (auto v = calloutd::redis_schema::decode(r.text())) {
            auto again = calloutd::redis_schema::decode(calloutd::redis_schema::encode(*v));
            FUZZ_CHECK(
                again.has_value() && again->cls == v->cls && again->probed_at == v->probed_at,
                r.text());
        }
    }
    for (const auto& e : r.elements()) decode_all(e);
}

// Every reply read as the admission scripts' results: only well-formed ones are believed.
void read_as_script_results(const RedisReply& r) {
    using calloutd::BudgetKind;
    using Kind = calloutd::redis_schema::AdmitReply::Kind;
    auto admit = calloutd::redis_schema::read_admit_reply(r, "node-1:42");
    const std::string why = render(r);
    switch (admit.kind) {
        case Kind::admitted:
            FUZZ_CHECK(r.elements().size() == 2 && r.elements()[1].text() == "node-1:42", why);
            break;
        case Kind::cached:
            FUZZ_CHECK(admit.cached_scope == "a" || admit.cached_scope == "d", why);
            break;
        case Kind::denied:
            FUZZ_CHECK(admit.denied_by == BudgetKind::domain ||
                           admit.denied_by == BudgetKind::client ||
                           admit.denied_by == BudgetKind::global,
                       why);
            break;
        case Kind::in_flight:
        case Kind::malformed:
            break;
    }
    if (admit.kind != Kind::cached) FUZZ_CHECK(!admit.cached.has_value(), why);
    auto mx = calloutd::redis_schema::read_admit_mx_reply(r, "node-2:7");
    FUZZ_CHECK(mx.kind == Kind::admitted || mx.kind == Kind::denied || mx.kind == Kind::malformed,
               why);
    if (mx.kind == Kind::denied) {
        FUZZ_CHECK(mx.denied_by == BudgetKind::mx || mx.denied_by == BudgetKind::provider, why);
    }
}

// Replies in order, or "error: ..." where hiredis refuses the stream.
std::vector<std::string> read_all(const std::vector<std::string_view>& chunks) {
    std::vector<std::string> out;
    redisReader* reader = redisReaderCreate();
    calloutd::bound_reply_arrays(reader);  // as RedisClient does for its contexts
    for (auto c : chunks) {
        if (redisReaderFeed(reader, c.data(), c.size()) != REDIS_OK) break;
        for (;;) {
            void* raw = nullptr;
            if (redisReaderGetReply(reader, &raw) != REDIS_OK) {
                out.push_back(std::string("error: ") + reader->errstr);
                redisReaderFree(reader);
                return out;
            }
            if (raw == nullptr) break;
            RedisReply reply = RedisReply::from_hiredis(static_cast<redisReply*>(raw));
            freeReplyObject(raw);
            decode_all(reply);
            read_as_script_results(reply);
            out.push_back(render(reply));
        }
    }
    redisReaderFree(reader);
    return out;
}

}  // namespace

CALLOUTD_FUZZ_TARGET(redis_reply) {
    std::string_view in(reinterpret_cast<const char*>(data), size);
    auto whole = read_all({in});
    auto split = read_all(calloutd::fuzz::random_chunks(in));
    FUZZ_CHECK(split == whole, "replies differ with the split");
    return 0;
}
