// HTTP request handling of the metrics listener (daemon/http_session.hpp, Node's http-parser):
// any bytes, in any chunking, driven the way the listener drives it (write, resume, close).
// The responses must not depend on the split, and each must be a well-formed status line with
// one of the statuses the session promises.
#include <set>
#include <string>
#include <vector>

#include "daemon/http_session.hpp"
#include "fuzz/fuzz_target.hpp"

namespace {

using calloutd::HttpLimits;
using calloutd::HttpSession;

std::string run(const std::vector<std::string_view>& chunks, HttpLimits limits) {
    HttpSession session(limits, [] { return std::string("calloutd_up 1\n"); });
    std::string out;
    for (auto c : chunks) {
        auto next = session.feed(c, out);
        for (int turns = 0; next == HttpSession::Next::write; ++turns) {
            FUZZ_CHECK(turns < 100000, "resume never ends");
            next = session.resume(out);
        }
        if (next == HttpSession::Next::close) return out + "<close>";
    }
    return out;
}

void check_responses(const std::string& out, std::size_t answered_max) {
    static const std::set<std::string> kStatuses = {"200", "400", "404", "405",
                                                    "413", "414", "431"};
    std::size_t pos = 0;
    std::size_t count = 0;
    while ((pos = out.find("HTTP/1.1 ", pos)) != std::string::npos) {
        FUZZ_CHECK(kStatuses.count(out.substr(pos + 9, 3)) == 1, out.substr(pos, 40));
        pos += 9;
        ++count;
    }
    FUZZ_CHECK(out.empty() || out.starts_with("HTTP/1.1 ") || out == "<close>", out.substr(0, 80));
    FUZZ_CHECK(count <= answered_max, std::to_string(count));
}

}  // namespace

CALLOUTD_FUZZ_TARGET(http_request) {
    std::string_view in(reinterpret_cast<const char*>(data), size);
    for (HttpLimits limits : {HttpLimits{}, HttpLimits{64, 1}}) {
        std::string whole = run({in}, limits);
        check_responses(whole, size / 14 + 1);  // "GET / HTTP/1.1\n\n"-sized requests at most
        std::string split = run(calloutd::fuzz::random_chunks(in), limits);
        FUZZ_CHECK(split == whole, "whole:\n" + whole + "\nsplit:\n" + split);
        if (size <= 2048) {
            std::string bytes = run(calloutd::fuzz::byte_chunks(in), limits);
            FUZZ_CHECK(bytes == whole, "whole:\n" + whole + "\nbytewise:\n" + bytes);
        }
    }
    return 0;
}
