// Hostile policy clients against the real daemon: ten thousand idle connections, slowloris,
// a 1 MB request, 100,000 attributes, NUL bytes, invalid UTF-8 in every attribute. Each is
// logged, only the offending connection is closed, and a good client next to it is served.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <thread>
#include <vector>

#include "support/daemon_process.hpp"
#include "support/policy_client.hpp"

namespace calloutd::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Requests are answered by a skip rule and DNS points at a closed port: nothing leaves the
// machine, and the answer is immediate, so the latency measured is the daemon's own.
std::string config(const std::string& server_extra) {
    return "[server]\nlisten = [\"inet:127.0.0.1:0\"]\nreply_timeout = \"2s\"\n" + server_extra +
           "\n[log]\nlevel = \"info\"\n[dns]\nservers = [\"127.0.0.1:9\"]\n"
           "[policy]\nskip_domains = [\"example.org\"]\n";
}

size_t count_of(const std::string& text, const std::string& needle) {
    size_t n = 0;
    for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1))
        ++n;
    return n;
}

// True when the peer has closed `fd` (EOF or reset), without blocking.
bool closed_by_peer(int fd) {
    pollfd p{fd, POLLIN | POLLRDHUP, 0};
    if (poll(&p, 1, 0) != 1) return false;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

size_t count_closed(const std::vector<PolicyClient>& clients) {
    std::vector<pollfd> fds;
    for (const auto& c : clients) fds.push_back({c.fd(), POLLIN | POLLRDHUP, 0});
    poll(fds.data(), fds.size(), 0);
    size_t closed = 0;
    for (const auto& p : fds) {
        if (p.revents != 0 && closed_by_peer(p.fd)) ++closed;
    }
    return closed;
}

// p99 of `n` request/answer round trips on `c`, in microseconds (0 if one was not answered).
int64_t p99_us(PolicyClient& c, int n) {
    std::vector<int64_t> us;
    const std::string req = policy_request("alice@example.org");
    for (int i = 0; i < n; ++i) {
        auto t0 = Clock::now();
        if (!c.send(req) || c.read_action(5s) != "DUNNO") return 0;
        us.push_back(
            std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
    }
    std::sort(us.begin(), us.end());
    return us[us.size() * 99 / 100];
}

TEST(HostileClients, TenThousandIdleConnectionsDoNotSlowRealRequests) {
    constexpr int kIdle = 10000;
    constexpr int kMaxConnections = 1000;
    rlimit lim{};
    getrlimit(RLIMIT_NOFILE, &lim);
    if (lim.rlim_max < kIdle + 200) GTEST_SKIP() << "needs " << kIdle + 200 << " descriptors";
    lim.rlim_cur = lim.rlim_max;  // the daemon, started below, inherits it
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lim), 0);

    DaemonProcess d("hostile-idle", config("max_connections = " + std::to_string(kMaxConnections) +
                                           "\nidle_timeout = \"10s\"\n"));
    ASSERT_TRUE(d.started()) << d.log();
    const uint16_t port = d.tcp_port();
    PolicyClient good = PolicyClient::inet("127.0.0.1", port);
    ASSERT_TRUE(good.send(policy_request("alice@example.org")));
    ASSERT_EQ(good.read_action(), "DUNNO");

    auto opened_at = Clock::now();
    std::vector<PolicyClient> idle;
    idle.reserve(kIdle);
    for (int i = 0; i < kIdle; ++i) {
        idle.push_back(PolicyClient::inet("127.0.0.1", port));
        ASSERT_TRUE(idle.back().connected()) << i;
        if (i % 1000 == 999) {  // the good client stays busy, so idle_timeout never hits it
            ASSERT_TRUE(good.send(policy_request("alice@example.org")));
            ASSERT_EQ(good.read_action(), "DUNNO");
        }
    }
    // Over max_connections, connections are closed at once; the others stay open.
    const size_t want_refused = kIdle - (kMaxConnections - 1);
    auto deadline = Clock::now() + 20s;
    size_t refused = 0;
    while ((refused = count_closed(idle)) < want_refused && Clock::now() < deadline) {
        std::this_thread::sleep_for(50ms);
    }
    const bool before_idle_timeout = Clock::now() - opened_at < 9s;
    EXPECT_GE(refused, want_refused) << "connections over max_connections must be refused";
    if (before_idle_timeout) {
        EXPECT_EQ(refused, want_refused) << "no accepted one may close yet";
    }

    // Real requests meanwhile: the best of three rounds of 1,000 (the machine is shared).
    int64_t best = INT64_MAX;
    for (int round = 0; round < 3; ++round) {
        int64_t p99 = p99_us(good, 1000);
        ASSERT_GT(p99, 0) << "a request on the good connection was not answered";
        best = std::min(best, p99);
    }
#ifdef CALLOUTD_SANITIZED
    const int64_t bound_us = 20000;  // sanitizers make everything several times slower
#else
    const int64_t bound_us = 1000;  // DESIGN.md: cached p99 <= 1 ms
#endif
    EXPECT_LE(best, bound_us) << "p99 " << best << " us with " << kIdle << " idle connections";
    RecordProperty("p99_us", std::to_string(best));
    std::cout << "p99 with " << kIdle << " idle connections: " << best << " us\n";

    // The accepted idle ones time out on idle_timeout; the busy good one does not.
    deadline = Clock::now() + 30s;
    size_t closed = 0;
    while ((closed = count_closed(idle)) < static_cast<size_t>(kIdle) && Clock::now() < deadline) {
        ASSERT_TRUE(good.send(policy_request("alice@example.org")));
        ASSERT_EQ(good.read_action(), "DUNNO");
        std::this_thread::sleep_for(500ms);
    }
    EXPECT_EQ(closed, static_cast<size_t>(kIdle));
    ASSERT_TRUE(good.send(policy_request("alice@example.org")));
    EXPECT_EQ(good.read_action(), "DUNNO");

    // A log line for each: refused, and timed out.
    ASSERT_TRUE(d.wait_for_log("idle-timeout", 5s));
    std::string log = d.log();
    EXPECT_GE(count_of(log, "connection-refused"), want_refused);
    EXPECT_GE(count_of(log, " idle-timeout peer="), static_cast<size_t>(kIdle) - refused);
    EXPECT_TRUE(d.running());
}

