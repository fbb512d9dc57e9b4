// MX resolution with c-ares on a libuv loop: one uv_poll_t per c-ares socket, one timer for
// c-ares retransmissions, and a deferred delivery step so callbacks never run re-entrantly.
// Over 500 lines as one concept: one c-ares channel on the loop; its socket polls, timer, query
// bookkeeping and answer parsing share the channel's lifetime and generation rule.
#include "callout/dns_resolver.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <mutex>
#include <set>
#include <utility>

#include "util/ascii.hpp"
#include "util/host_port.hpp"

namespace calloutd {

namespace {

constexpr int kClassIn = 1;
constexpr int kTypeA = 1;
constexpr int kTypeNs = 2;
constexpr int kTypeMx = 15;
constexpr int kTypeAaaa = 28;
// Upper bound on addresses parsed from one A or AAAA answer before capping per host.
constexpr int kMaxParsedAddresses = 32;

struct AresMxFree {
    void operator()(ares_mx_reply* p) const { ares_free_data(p); }
};

struct HostentFree {
    void operator()(hostent* p) const { ares_free_hostent(p); }
};

void init_ares_library_once() {
    static std::once_flag once;
    // ares_library_init() is not thread-safe and only needs to run once per process.
    std::call_once(once, [] { ares_library_init(ARES_LIB_INIT_ALL); });
}

// Reason word for a c-ares status that means "try again later".
std::string temp_reason(int status, bool exact_rcodes) {
    switch (status) {
        case ARES_ESERVFAIL:
            return "servfail";
        case ARES_EREFUSED:
            return "refused";
        case ARES_ETIMEOUT:
            return "dns-timeout";
        case ARES_ECONNREFUSED:
            return exact_rcodes ? "connection-refused" : "all-servers-failed";
        case ARES_EBADRESP:
        case ARES_EFORMERR:
            return "bad-response";
        case ARES_ENOTIMP:
            return "notimp";
        default:
            return "dns-error";
    }
}

DnsQueryResult query_result(int status) {
    switch (status) {
        case ARES_SUCCESS:
            return DnsQueryResult::noerror;
        case ARES_ENODATA:
            return DnsQueryResult::nodata;
        case ARES_ENOTFOUND:
            return DnsQueryResult::nxdomain;
        case ARES_ESERVFAIL:
            return DnsQueryResult::servfail;
        case ARES_EREFUSED:
            return DnsQueryResult::refused;
        case ARES_ETIMEOUT:
            return DnsQueryResult::timeout;
        default:
            return DnsQueryResult::error;
    }
}

// Parses "IP", "IP:PORT", "[V6]:PORT", "[V6]" or a bare IPv6 literal.
bool parse_server(std::string_view text, ares_addr_port_node& out) {
    auto hp = parse_host_port(text);
    if (!hp) return false;
    std::string host(hp->host);
    int port_number = hp->port.value_or(0);
    out = ares_addr_port_node{};
    if (inet_pton(AF_INET, host.c_str(), &out.addr.addr4) == 1) {
        out.family = AF_INET;
    } else if (inet_pton(AF_INET6, host.c_str(), &out.addr.addr6) == 1) {
        out.family = AF_INET6;
    } else {
        return false;
    }
    out.udp_port = port_number;  // 0 = the channel default, 53
    out.tcp_port = port_number;
    return true;
}

bool plausible_domain(std::string_view d) {
    if (d.empty() || d.size() > 253) return false;
    return std::all_of(d.begin(), d.end(),
                       [](char c) { return c > ' ' && static_cast<unsigned char>(c) < 0x7f; });
}

}  // namespace

std::string_view to_string(MxResolution::Status s) {
    switch (s) {
        case MxResolution::Status::ok:
            return "ok";
        case MxResolution::Status::no_mail_domain:
            return "no_mail_domain";
        case MxResolution::Status::tempfail:
            return "tempfail";
    }
    return "unknown";
}

std::string_view to_string(DnsQueryResult r) {
    switch (r) {
        case DnsQueryResult::noerror:
            return "noerror";
        case DnsQueryResult::nodata:
            return "nodata";
        case DnsQueryResult::nxdomain:
            return "nxdomain";
        case DnsQueryResult::servfail:
            return "servfail";
        case DnsQueryResult::refused:
            return "refused";
        case DnsQueryResult::timeout:
            return "timeout";
        case DnsQueryResult::error:
            return "error";
    }
    return "error";
}

struct DnsResolver::Operation {
    struct HostLookup {
        MxHost host;
        std::vector<std::string> v4;
        std::vector<std::string> v6;
        std::string temp_reason;  // first temporary failure of its A or AAAA lookup
    };
    Handle handle = 0;
    std::string domain;
    MxCallback callback;
    NameCallback name_callback;  // set instead of `callback` for check_name()
    bool implicit = false;
    bool done = false;
    int pending = 0;  // c-ares queries issued and not yet answered
    std::vector<HostLookup> hosts;
    MxResolution result;
};

// Travels through c-ares as the query's void* argument. It names the operation by handle, not
// by pointer: c-ares cancels only per channel, so an answer for a cancelled operation still
// arrives and is dropped when the handle is no longer in operations_.
struct DnsResolver::QueryTag {
    DnsResolver* self;
    Handle handle;
    QueryKind kind;
    std::size_t host_index;
    int type;
    std::string name;
};

void DnsResolver::UvCloser::operator()(uv_poll_t* h) const {
    // libuv frees nothing itself and may still touch the handle until the close callback runs.
    uv_close(reinterpret_cast<uv_handle_t*>(h), [](uv_handle_t* closed) {
        std::unique_ptr<uv_poll_t> owned(reinterpret_cast<uv_poll_t*>(closed));
    });
}

void DnsResolver::UvCloser::operator()(uv_timer_t* h) const {
    uv_close(reinterpret_cast<uv_handle_t*>(h), [](uv_handle_t* closed) {
        std::unique_ptr<uv_timer_t> owned(reinterpret_cast<uv_timer_t*>(closed));
    });
}

DnsResolver::DnsResolver(Key, uv_loop_t* loop, const DnsOptions& options)
    : loop_(loop), options_(options), deliveries_(loop) {
    if (options_.shuffle_seed) {
        rng_.seed(*options_.shuffle_seed);
    } else {
        std::random_device rd;
        rng_.seed((static_cast<std::uint64_t>(rd()) << 32) ^ rd());
    }
    if (options_.max_mx_hosts == 0) options_.max_mx_hosts = 1;
    if (options_.max_addresses_per_host == 0) options_.max_addresses_per_host = 1;
    if (options_.tries < 1) options_.tries = 1;
    if (options_.max_outstanding_queries == 0) options_.max_outstanding_queries = 1;
}

std::unique_ptr<DnsResolver> DnsResolver::create(uv_loop_t* loop, DnsOptions options,
                                                 std::string& error) {
    auto r = std::make_unique<DnsResolver>(Key{}, loop, options);
    if (!r->init(error)) return nullptr;
    return r;
}

// Sets up the channel, its servers and the c-ares timer; false with a message on failure.
bool DnsResolver::init(std::string& error) {
    init_ares_library_once();
    std::vector<ares_addr_port_node> servers(options_.servers.size());
    for (std::size_t i = 0; i < options_.servers.size(); ++i) {
        if (!parse_server(options_.servers[i], servers[i])) {
            error = "bad DNS server address: " + options_.servers[i];
            return false;
        }
        if (i > 0) servers[i - 1].next = &servers[i];
    }

    // c-ares 1.18 reports "every server answered SERVFAIL/REFUSED/NOTIMP" as ARES_ECONNREFUSED,
    // indistinguishable from an unreachable server. With a single server there is nothing to
    // fail over to, so ARES_FLAG_NOCHECKRESP hands us the answer and its exact RCODE; with
    // several servers we keep c-ares' failover and report the merged "all-servers-failed".
    auto init_channel = [&](bool exact) {
        ares_options opts{};
        opts.sock_state_cb = &DnsResolver::ares_sock_state_cb;
        opts.sock_state_cb_data = this;
        opts.timeout = static_cast<int>(std::max<std::int64_t>(1, options_.timeout.count()));
        opts.tries = options_.tries;
        opts.flags = exact ? ARES_FLAG_NOCHECKRESP : 0;
        int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS;
        int rc = ares_init_options(&channel_, &opts, mask);
        if (rc != ARES_SUCCESS) {
            channel_ = nullptr;
            error = std::string("c-ares initialisation failed: ") + ares_strerror(rc);
            return false;
        }
        if (!servers.empty()) rc = ares_set_servers_ports(channel_, servers.data());
        if (rc != ARES_SUCCESS) {
            error = std::string("c-ares rejected the DNS servers: ") + ares_strerror(rc);
            return false;
        }
        exact_rcodes_ = exact;
        return true;
    };
    if (!init_channel(servers.size() == 1)) return false;
    if (servers.empty()) {  // from resolv.conf: count what c-ares found
        ares_addr_port_node* found = nullptr;
        std::size_t count = 0;
        if (ares_get_servers_ports(channel_, &found) == ARES_SUCCESS) {
            for (auto* n = found; n != nullptr; n = n->next) ++count;
            ares_free_data(found);
        }
        if (count == 1) {
            ares_destroy(channel_);  // no queries yet: nothing is called back
            channel_ = nullptr;
            if (!init_channel(true)) return false;
        }
    }

    auto ares_timer = std::make_unique<uv_timer_t>();
    if (uv_timer_init(loop_, ares_timer.get()) != 0) {
        error = "uv_timer_init failed";
        return false;
    }
    ares_timer_.reset(ares_timer.release());
    ares_timer_->data = this;
    return true;
}

DnsResolver::~DnsResolver() {
    // ares_destroy() ends every pending query with ARES_EDESTRUCTION (ares_query_cb returns
    // without touching the resolver) and reports each socket closed through ares_sock_state_cb,
    // which closes its uv_poll_t while the members are still alive. The handles themselves are
    // freed by libuv close callbacks on the loop's next turn.
    if (channel_ != nullptr) ares_destroy(channel_);
    channel_ = nullptr;
    polls_.clear();
}

DnsResolver::Handle DnsResolver::resolve_mx(std::string_view domain, MxCallback callback) {
    auto op = std::make_unique<Operation>();
    op->handle = next_handle_++;
    op->callback = std::move(callback);
    if (!domain.empty() && domain.back() == '.') domain.remove_suffix(1);
    op->domain = ascii_lower(domain);
    Operation& ref = *op;
    operations_.emplace(ref.handle, std::move(op));
    if (!plausible_domain(ref.domain)) {
        complete(ref, MxResolution::Status::no_mail_domain, "bad-name");
        return ref.handle;
    }
    start_query(ref, QueryKind::mx, 0, ref.domain);
    arm_timer();
    return ref.handle;
}

DnsResolver::Handle DnsResolver::check_name(std::string_view name, NameCallback callback) {
    auto op = std::make_unique<Operation>();
    op->handle = next_handle_++;
    op->name_callback = std::move(callback);
    op->domain = ascii_lower(name);
    Operation& ref = *op;
    operations_.emplace(ref.handle, std::move(op));
    if (!plausible_domain(ref.domain)) {
        complete(ref, MxResolution::Status::no_mail_domain, "bad-name");
        return ref.handle;
    }
    // c-ares encodes "." as the root; every working resolver knows the root's NS set.
    start_query(ref, ref.domain == "." ? QueryKind::ns : QueryKind::a, 0, ref.domain);
    arm_timer();
    return ref.handle;
}

bool DnsResolver::cancel(Handle handle) {
    return operations_.erase(handle) > 0;
}

// c-ares may call back synchronously from inside ares_query() (bad name, no servers), so the
// answer handlers only ever queue results; user callbacks run from deliver().
void DnsResolver::start_query(Operation& op, QueryKind kind, std::size_t host_index,
                              const std::string& name) {
    int type = kind == QueryKind::mx   ? kTypeMx
               : kind == QueryKind::a  ? kTypeA
               : kind == QueryKind::ns ? kTypeNs
                                       : kTypeAaaa;
    auto tag = std::make_unique<QueryTag>(QueryTag{this, op.handle, kind, host_index, type, name});
    // A new domain's MX lookup queues behind everything; whatever an operation asks next goes
    // first, so operations already under way finish (and their probes start) before new ones.
    bool first_query = kind == QueryKind::mx;
    (first_query ? waiting_ : follow_ups_).push_back(std::move(tag));
    ++op.pending;
    pump();
}

// Hands waiting queries to c-ares up to the outstanding limit, skipping cancelled operations.
void DnsResolver::pump() {
    if (pumping_) return;  // a synchronous answer inside ares_query() lands here; the loop below
    pumping_ = true;       // picks up the freed slot
    while (outstanding_ < options_.max_outstanding_queries &&
           (!follow_ups_.empty() || !waiting_.empty())) {
        auto& queue = follow_ups_.empty() ? waiting_ : follow_ups_;
        std::unique_ptr<QueryTag> tag = std::move(queue.front());
        queue.pop_front();
        auto it = operations_.find(tag->handle);
        if (it == operations_.end() || it->second->done) continue;
        ++outstanding_;
        QueryTag* raw = tag.release();  // owned by c-ares until ares_query_cb
        ares_query(channel_, raw->name.c_str(), kClassIn, raw->type, &DnsResolver::ares_query_cb,
                   raw);
    }
    pumping_ = false;
}

void DnsResolver::ares_query_cb(void* arg, int status, int /*timeouts*/, unsigned char* abuf,
                                int alen) {
    std::unique_ptr<QueryTag> tag(static_cast<QueryTag*>(arg));
    // Called from inside ares_destroy(): the resolver is being torn down, touch nothing.
    if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) return;
    DnsResolver* self = tag->self;
    --self->outstanding_;
    ++self->stats_.queries[static_cast<std::size_t>(query_result(status))];
    auto it = self->operations_.find(tag->handle);
    if (it != self->operations_.end() && !it->second->done) {  // else cancelled: stale answer
        Operation& op = *it->second;
        --op.pending;
        if (op.name_callback) {
            self->on_name_answer(op, tag->kind, status, abuf, alen);
        } else if (tag->kind == QueryKind::mx) {
            self->on_mx_answer(op, status, abuf, alen);
        } else {
            self->on_address_answer(op, tag->kind, tag->host_index, status, abuf, alen);
        }
    }
    self->pump();
}

