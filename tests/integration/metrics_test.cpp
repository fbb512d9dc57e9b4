// The metrics listener of the real daemon: exact counters after a known mix of requests,
// promtool and a real Prometheus server reading them, and hostile scrapers that must not delay
// a single policy answer.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <csignal>
#include <ctime>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "support/callout_world.hpp"
#include "support/command.hpp"
#include "support/daemon_process.hpp"
#include "support/dnsmasq.hpp"
#include "support/fake_smtp.hpp"
#include "support/http_client.hpp"
#include "support/metrics_scrape.hpp"
#include "support/policy_client.hpp"
#include "support/prometheus_server.hpp"
#include "support/text.hpp"

namespace calloutd::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kGoodIp = "127.0.0.111";  // good.test: knows alice, nobody else

class Metrics : public ::testing::Test {
  protected:
    void SetUp() override {
        DnsmasqZones z;
        z.local_domains = {"test"};
        z.mx = {{"good.test", "mx.good.test", 10}};
        z.hosts = {{"mx.good.test", {kGoodIp}}};
        dnsmasq_ = std::make_unique<Dnsmasq>(z);
        FakeSmtpScript knows_alice;
        knows_alice.recipients["alice"] = "250 2.1.5 ok";
        smtp_ = std::make_unique<FakeSmtpServer>(knows_alice, kGoodIp);
        ASSERT_TRUE(smtp_->ok()) << smtp_->error();
        CalloutConfig c;
        c.dns_server = dnsmasq_->server();
        c.smtp_port = smtp_->port();
        c.log_level = "info";
        c.sections =
            "[limits]\ndomain_rate = \"2/1m\"\n"
            "[metrics]\nlisten = \"inet:127.0.0.1:0\"\n";
        daemon_ = std::make_unique<DaemonProcess>("metrics", callout_config(c));
        ASSERT_TRUE(daemon_->started()) << daemon_->log();
        ASSERT_NE(metrics_port(*daemon_), 0) << daemon_->log();
    }
    void TearDown() override {
        if (HasFailure() && daemon_) std::cerr << "--- calloutd log ---\n" << daemon_->log();
        if (smtp_) smtp_->stop();
    }

    PolicyClient client() const { return PolicyClient::inet("127.0.0.1", daemon_->tcp_port()); }
    double value(const std::string& text, const std::string& series) {
        auto v = sample_value(text, series);
        EXPECT_TRUE(v.has_value()) << "no sample " << series;
        return v.value_or(-1);
    }

