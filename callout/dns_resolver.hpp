// Asynchronous MX resolution (RFC 5321 5.1, RFC 7505) with c-ares driven by a caller's libuv loop.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <ares.h>
#include <uv.h>

#include "util/deferred_queue.hpp"

namespace calloutd {

struct DnsOptions {
    // "IP", "IP:PORT", "[V6]:PORT" or a bare IPv6 literal; empty = the system's resolv.conf.
    std::vector<std::string> servers;
    // Per-try timeout; c-ares doubles it on each full pass over the server list.
    std::chrono::milliseconds timeout{2000};
    int tries = 2;
    // Seed for the shuffle among equal MX preferences; unset = std::random_device.
    std::optional<std::uint64_t> shuffle_seed;
    // At most this many MX hosts are looked up (after sorting), and this many addresses kept each.
    std::size_t max_mx_hosts = 10;
    std::size_t max_addresses_per_host = 8;
    // Queries on the wire at once; more wait in a FIFO. A burst of hundreds of UDP queries
    // overflows a resolver's socket buffer and turns into timeouts.
    std::size_t max_outstanding_queries = 64;
};

struct MxHost {
    std::string name;
    std::uint16_t preference = 0;
    bool implicit = false;  // no MX records: the domain itself, from its A/AAAA (RFC 5321 5.1)
    std::vector<std::string> addresses;  // IPv4 literals, then IPv6 literals
};

struct MxResolution {
    enum class Status { ok, no_mail_domain, tempfail };
    Status status = Status::tempfail;
    // ok: "mx" | "implicit-mx"
    // no_mail_domain: "nxdomain" | "null-mx" | "no-mx-no-address" | "bad-name"
    // tempfail: "servfail" | "refused" | "dns-timeout" | "connection-refused" | "bad-response"
    //           | "all-servers-failed" (several servers, each SERVFAIL/REFUSED/unreachable)
    //           | "notimp" | "mx-without-address" | "dns-error"
    std::string reason;
    std::vector<MxHost> hosts;  // only hosts with at least one address, in delivery order
};

std::string_view to_string(MxResolution::Status s);

// How one DNS query (MX, A or AAAA) ended, as counted in calloutd_dns_queries_total{result}.
enum class DnsQueryResult { noerror, nodata, nxdomain, servfail, refused, timeout, error };
inline constexpr std::size_t kDnsQueryResults = 7;
std::string_view to_string(DnsQueryResult r);

struct DnsStats {
    std::array<std::uint64_t, kDnsQueryResults> queries{};  // answered queries by result
};

// Whether a name resolves at all (the DNS health canary): the root "." must have NS records,
// any other name an A or AAAA record.
struct NameCheck {
    bool resolves = false;
    // resolves: "ns" | "a" | "aaaa"; else "nxdomain" | "nodata" | a tempfail reason as above
    std::string reason;
};

// One c-ares channel on a caller-supplied loop. Not thread-safe; use from the loop's thread.
// Callbacks are always invoked from the loop, never from inside resolve_mx() or cancel().
// After destroying the resolver the caller must let the loop run once more so libuv can finish
// closing its handles (their memory is released by the close callbacks).
class DnsResolver {
  public:
    using Handle = std::uint64_t;  // never reused; 0 is never a valid handle
    using MxCallback = std::function<void(MxResolution)>;
    using NameCallback = std::function<void(NameCheck)>;

    // Returns nullptr and sets error on a bad server list or a c-ares initialisation failure.
    static std::unique_ptr<DnsResolver> create(uv_loop_t* loop, DnsOptions options,
                                               std::string& error);
    ~DnsResolver();
    DnsResolver(const DnsResolver&) = delete;
    DnsResolver& operator=(const DnsResolver&) = delete;

    // Constructible only through create(); the key keeps the constructor out of reach.
    class Key {
        friend class DnsResolver;
        Key() = default;
    };
    DnsResolver(Key, uv_loop_t* loop, const DnsOptions& options);

    Handle resolve_mx(std::string_view domain, MxCallback callback);
    // Asks whether `name` resolves (see NameCheck); same delivery rules as resolve_mx().
    Handle check_name(std::string_view name, NameCallback callback);
    // The callback of handle will never run. Returns false if it already ran or was unknown.
    bool cancel(Handle handle);
    // Operations not yet completed or delivered.
    std::size_t in_flight() const { return operations_.size(); }
    const DnsStats& stats() const { return stats_; }

  private:
    struct Operation;
    struct QueryTag;
    struct UvCloser {
        void operator()(uv_poll_t* h) const;
        void operator()(uv_timer_t* h) const;
    };
    using PollPtr = std::unique_ptr<uv_poll_t, UvCloser>;
    using TimerPtr = std::unique_ptr<uv_timer_t, UvCloser>;
    enum class QueryKind { mx, a, aaaa, ns };

    bool init(std::string& error);

    void start_query(Operation& op, QueryKind kind, std::size_t host_index,
                     const std::string& name);
    void on_mx_answer(Operation& op, int status, const unsigned char* abuf, int alen);
    void on_address_answer(Operation& op, QueryKind kind, std::size_t host_index, int status,
                           const unsigned char* abuf, int alen);
    void on_name_answer(Operation& op, QueryKind kind, int status, const unsigned char* abuf,
                        int alen);
    void start_address_lookups(Operation& op);
    void pump();
    void finish_if_done(Operation& op);
    void complete(Operation& op, MxResolution::Status status, std::string reason);
    void deliver(Handle handle);
    void arm_timer();
    void on_sock_state(ares_socket_t fd, bool readable, bool writable);

    static void ares_query_cb(void* arg, int status, int timeouts, unsigned char* abuf, int alen);
    static void ares_sock_state_cb(void* data, ares_socket_t fd, int readable, int writable);

    uv_loop_t* loop_;
    DnsOptions options_;
    ares_channel channel_ = nullptr;
    TimerPtr ares_timer_;
    std::unordered_map<ares_socket_t, PollPtr> polls_;
    std::map<Handle, std::unique_ptr<Operation>> operations_;
    // Queries not yet handed to c-ares. Follow-ups (the A/AAAA lookups of an MX answer, the
    // canary) go before new MX lookups: a burst of domains then finishes domain by domain and
    // the first probes connect at once, instead of every address lookup waiting behind every
    // MX lookup of the burst.
    std::deque<std::unique_ptr<QueryTag>> follow_ups_;
    std::deque<std::unique_ptr<QueryTag>> waiting_;
    std::size_t outstanding_ = 0;  // queries handed to c-ares, not answered
    bool pumping_ = false;
    bool exact_rcodes_ = false;  // ARES_FLAG_NOCHECKRESP: see init()
    Handle next_handle_ = 1;
    DnsStats stats_;
    std::mt19937_64 rng_;
    // Completed operations wait here for a later loop turn, so a callback never runs from
    // inside resolve_mx(), check_name() or c-ares; one may destroy the resolver.
    DeferredQueue deliveries_;
};

}  // namespace calloutd