// RFC 5321 5.1 and RFC 7505: decide between MX hosts, implicit MX, null MX and failures.
void DnsResolver::on_mx_answer(Operation& op, int status, const unsigned char* abuf, int alen) {
    auto implicit_mx = [&] {
        op.implicit = true;
        op.hosts.push_back({MxHost{op.domain, 0, true, {}}, {}, {}, {}});
        start_address_lookups(op);
    };
    switch (status) {
        case ARES_SUCCESS:
            break;
        case ARES_ENODATA:
            implicit_mx();
            return;
        case ARES_ENOTFOUND:
            complete(op, MxResolution::Status::no_mail_domain, "nxdomain");
            return;
        case ARES_EBADNAME:
            complete(op, MxResolution::Status::no_mail_domain, "bad-name");
            return;
        default:
            complete(op, MxResolution::Status::tempfail, temp_reason(status, exact_rcodes_));
            return;
    }

    ares_mx_reply* raw = nullptr;
    int rc = ares_parse_mx_reply(abuf, alen, &raw);
    std::unique_ptr<ares_mx_reply, AresMxFree> replies(raw);
    // An answer without MX records, e.g. only a CNAME whose target has none: c-ares 1.18 says
    // ENODATA for some such answers and success with an empty list for others.
    if (rc == ARES_ENODATA || (rc == ARES_SUCCESS && replies == nullptr)) {
        implicit_mx();
        return;
    }
    if (rc != ARES_SUCCESS) {
        complete(op, MxResolution::Status::tempfail, "bad-response");
        return;
    }

    std::vector<std::pair<std::uint16_t, std::string>> records;
    for (ares_mx_reply* r = replies.get(); r != nullptr; r = r->next) {
        std::string host = ascii_lower(r->host != nullptr ? r->host : "");
        if (!host.empty() && host.back() == '.') host.pop_back();
        if (host.empty()) continue;  // "." is the null MX target, never a host to connect to
        records.emplace_back(r->priority, std::move(host));
    }
    if (records.empty()) {
        // Only "." targets: RFC 7505 null MX, the domain accepts no mail.
        complete(op, MxResolution::Status::no_mail_domain, "null-mx");
        return;
    }

    // Sort by (preference, name) first so a seeded shuffle does not depend on answer order.
    std::sort(records.begin(), records.end());
    for (auto first = records.begin(); first != records.end();) {
        auto last = std::find_if(first, records.end(),
                                 [&](const auto& r) { return r.first != first->first; });
        std::shuffle(first, last, rng_);
        first = last;
    }
    std::set<std::string> seen;
    for (auto& [preference, host] : records) {
        if (op.hosts.size() >= options_.max_mx_hosts) break;
        if (!seen.insert(host).second) continue;
        op.hosts.push_back({MxHost{std::move(host), preference, false, {}}, {}, {}, {}});
    }
    start_address_lookups(op);
}