class HostileClient : public ::testing::Test {
  protected:
    void SetUp() override {
        daemon_ = std::make_unique<DaemonProcess>("hostile", config("request_timeout = \"2s\"\n"
                                                                    "idle_timeout = \"60s\"\n"));
        ASSERT_TRUE(daemon_->started()) << daemon_->log();
        good_ = std::make_unique<PolicyClient>(PolicyClient::inet("127.0.0.1", port()));
        expect_good_served();
    }
    uint16_t port() const { return daemon_->tcp_port(); }
    PolicyClient connect() const { return PolicyClient::inet("127.0.0.1", port()); }
    void expect_good_served() {
        auto t0 = Clock::now();
        ASSERT_TRUE(good_->send(policy_request("alice@example.org")));
        EXPECT_EQ(good_->read_action(2s), "DUNNO");
        EXPECT_LT(Clock::now() - t0, 1s);
    }
    // The offending connection was closed, the reason logged, and the good one still served.
    void expect_handled(PolicyClient& bad, const std::string& logged) {
        EXPECT_TRUE(bad.wait_closed(5s)) << logged;
        EXPECT_TRUE(daemon_->wait_for_log(logged, 5s)) << daemon_->log();
        expect_good_served();
        EXPECT_TRUE(daemon_->running());
    }

    std::unique_ptr<DaemonProcess> daemon_;
    std::unique_ptr<PolicyClient> good_;
};

TEST_F(HostileClient, SlowlorisIsClosedAfterRequestTimeout) {
    PolicyClient slow = connect();
    const std::string request = policy_request("alice@example.org");
    std::atomic<bool> stop{false};
    // The good client keeps asking while the slow one trickles: never held up.
    std::thread good_client([&] {
        while (!stop) {
            expect_good_served();
            std::this_thread::sleep_for(200ms);
        }
    });
    auto start = Clock::now();
    bool closed = false;
    for (size_t i = 0; i < request.size() && Clock::now() - start < 15s; ++i) {
        if (!slow.send(request.substr(i, 1))) break;  // one byte a second
        if (slow.wait_closed(1s)) {
            closed = true;
            break;
        }
    }
    double after = std::chrono::duration<double>(Clock::now() - start).count();
    stop = true;
    good_client.join();
    EXPECT_TRUE(closed || slow.wait_closed(2s)) << "still open after " << after << " s";
    EXPECT_GE(after, 1.5) << "closed before server.request_timeout";
    EXPECT_LE(after, 10.0);
    EXPECT_TRUE(daemon_->wait_for_log("request not complete within server.request_timeout", 2s));
    expect_good_served();
}

TEST_F(HostileClient, MegabyteRequestIsRefused) {
    PolicyClient bad = connect();
    bad.send("request=smtpd_access_policy\nsender=" + std::string(1 << 20, 'a') + "\n\n");
    expect_handled(bad, "reason=\"line too long\"");
}

TEST_F(HostileClient, HundredThousandAttributesAreRefused) {
    PolicyClient bad = connect();
    std::string request = "request=smtpd_access_policy\n";
    for (int i = 0; i < 100000; ++i) request += "a" + std::to_string(i) + "=b\n";
    bad.send(request + "\n");
    expect_handled(bad, "reason=\"request too large\"");
}

TEST_F(HostileClient, NulBytesAreRefused) {
    PolicyClient bad = connect();
    std::string request = policy_request("alice@example.org");
    request.insert(request.find("alice") + 2, std::string(1, '\0'));
    bad.send(request);
    expect_handled(bad, "reason=\"binary or control byte in request\"");
}

TEST_F(HostileClient, InvalidUtf8InEveryAttributeIsAnsweredThenClosed) {
    PolicyClient bad = connect();
    std::string request = "request=smtpd_access_policy\n";
    for (const char* name :
         {"protocol_state", "protocol_name", "client_address", "client_name", "reverse_client_name",
          "helo_name", "sender", "recipient", "queue_id", "instance", "sasl_method",
          "sasl_username", "encryption_protocol", "policy_context", "x_unknown\xff"}) {
        request += std::string(name) + "=RCPT\xc3\x28\xff\xed\xa0\x80\n";
    }
    bad.send(request + "\n" + policy_request("alice@example.org"));
    // Answered (fail open: a sender that is not UTF-8 is not verified), then let go: the
    // request after it is not read.
    EXPECT_EQ(bad.read_action(), "DUNNO");
    expect_handled(bad, "reason=\"invalid UTF-8 in attribute 'protocol_state'\"");
}

}  // namespace
}  // namespace calloutd::test