    std::unique_ptr<Dnsmasq> dnsmasq_;
    std::unique_ptr<FakeSmtpServer> smtp_;
    std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(Metrics, CountersHaveExactlyTheExpectedValuesAfterAKnownMix) {
    PolicyClient c = client();
    auto ask = [&](const std::string& sender) {
        c.send(policy_request(sender));
        return c.read_action(10s).value_or("<no answer>");
    };
    EXPECT_EQ(ask("alice@good.test"), "DUNNO");                       // valid, probed
    EXPECT_EQ(ask("alice@good.test"), "DUNNO");                       // valid, from the cache
    EXPECT_TRUE(ask("ghost@good.test").starts_with("REJECT 5.1.7"));  // invalid, probed
    EXPECT_EQ(ask("carol@good.test"), "DUNNO");    // rate_limited: domain_rate 2/1m is spent
    EXPECT_EQ(ask("someone@gmail.com"), "DUNNO");  // skipped: never-probe list
    EXPECT_EQ(ask(""), "DUNNO");                   // skipped: null sender
    PolicyClient garbage = client();
    garbage.send("no equals sign here\n\n");  // bad_attribute
    EXPECT_TRUE(garbage.wait_closed());
    PolicyClient binary = client();
    binary.send(std::string("request=smtpd_access_policy\nsender=a\x01@b\n\n"));  // binary
    EXPECT_TRUE(binary.wait_closed());

    std::string m = scrape(*daemon_);
    ASSERT_FALSE(m.empty());
    std::cout << "[ scrape   ] " << m.size() << " bytes\n";
    auto req = [](const char* cls, const char* action, const char* source) {
        return std::string("calloutd_requests_total{class=\"") + cls + "\",action=\"" + action +
               "\",source=\"" + source + "\"}";
    };
    EXPECT_EQ(value(m, req("valid", "DUNNO", "probe")), 1);
    EXPECT_EQ(value(m, req("valid", "DUNNO", "cache")), 1);
    EXPECT_EQ(value(m, req("invalid", "REJECT", "probe")), 1);
    EXPECT_EQ(value(m, req("rate_limited", "DUNNO", "limit")), 1);
    EXPECT_EQ(value(m, req("skipped", "DUNNO", "skip")), 2);
    EXPECT_EQ(occurrences(m, "\ncalloutd_requests_total{"), 5u) << m;
    EXPECT_EQ(value(m, "calloutd_request_duration_seconds_count"), 6);
    EXPECT_EQ(value(m, "calloutd_request_duration_seconds_bucket{le=\"+Inf\"}"), 6);
    EXPECT_EQ(value(m, "calloutd_probes_total{class=\"valid\"}"), 1);
    EXPECT_EQ(value(m, "calloutd_probes_total{class=\"invalid\"}"), 1);
    EXPECT_EQ(value(m, "calloutd_probes_total{class=\"tempfail\"}"), 0);
    EXPECT_EQ(value(m, "calloutd_probe_duration_seconds_count{class=\"valid\"}"), 1);
    EXPECT_EQ(value(m, "calloutd_probe_connections_total{result=\"connected\"}"), 2);
    EXPECT_EQ(value(m, "calloutd_probe_connections_total{result=\"refused\"}"), 0);
    EXPECT_EQ(value(m, "calloutd_probes_in_flight"), 0);
    EXPECT_EQ(value(m, "calloutd_budget_denials_total{budget=\"domain\"}"), 1);
    EXPECT_EQ(value(m, "calloutd_budget_denials_total{budget=\"client\"}"), 0);
    EXPECT_EQ(value(m, "calloutd_budget_denials_total{budget=\"provider\"}"), 0);
    EXPECT_EQ(value(m, "calloutd_cache_lookups_total{result=\"hit\"}"), 1);
    EXPECT_EQ(value(m, "calloutd_cache_lookups_total{result=\"miss\"}"), 3);
    EXPECT_EQ(value(m, "calloutd_cache_lookups_total{result=\"near_hit\"}"), 0);
    // alice and ghost, and good.test's "not accept-all" fact (its random local part was refused).
    EXPECT_EQ(value(m, "calloutd_cache_entries"), 3);
    EXPECT_EQ(value(m, "calloutd_protocol_errors_total{kind=\"bad_attribute\"}"), 1);
    EXPECT_EQ(value(m, "calloutd_protocol_errors_total{kind=\"binary\"}"), 1);
    EXPECT_EQ(value(m, "calloutd_protocol_errors_total{kind=\"line_too_long\"}"), 0);
    EXPECT_EQ(value(m, "calloutd_policy_connections"), 1);
    EXPECT_EQ(value(m, "calloutd_policy_connections_total"), 3);
    EXPECT_EQ(value(m, "calloutd_redis_up"), 0);
    EXPECT_EQ(value(m, "calloutd_redis_degraded"), 0);
    EXPECT_EQ(value(m, "calloutd_redis_timeouts_total"), 0);
    EXPECT_GE(value(m, "calloutd_dns_queries_total{result=\"noerror\"}"), 2);
    EXPECT_EQ(value(m, "calloutd_dns_queries_total{result=\"timeout\"}"), 0);
    EXPECT_EQ(value(m, "calloutd_config_reloads_total{result=\"ok\"}"), 0);
    EXPECT_EQ(value(m, "calloutd_build_info{version=\"" CALLOUTD_VERSION "\"}"), 1);
    EXPECT_NEAR(value(m, "process_start_time_seconds"), static_cast<double>(std::time(nullptr)),
                120);
    EXPECT_GT(value(m, "process_resident_memory_bytes"), 1e6);
    EXPECT_GT(value(m, "process_open_fds"), 3);

    daemon_->signal(SIGHUP);
    ASSERT_TRUE(daemon_->wait_for_log(" reloaded ", 5s));
    EXPECT_EQ(value(scrape(*daemon_), "calloutd_config_reloads_total{result=\"ok\"}"), 1);
}

TEST_F(Metrics, PromtoolAcceptsTheExposition) {
    PolicyClient c = client();
    c.send(policy_request("alice@good.test"));
    ASSERT_EQ(c.read_action(10s), "DUNNO");
    std::string file = daemon_->dir() + "/scrape.txt";
    std::ofstream(file) << scrape(*daemon_);
    auto r = run_command({"/bin/sh", "-c", "promtool check metrics < " + file}, 30s);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(r.out + r.err, "") << "promtool had remarks";
}

TEST_F(Metrics, APrometheusServerScrapesTheDaemon) {
    PolicyClient c = client();
    c.send(policy_request("someone@gmail.com"));
    ASSERT_EQ(c.read_action(10s), "DUNNO");
    PrometheusServer prometheus("127.0.0.1:" + std::to_string(metrics_port(*daemon_)), 500ms);
    ASSERT_TRUE(prometheus.started()) << prometheus.log();
    std::string up;
    std::string requests;
    auto deadline = Clock::now() + 60s;
    while (Clock::now() < deadline) {
        up = prometheus.query("up{job=\"calloutd\"}").value_or("");
        requests = prometheus.query("calloutd_requests_total").value_or("");
        if (up.find("\"1\"]") != std::string::npos &&
            requests.find("\"__name__\":\"calloutd_requests_total\"") != std::string::npos) {
            break;
        }
        std::this_thread::sleep_for(200ms);
    }
    std::cout << "[ up       ] " << up << "\n[ requests ] " << requests << "\n";
    EXPECT_NE(up.find("\"job\":\"calloutd\""), std::string::npos) << up;
    EXPECT_NE(up.find("\"1\"]"), std::string::npos) << up << prometheus.log();
    EXPECT_NE(requests.find("\"class\":\"skipped\""), std::string::npos) << requests;
    EXPECT_NE(requests.find("\"source\":\"skip\""), std::string::npos) << requests;
}

TEST_F(Metrics, OnlyGetAndHeadOfMetricsAreServed) {
    uint16_t port = metrics_port(*daemon_);
    struct Case {
        std::string request;
        int status;
    };
    const Case cases[] = {
        {"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 405},
        {"DELETE /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", 405},
        {"PUT /cache HTTP/1.1\r\nConnection: close\r\n\r\n", 404},
        {"GET /status HTTP/1.1\r\nConnection: close\r\n\r\n", 404},
        {"HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", 200},
    };
    for (const auto& c : cases) {
        auto r = http_exchange("127.0.0.1", port, c.request);
        ASSERT_TRUE(r) << c.request;
        EXPECT_EQ(r->status, c.status) << c.request;
    }
    // Keep-alive and pipelining: two responses on one connection, in order.
    auto r =
        http_exchange("127.0.0.1", port,
                      "GET /metrics HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\nConnection: close\r\n\r\n");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_NE(r->body.find("HTTP/1.1 404 Not Found"), std::string::npos);
}

// A slowloris, a 1 MB request line, binary garbage and a pipelining client that never reads its
// responses, all at once: each is closed, and policy answers keep coming at full speed.
TEST_F(Metrics, HostileScrapersAreClosedWithoutDelayingPolicyAnswers) {
    uint16_t port = metrics_port(*daemon_);
    auto raw = [&] { return PolicyClient::inet("127.0.0.1", port); };  // a plain TCP client

    PolicyClient huge = raw();
    huge.send("GET /" + std::string(1 << 20, 'a') + " HTTP/1.1\r\n\r\n");
    PolicyClient binary = raw();
    std::string noise;
    for (int i = 0; i < 4096; ++i) noise += static_cast<char>((i * 7919) & 0xff);
    binary.send(noise);
    PolicyClient greedy = raw();  // never reads
    std::string pipelined;
    for (int i = 0; i < 2000; ++i) pipelined += "GET /metrics HTTP/1.1\r\n\r\n";
    greedy.send(pipelined);
    PolicyClient slow = raw();
    slow.send("GET /metrics HTTP/1.1\r\n");

    PolicyClient policy = client();
    policy.send(policy_request("alice@good.test"));
    ASSERT_EQ(policy.read_action(10s), "DUNNO");  // probed once; the rest come from the cache

    std::string drip = "X-Slow: " + std::string(200, 'z');
    auto start = Clock::now();
    auto worst = Clock::duration::zero();
    int answered = 0;
    bool slow_closed = false;
    Clock::duration slow_lifetime{};
    size_t dripped = 0;
    while (Clock::now() - start < 14s) {
        if (!slow_closed && dripped < drip.size()) {
            slow_closed = !slow.send(drip.substr(dripped++, 1));
            if (slow_closed) slow_lifetime = Clock::now() - start;
        }
        for (int i = 0; i < 5; ++i) {
            auto t0 = Clock::now();
            policy.send(policy_request("alice@good.test"));
            auto a = policy.read_action(5s);
            auto took = Clock::now() - t0;
            ASSERT_EQ(a, "DUNNO") << "policy answer " << answered;
            worst = std::max(worst, took);
            ++answered;
        }
        std::this_thread::sleep_for(100ms);
    }
    std::cout << "[ policy   ] " << answered << " answers, slowest "
              << std::chrono::duration_cast<std::chrono::microseconds>(worst).count() << " us\n";
    EXPECT_LT(worst, 500ms);

    // The slowloris is cut off by the request timeout (10 s from its first byte), however
    // steadily it sends.
    if (!slow_closed) {
        EXPECT_TRUE(slow.wait_closed(1s)) << "slowloris connection still open after 14 s";
    } else {
        EXPECT_GE(slow_lifetime, 9s);
    }
    auto huge_reply = huge.wait_closed(5s);
    EXPECT_TRUE(huge_reply) << "1 MB request line not closed";
    EXPECT_TRUE(binary.wait_closed(5s)) << "binary garbage not closed";
    // The daemon is fine and still serves scrapes.
    std::string m = scrape(*daemon_);
    EXPECT_GE(sample_value(m,
                           "calloutd_requests_total{class=\"valid\",action=\"DUNNO\","
                           "source=\"cache\"}")
                  .value_or(0),
              answered);
}

// metrics.listen = "unix:PATH": the same HTTP service on a unix socket of mode 0660.
TEST(MetricsUnixSocket, ServesMetricsOnAUnixSocket) {
    DaemonProcess daemon("metrics-unix",
                         "[server]\nlisten = [\"inet:127.0.0.1:0\"]\n"
                         "control_socket = \"\"\n"
                         "[dns]\nservers = [\"127.0.0.1:9\"]\n"
                         "[metrics]\nlisten = \"unix:@DIR@/metrics.sock\"\n");
    ASSERT_TRUE(daemon.started()) << daemon.log();
    std::string path = daemon.dir() + "/metrics.sock";
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0) << daemon.log();
    EXPECT_EQ(st.st_mode & 0777, 0660u);
    PolicyClient c = PolicyClient::unix_socket(path);  // a plain stream client
    ASSERT_TRUE(c.connected());
    c.send("GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n");
    std::string reply;
    char buf[16384];
    for (;;) {
        pollfd p{c.fd(), POLLIN, 0};
        if (::poll(&p, 1, 5000) <= 0) break;
        ssize_t n = ::recv(c.fd(), buf, sizeof buf, 0);
        if (n <= 0) break;
        reply.append(buf, static_cast<size_t>(n));
    }
    EXPECT_TRUE(reply.starts_with("HTTP/1.1 200 OK\r\n")) << reply.substr(0, 200);
    EXPECT_NE(reply.find("\ncalloutd_build_info{version=\""), std::string::npos);
    daemon.signal(SIGTERM);
    EXPECT_EQ(daemon.wait_exit(10s), 0);
    EXPECT_NE(::stat(path.c_str(), &st), 0) << "metrics socket left behind";
}

}  // namespace
}  // namespace calloutd::test