// The canary's answer: records of the asked type mean the resolver works; an A-less name gets one
// more try for AAAA.
void DnsResolver::on_name_answer(Operation& op, QueryKind kind, int status,
                                 const unsigned char* abuf, int alen) {
    if (status == ARES_SUCCESS) {
        int count = 0;
        if (kind == QueryKind::ns) {
            hostent* raw = nullptr;
            if (ares_parse_ns_reply(abuf, alen, &raw) == ARES_SUCCESS && raw != nullptr) {
                std::unique_ptr<hostent, HostentFree> host(raw);
                while (host->h_aliases != nullptr && host->h_aliases[count] != nullptr) ++count;
            }
        } else if (kind == QueryKind::a) {
            std::array<ares_addrttl, kMaxParsedAddresses> addrs{};
            count = kMaxParsedAddresses;
            if (ares_parse_a_reply(abuf, alen, nullptr, addrs.data(), &count) != ARES_SUCCESS)
                count = 0;
        } else {
            std::array<ares_addr6ttl, kMaxParsedAddresses> addrs{};
            count = kMaxParsedAddresses;
            if (ares_parse_aaaa_reply(abuf, alen, nullptr, addrs.data(), &count) != ARES_SUCCESS)
                count = 0;
        }
        if (count > 0) {
            complete(op, MxResolution::Status::ok,
                     kind == QueryKind::ns  ? "ns"
                     : kind == QueryKind::a ? "a"
                                            : "aaaa");
            return;
        }
        status = ARES_ENODATA;
    }
    if (status == ARES_ENODATA && kind == QueryKind::a) {
        start_query(op, QueryKind::aaaa, 0, op.domain);
        return;
    }
    if (status == ARES_ENODATA) {
        complete(op, MxResolution::Status::no_mail_domain, "nodata");
    } else if (status == ARES_ENOTFOUND) {
        complete(op, MxResolution::Status::no_mail_domain, "nxdomain");
    } else {
        complete(op, MxResolution::Status::tempfail, temp_reason(status, exact_rcodes_));
    }
}

