// Policy request stream decoder (policy/request.hpp): any bytes, in any chunking, pipelined,
// with default and tight limits, then end of input. The outcome must not depend on the split,
// and no request that comes out carries a byte the decoder promises to refuse.
#include <string>
#include <vector>

#include "fuzz/fuzz_target.hpp"
#include "policy/request.hpp"

namespace {

using calloutd::PolicyRequest;
using calloutd::ReaderLimits;
using calloutd::RequestReader;

std::string render(const PolicyRequest& r) {
    return r.protocol_state + "|" + r.sender + "|" + r.client_address + "|" + r.instance + "|" +
           r.queue_id + "|" + r.sasl_username + "|" + r.sasl_method;
}

void check_clean(const PolicyRequest& r) {
    for (const std::string* f : {&r.request, &r.protocol_state, &r.sender, &r.client_address,
                                 &r.queue_id, &r.instance, &r.sasl_username, &r.sasl_method}) {
        for (char c : *f) {
            auto u = static_cast<unsigned char>(c);
            FUZZ_CHECK(!((u < 0x20 && u != '\t') || u == 0x7f), "control byte in " + *f);
        }
    }
    FUZZ_CHECK(r.request == "smtpd_access_policy", r.request);
}

std::vector<std::string> run(const std::vector<std::string_view>& chunks, ReaderLimits limits) {
    RequestReader reader(limits);
    std::vector<std::string> out;
    PolicyRequest req;
    bool failed = false;
    auto take = [&](RequestReader::Status st) {
        if (st == RequestReader::Status::request) {
            check_clean(req);
            out.push_back(render(req) + " warning=" + reader.warning());
            return true;
        }
        if (st == RequestReader::Status::error) {
            failed = true;
            out.push_back("error " + std::string(calloutd::to_string(reader.error_kind())) + " " +
                          reader.error());
        }
        return false;
    };
    for (auto c : chunks) {
        reader.append(c);
        while (take(reader.next(req))) {
        }
        if (failed) return out;
        // What waits for the rest of a request is bounded by the request limit.
        FUZZ_CHECK(reader.pending_bytes() <= limits.max_request_bytes + c.size(),
                   std::to_string(reader.pending_bytes()));
    }
    take(reader.finish(req));
    return out;
}

std::string joined(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += x + "\n";
    return s;
}

}  // namespace

CALLOUTD_FUZZ_TARGET(policy_request) {
    std::string_view in(reinterpret_cast<const char*>(data), size);
    for (ReaderLimits limits : {ReaderLimits{}, ReaderLimits{64, 256}}) {
        auto whole = run({in}, limits);
        auto random = run(calloutd::fuzz::random_chunks(in), limits);
        FUZZ_CHECK(random == whole,
                   "whole:\n" + joined(whole) + "random split:\n" + joined(random));
        if (size <= 4096) {
            auto bytes = run(calloutd::fuzz::byte_chunks(in), limits);
            FUZZ_CHECK(bytes == whole, "whole:\n" + joined(whole) + "bytewise:\n" + joined(bytes));
        }
    }
    return 0;
}
