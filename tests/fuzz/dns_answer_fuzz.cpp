// DNS answer handling (callout/dns_resolver.hpp): MX, A and AAAA answers exactly as c-ares
// delivers them. A UDP server on 127.0.0.1 answers each query of a real resolver with the
// next piece of the input (its RCODE, answer count and records after the real question), so
// c-ares parses real packets and our code judges what it makes of them.
#include <uv.h>

#include <cstring>
#include <optional>
#include <set>
#include <string>

#include "callout/dns_resolver.hpp"
#include "fuzz/fuzz_target.hpp"
#include "util/ip_net.hpp"

namespace {

using calloutd::DnsResolver;
using calloutd::MxResolution;

constexpr std::size_t kMaxHosts = 4;
constexpr std::size_t kMaxAddresses = 4;

struct World {
    uv_loop_t loop{};
    uv_udp_t server{};
    std::string server_address;
    std::unique_ptr<DnsResolver> resolver;
    std::string_view input;  // answers not yet given
    int queries = 0;
    std::optional<MxResolution> result;
    int callbacks = 0;
};

World& world();

// One answer per query: [flags: RCODE in the low 4 bits, AA in bit 4][ANCOUNT][NSCOUNT]
// [length][length bytes of records]. When the input is spent, the answer is REFUSED.
std::string answer_for(World& w, std::string_view query) {
    std::string a;
    a += query.substr(0, 2);  // the query's ID
    unsigned char flags = 5;
    unsigned char ancount = 0;
    unsigned char nscount = 0;
    std::string_view records;
    if (w.input.size() >= 4) {
        flags = static_cast<unsigned char>(w.input[0]);
        ancount = static_cast<unsigned char>(w.input[1]);
        nscount = static_cast<unsigned char>(w.input[2]) & 3;
        std::size_t len = static_cast<unsigned char>(w.input[3]);
        w.input.remove_prefix(4);
        len = std::min(len, w.input.size());
        records = w.input.substr(0, len);
        w.input.remove_prefix(len);
    } else {
        w.input = {};
    }
    a += static_cast<char>(0x81 | ((flags & 0x10) ? 0x04 : 0));  // QR, RD, AA; never TC
    a += static_cast<char>(0x80 | (flags & 0x0f));               // RA, RCODE
    a += std::string("\0\1", 2);                                 // QDCOUNT 1
    a += static_cast<char>(0);
    a += static_cast<char>(ancount);
    a += static_cast<char>(0);
    a += static_cast<char>(nscount);
    a += std::string("\0\0", 2);
    a += query.substr(12);  // the question as asked (c-ares checks it)
    a += records;
    return a;
}

void on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
    static char storage[4096];
    *buf = uv_buf_init(storage, sizeof storage);
}

void on_recv(uv_udp_t* handle, ssize_t nread, const uv_buf_t* buf, const sockaddr* from, unsigned) {
    if (nread < 12 || from == nullptr) return;
    World& w = world();
    ++w.queries;
    std::string reply = answer_for(w, std::string_view(buf->base, static_cast<size_t>(nread)));
    uv_buf_t out = uv_buf_init(reply.data(), static_cast<unsigned>(reply.size()));
    uv_udp_try_send(handle, &out, 1, from);
}

World& world() {
    static World* w = [] {
        auto* n = new World;
        uv_loop_init(&n->loop);
        uv_udp_init(&n->loop, &n->server);
        sockaddr_in addr{};
        uv_ip4_addr("127.0.0.1", 0, &addr);
        if (uv_udp_bind(&n->server, reinterpret_cast<const sockaddr*>(&addr), 0) != 0) abort();
        sockaddr_storage bound{};
        int len = sizeof bound;
        uv_udp_getsockname(&n->server, reinterpret_cast<sockaddr*>(&bound), &len);
        int port = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
        uv_udp_recv_start(&n->server, on_alloc, on_recv);
        calloutd::DnsOptions opts;
        opts.servers = {"127.0.0.1:" + std::to_string(port)};
        opts.timeout = std::chrono::milliseconds(2000);
        opts.tries = 1;
        opts.shuffle_seed = 7;
        opts.max_mx_hosts = kMaxHosts;
        opts.max_addresses_per_host = kMaxAddresses;
        std::string error;
        n->resolver = DnsResolver::create(&n->loop, opts, error);
        if (!n->resolver) {
            std::fprintf(stderr, "resolver: %s\n", error.c_str());
            abort();
        }
        return n;
    }();
    return *w;
}