void DnsResolver::start_address_lookups(Operation& op) {
    // Hold one pending count while issuing, so a synchronous failure cannot finish early.
    ++op.pending;
    for (std::size_t i = 0; i < op.hosts.size(); ++i) {
        start_query(op, QueryKind::a, i, op.hosts[i].host.name);
        if (op.done) return;
        start_query(op, QueryKind::aaaa, i, op.hosts[i].host.name);
        if (op.done) return;
    }
    --op.pending;
    finish_if_done(op);
}

void DnsResolver::on_address_answer(Operation& op, QueryKind kind, std::size_t host_index,
                                    int status, const unsigned char* abuf, int alen) {
    auto& host = op.hosts[host_index];
    if (status == ARES_SUCCESS) {
        std::array<char, INET6_ADDRSTRLEN> text{};
        int count = kMaxParsedAddresses;
        int rc;
        if (kind == QueryKind::a) {
            std::array<ares_addrttl, kMaxParsedAddresses> addrs{};
            rc = ares_parse_a_reply(abuf, alen, nullptr, addrs.data(), &count);
            for (int i = 0; rc == ARES_SUCCESS && i < count; ++i) {
                if (inet_ntop(AF_INET, &addrs[i].ipaddr, text.data(), text.size()) != nullptr) {
                    host.v4.emplace_back(text.data());
                }
            }
        } else {
            std::array<ares_addr6ttl, kMaxParsedAddresses> addrs{};
            rc = ares_parse_aaaa_reply(abuf, alen, nullptr, addrs.data(), &count);
            for (int i = 0; rc == ARES_SUCCESS && i < count; ++i) {
                if (inet_ntop(AF_INET6, &addrs[i].ip6addr, text.data(), text.size()) != nullptr) {
                    host.v6.emplace_back(text.data());
                }
            }
        }
        if (rc != ARES_SUCCESS && rc != ARES_ENODATA && host.temp_reason.empty()) {
            host.temp_reason = "bad-response";
        }
    } else if (status != ARES_ENODATA && status != ARES_ENOTFOUND && host.temp_reason.empty()) {
        host.temp_reason = temp_reason(status, exact_rcodes_);
    }
    finish_if_done(op);
}

// Once every address lookup has answered: keep hosts with addresses, or explain why none.
void DnsResolver::finish_if_done(Operation& op) {
    if (op.pending > 0 || op.done) return;
    std::string first_temp;
    for (auto& lookup : op.hosts) {
        std::vector<std::string>& out = lookup.host.addresses;
        for (auto* family : {&lookup.v4, &lookup.v6}) {
            for (auto& a : *family) {
                if (out.size() >= options_.max_addresses_per_host) break;
                if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
            }
        }
        if (!out.empty()) {
            op.result.hosts.push_back(std::move(lookup.host));
        } else if (first_temp.empty()) {
            first_temp = lookup.temp_reason;
        }
    }
    if (!op.result.hosts.empty()) {
        complete(op, MxResolution::Status::ok, op.implicit ? "implicit-mx" : "mx");
    } else if (!first_temp.empty()) {
        complete(op, MxResolution::Status::tempfail, first_temp);
    } else if (op.implicit) {
        complete(op, MxResolution::Status::no_mail_domain, "no-mx-no-address");
    } else {
        complete(op, MxResolution::Status::tempfail, "mx-without-address");
    }
}

void DnsResolver::complete(Operation& op, MxResolution::Status status, std::string reason) {
    op.done = true;
    op.result.status = status;
    op.result.reason = std::move(reason);
    if (status != MxResolution::Status::ok) op.result.hosts.clear();
    deliveries_.post([this, handle = op.handle] { deliver(handle); });
}