std::string describe(const MxResolution& r) {
    std::string s = std::string(calloutd::to_string(r.status)) + " " + r.reason;
    for (const auto& h : r.hosts) {
        s += "\n  " + h.name + " pref=" + std::to_string(h.preference);
        for (const auto& a : h.addresses) s += " " + a;
    }
    return s;
}

void check(const MxResolution& r, const std::string& domain) {
    static const std::set<std::string> kOk = {"mx", "implicit-mx"};
    static const std::set<std::string> kNoMail = {"nxdomain", "null-mx", "no-mx-no-address",
                                                  "bad-name"};
    const std::string why = describe(r);
    if (r.status == MxResolution::Status::ok) {
        FUZZ_CHECK(kOk.count(r.reason) == 1, why);
        FUZZ_CHECK(!r.hosts.empty() && r.hosts.size() <= kMaxHosts, why);
    } else {
        FUZZ_CHECK(r.hosts.empty(), why);
        if (r.status == MxResolution::Status::no_mail_domain)
            FUZZ_CHECK(kNoMail.count(r.reason) == 1, why);
        FUZZ_CHECK(!r.reason.empty(), why);
    }
    std::set<std::string> names;
    for (const auto& h : r.hosts) {
        FUZZ_CHECK(!h.name.empty() && h.name.back() != '.', why);
        FUZZ_CHECK(names.insert(h.name).second, "host listed twice: " + why);
        if (h.implicit) FUZZ_CHECK(h.name == domain && r.reason == "implicit-mx", why);
        // Names reach logs and the probe transcript: nothing that could break a line.
        for (unsigned char c : h.name) {
            FUZZ_CHECK(c >= 0x20 && c != 0x7f && !(c >= 'A' && c <= 'Z'), why);
        }
        FUZZ_CHECK(!h.addresses.empty() && h.addresses.size() <= kMaxAddresses, why);
        std::set<std::string> seen;
        for (const auto& a : h.addresses) {
            FUZZ_CHECK(calloutd::IpAddress::parse(a).has_value(), why);
            FUZZ_CHECK(seen.insert(a).second, "address listed twice: " + why);
        }
    }
}

}  // namespace

CALLOUTD_FUZZ_TARGET(dns_answer) {
    World& w = world();
    w.input = std::string_view(reinterpret_cast<const char*>(data), size);
    w.queries = 0;
    w.result.reset();
    w.callbacks = 0;
    const std::string domain = "fuzz.example";
    bool returned = false;
    w.resolver->resolve_mx(domain, [&](MxResolution r) {
        FUZZ_CHECK(returned, "callback ran inside resolve_mx()");
        ++w.callbacks;
        w.result = std::move(r);
    });
    returned = true;
    while (!w.result) uv_run(&w.loop, UV_RUN_ONCE);
    // Let anything late arrive: a second callback would be a bug.
    uv_run(&w.loop, UV_RUN_NOWAIT);
    FUZZ_CHECK(w.callbacks == 1, std::to_string(w.callbacks));
    FUZZ_CHECK(w.resolver->in_flight() == 0, std::to_string(w.resolver->in_flight()));
    FUZZ_CHECK(w.queries <= 1 + 2 * static_cast<int>(kMaxHosts), std::to_string(w.queries));
    check(*w.result, domain);
    return 0;
}