// Runs a completed operation's callback. It may resolve, cancel, or destroy the resolver.
void DnsResolver::deliver(Handle handle) {
    auto it = operations_.find(handle);
    if (it == operations_.end()) return;  // cancelled after it completed
    std::unique_ptr<Operation> op = std::move(it->second);
    operations_.erase(it);
    if (op->name_callback) {
        op->name_callback(
            NameCheck{op->result.status == MxResolution::Status::ok, std::move(op->result.reason)});
    } else {
        op->callback(std::move(op->result));
    }
}

void DnsResolver::arm_timer() {
    timeval tv{};
    timeval* next = ares_timeout(channel_, nullptr, &tv);
    if (next == nullptr) {
        uv_timer_stop(ares_timer_.get());
        return;
    }
    std::uint64_t ms = static_cast<std::uint64_t>(next->tv_sec) * 1000 +
                       static_cast<std::uint64_t>(next->tv_usec + 999) / 1000;
    uv_timer_start(
        ares_timer_.get(),
        [](uv_timer_t* t) {
            auto* self = static_cast<DnsResolver*>(t->data);
            ares_process_fd(self->channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
            self->arm_timer();
        },
        ms, 0);
}

void DnsResolver::ares_sock_state_cb(void* data, ares_socket_t fd, int readable, int writable) {
    static_cast<DnsResolver*>(data)->on_sock_state(fd, readable != 0, writable != 0);
}

// c-ares tells us which sockets it wants watched; one uv_poll_t mirrors each of them.
void DnsResolver::on_sock_state(ares_socket_t fd, bool readable, bool writable) {
    if (!readable && !writable) {
        polls_.erase(fd);  // closes the handle; c-ares closes the socket right after
        return;
    }
    auto it = polls_.find(fd);
    if (it == polls_.end()) {
        auto poll = std::make_unique<uv_poll_t>();
        // On failure the query times out through the ares timer; nothing else to do here.
        if (uv_poll_init_socket(loop_, poll.get(), fd) != 0) return;
        poll->data = this;
        it = polls_.emplace(fd, PollPtr(poll.release())).first;
    }
    int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
    uv_poll_start(it->second.get(), events, [](uv_poll_t* h, int status, int ready) {
        auto* self = static_cast<DnsResolver*>(h->data);
        uv_os_fd_t sock = -1;
        uv_fileno(reinterpret_cast<uv_handle_t*>(h), &sock);
        ares_socket_t read_fd = ARES_SOCKET_BAD;
        ares_socket_t write_fd = ARES_SOCKET_BAD;
        if (status < 0) {
            // Let c-ares hit the socket error itself and fail over to the next server.
            read_fd = write_fd = sock;
        } else {
            if (ready & UV_READABLE) read_fd = sock;
            if (ready & UV_WRITABLE) write_fd = sock;
        }
        // May close h through on_sock_state; h is not touched afterwards.
        ares_process_fd(self->channel_, read_fd, write_fd);
        self->arm_timer();
    });
}

}  // namespace calloutd
