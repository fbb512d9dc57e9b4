// Probe economy under attack, through the real binary -> dnsmasq (query log) -> counting fake SMTP
// targets: Unicode spellings of listed domains, MX hosts that must never be probed, one budget
// per provider whatever its MX IPs, tagged senders (BATV, SRS) answered from one cache entry per
// mailbox, and IPv6 clients budgeted per /64.
#include <gtest/gtest.h>

#include <csignal>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/callout_world.hpp"
#include "support/daemon_process.hpp"
#include "support/dnsmasq.hpp"
#include "support/fake_smtp.hpp"
#include "support/policy_burst.hpp"
#include "support/policy_client.hpp"
#include "support/text.hpp"

namespace calloutd::test {
namespace {

using namespace std::chrono_literals;

// One loopback address per target (callout_world.hpp .21-.41, list_washing .61-.68, cluster
// .71-.79, exim .91-.94 are taken).
constexpr const char* kSkipIp = "127.0.0.101";    // skipme.test: must never be contacted
constexpr const char* kOwnIp = "127.0.0.102";     // own.test, xn--bcher-kva.test: never
constexpr const char* kPlainIp = "127.0.0.103";   // plain.test: the positive control
constexpr const char* kHostedIp = "127.0.0.104";  // mx.bigmail.test: on skip_mx_hosts
constexpr const char* kGoogleIp = "127.0.0.105";  // aspmx.l.google.com: the shipped list
constexpr const char* kProviderIps[] = {"127.0.0.106", "127.0.0.107", "127.0.0.108", "127.0.0.109",
                                        "127.0.0.110"};  // mx0-4.bigprovider.test
constexpr const char* kOtherIp = "127.0.0.111";          // mx.other.test: another provider
constexpr const char* kTagIp = "127.0.0.112";            // batv.test and fwd.test
constexpr const char* kV6Ip = "127.0.0.113";             // v6.test
constexpr const char* kRefreshIp = "127.0.0.114";        // refresh.test: greylists after a while

constexpr int kProviderDomains = 100;
constexpr const char* kRateLimited = "WARN rate limited";

DnsmasqZones economy_zones() {
    DnsmasqZones z;
    z.local_domains = {"test"};
    z.mx = {{"skipme.test", "mx.skipme.test", 10},
            {"own.test", "mx.own.test", 10},
            {"xn--bcher-kva.test", "mx.own.test", 10},
            {"plain.test", "mx.plain.test", 10},
            {"hosted.test", "mx.bigmail.test", 10},
            {"hosted2.test", "mx.bigmail.test", 10},
            {"workspace.test", "aspmx.l.google.com", 10},
            {"other.test", "mx.other.test", 10},
            {"batv.test", "mx.tags.test", 10},
            {"fwd.test", "mx.tags.test", 10},
            {"v6.test", "mx.v6.test", 10},
            {"refresh.test", "mx.refresh.test", 10}};
    for (int k = 0; k < kProviderDomains; ++k) {
        z.mx.push_back({"p" + std::to_string(k) + ".customers.test",
                        "mx" + std::to_string(k % 5) + ".bigprovider.test", 10});
    }
    z.hosts = {{"mx.skipme.test", {kSkipIp}},       {"mx.own.test", {kOwnIp}},
               {"mx.plain.test", {kPlainIp}},       {"mx.bigmail.test", {kHostedIp}},
               {"aspmx.l.google.com", {kGoogleIp}}, {"mx.other.test", {kOtherIp}},
               {"mx.tags.test", {kTagIp}},          {"mx.v6.test", {kV6Ip}},
               {"mx.refresh.test", {kRefreshIp}}};
    for (int i = 0; i < 5; ++i) {
        z.hosts.push_back({"mx" + std::to_string(i) + ".bigprovider.test", {kProviderIps[i]}});
    }
    return z;
}

FakeSmtpScript knows_alice() {
    FakeSmtpScript s;
    s.recipients["alice"] = "250 2.1.5 ok";
    return s;
}

class ProbeEconomy : public ::testing::Test {
  protected:
    static void SetUpTestSuite() { dnsmasq_ = std::make_unique<Dnsmasq>(economy_zones()); }
    static void TearDownTestSuite() { dnsmasq_.reset(); }
    void TearDown() override {
        if (HasFailure() && daemon_) {
            std::string log = daemon_->log();
            if (log.size() > 20000) log = "...\n" + log.substr(log.size() - 20000);
            std::cerr << "--- calloutd log (tail) ---\n" << log;
        }
        if (daemon_ && daemon_->running()) {
            daemon_->signal(SIGTERM);
            if (daemon_->wait_exit(10s) < 0) ADD_FAILURE() << "calloutd did not exit on SIGTERM";
        }
    }

    void start(uint16_t smtp_port, const std::string& sections) {
        CalloutConfig c;
        c.dns_server = dnsmasq_->server();  // never the system resolver
        c.smtp_port = smtp_port;
        c.reply_timeout = "2s";
        c.log_level = "info";
        c.sections = sections + "[actions]\nrate_limited = \"" + kRateLimited + "\"\n";
        daemon_ = std::make_unique<DaemonProcess>("economy", callout_config(c));
        ASSERT_TRUE(daemon_->started()) << daemon_->log();
        port_ = daemon_->tcp_port();
        ASSERT_NE(port_, 0) << daemon_->log();
    }

    struct Answer {
        std::optional<std::string> action;
        std::string line;  // the decision line logged for it
        // A whole `key=value` field of the line (the last field ends the line).
        bool has(const std::string& field) const {
            return (line + " ").find(" " + field + " ") != std::string::npos;
        }
    };
    Answer ask(const std::string& sender, const std::string& queue_id,
               const std::string& client = "198.51.100.7") {
        PolicyClient c = PolicyClient::inet("127.0.0.1", port_);
        if (!c.connected()) return {};
        c.send(policy_request(sender, client, queue_id, queue_id));
        Answer a;
        a.action = c.read_action(5s);
        std::string needle = "decision queue_id=" + queue_id + " ";
        daemon_->wait_for_log(needle, 3s);
        a.line = line_with(daemon_->log(), needle);
        return a;
    }

    static inline std::unique_ptr<Dnsmasq> dnsmasq_;
    std::unique_ptr<DaemonProcess> daemon_;
    uint16_t port_ = 0;
};

// --- Normalise first, then decide ------------------------------------------------------------

TEST_F(ProbeEconomy, UnicodeSpellingsOfListedDomainsAreSkippedWithoutDnsOrConnections) {
    FakeSmtpFleet t({{kSkipIp, knows_alice()}, {kOwnIp, knows_alice()}, {kPlainIp, knows_alice()}});
    ASSERT_TRUE(t.ok());
    // Lists written the other way round from the senders: an A-label own domain, U-labels
    // matched by A-label senders and the reverse.
    start(t.port(),
          "[policy]\nskip_domains = [\"skipme.test\"]\n"
          "own_domains = [\"own.test\", \"b\xc3\xbc"
          "cher.test\"]\n");

    struct Case {
        const char* what;
        std::string sender;
        const char* reason;
    };
    const Case cases[] = {
        // U+FF53 U+FF4B ...: full-width letters
        {"full-width", "alice@\xef\xbd\x93\xef\xbd\x8b\xef\xbd\x89\xef\xbd\x90me.test",
         "skip-domain"},
        {"soft hyphen",
         "alice@skip\xc2\xad"
         "me.test",
         "skip-domain"},
        {"ideographic full stop", "alice@skipme\xe3\x80\x82test", "skip-domain"},
        {"full-width full stop", "alice@skipme\xef\xbc\x8etest", "skip-domain"},
        {"upper case", "alice@SKIPME.test", "skip-domain"},
        {"own full-width", "alice@\xef\xbd\x8fwn.test", "own-domain"},
        {"own soft hyphen", "alice@o\xc2\xadwn.test", "own-domain"},
        {"own ideographic full stop", "alice@own\xe3\x80\x82test", "own-domain"},
        {"own IDN as A-label", "alice@xn--bcher-kva.test", "own-domain"},
        {"own IDN as U-label",
         "alice@B\xc3\x9c"
         "CHER.test",
         "own-domain"},
    };
    int n = 0;
    for (const auto& c : cases) {
        Answer a = ask(c.sender, "U" + std::to_string(n++));
        EXPECT_EQ(a.action, "DUNNO") << c.what << ": " << a.line;
        EXPECT_TRUE(a.has("class=skipped")) << c.what << ": " << a.line;
        EXPECT_TRUE(a.has(std::string("reason=") + c.reason)) << c.what << ": " << a.line;
        EXPECT_TRUE(a.has("source=skip")) << c.what << ": " << a.line;
    }
    // A domain no mapping can make a name of is never probed either.
    Answer bad = ask("alice@\xe2\x98\x83.test", "U-bad");  // U+2603 SNOWMAN
    EXPECT_TRUE(bad.has("class=skipped")) << bad.line;
    EXPECT_NE(bad.line.find("reason=\"bad-domain"), std::string::npos) << bad.line;

    // The positive control: the same path for an unlisted domain asks DNS and connects.
    Answer plain = ask("alice@plain.test", "U-plain");
    EXPECT_TRUE(plain.has("class=valid")) << plain.line;
    std::string dns = dnsmasq_->log();
    EXPECT_GT(occurrences(dns, "plain.test"), 0u) << "dnsmasq logs queries";
    EXPECT_EQ(occurrences(dns, "skipme.test"), 0u) << dns;
    EXPECT_EQ(occurrences(dns, " own.test"), 0u) << dns;
    EXPECT_EQ(occurrences(dns, "xn--bcher-kva.test"), 0u) << dns;
    EXPECT_EQ(t.at(0).connections_accepted(), 0u);
    EXPECT_EQ(t.at(1).connections_accepted(), 0u);
    EXPECT_EQ(t.at(2).connections_accepted(), 1u);
}

// --- Never-probe by MX host --------------------------------------------------------------------

TEST_F(ProbeEconomy, DomainsOnASkippedMxHostAreSkippedWithoutAConnection) {
    FakeSmtpFleet t({{kHostedIp, knows_alice()}, {kGoogleIp, knows_alice()}});
    ASSERT_TRUE(t.ok());
    // The shipped list plus one of our own; U-label/A-label rules apply here too.
    start(t.port(), "[policy]\nskip_mx_hosts = [\"builtin:never-probe-mx\", \"BigMail.test\"]\n");

    Answer first = ask("alice@hosted.test", "M0");
    EXPECT_EQ(first.action, "DUNNO") << first.line;
    EXPECT_TRUE(first.has("class=skipped")) << first.line;
    EXPECT_TRUE(first.has("reason=skip-mx")) << first.line;
    EXPECT_TRUE(first.has("source=skip")) << first.line;
    // The probe line names the MX host that matched.
    EXPECT_TRUE(
        daemon_->wait_for_log("probe sender=alice@hosted.test class=skipped reason=skip-mx "
                              "scope=domain mx=mx.bigmail.test ",
                              3s))
        << daemon_->log();
    // A fact about the domain: another address of it is answered from the cache, without DNS.
    size_t mx_queries = occurrences(dnsmasq_->log(), "query[MX] hosted.test ");
    Answer second = ask("bob@hosted.test", "M1");
    EXPECT_TRUE(second.has("class=skipped")) << second.line;
    EXPECT_TRUE(second.has("reason=skip-mx")) << second.line;
    EXPECT_TRUE(second.has("source=cache")) << second.line;
    EXPECT_EQ(occurrences(dnsmasq_->log(), "query[MX] hosted.test "), mx_queries);
    // Another domain on the same MX host: its own lookup, the same answer.
    Answer other = ask("carol@hosted2.test", "M2");
    EXPECT_TRUE(other.has("reason=skip-mx")) << other.line;
    // A hosted domain whose MX is Google's, by the shipped list.
    Answer google = ask("alice@workspace.test", "M3");
    EXPECT_TRUE(google.has("class=skipped")) << google.line;
    EXPECT_TRUE(google.has("reason=skip-mx")) << google.line;

    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(t.at(0).connections_accepted(), 0u);
    EXPECT_EQ(t.at(1).connections_accepted(), 0u);
}

// --- One budget per provider -------------------------------------------------------------------

TEST_F(ProbeEconomy, HundredDomainsOfOneProviderOverFiveMxIpsGetTheProviderRate) {
    std::vector<std::pair<std::string, FakeSmtpScript>> scripts;
    for (const char* ip : kProviderIps) scripts.push_back({ip, FakeSmtpScript{}});
    scripts.push_back({kOtherIp, knows_alice()});
    FakeSmtpFleet t(scripts);
    ASSERT_TRUE(t.ok());
    // Per IP 30/1m would allow 150 connections over the five IPs; the provider allows 10.
    start(t.port(),
          "[limits]\ndomain_rate = \"unlimited\"\nclient_rate = \"unlimited\"\n"
          "global_rate = \"unlimited\"\nglobal_concurrency = 10000\nmx_rate = \"30/1m\"\n"
          "mx_concurrency = 100\nprovider_rate = \"10/1m\"\n");

    std::vector<std::string> requests;
    for (int k = 0; k < kProviderDomains; ++k) {
        std::string id = "P" + std::to_string(k);
        requests.push_back(policy_request(
            "forged" + std::to_string(k) + "@p" + std::to_string(k) + ".customers.test",
            "203.0.113.5", id, id));
    }
    BurstOptions o;
    o.port = port_;
    o.connections = 4;
    o.window = 8;
    o.timeout = 30s;
    BurstResult r = run_burst(requests, o);
    EXPECT_EQ(r.answered, requests.size());
    EXPECT_EQ(r.lost_connections, 0u);
    EXPECT_LE(r.max_latency(), 2500ms) << "a reply outlived server.reply_timeout";

    size_t seen = 0;
    for (size_t i = 0; i < 5; ++i) seen += t.at(i).connections_accepted();
    size_t ips_used = 0;
    for (size_t i = 0; i < 5; ++i) ips_used += t.at(i).connections_accepted() > 0 ? 1 : 0;
    std::cout << "[ figures  ] 100 domains of one provider over 5 MX IPs: " << seen
              << " connections at " << ips_used << " IPs; rate_limited " << r.count(kRateLimited)
              << "\n";
    EXPECT_GT(seen, 0u);
    EXPECT_LE(seen, 10u);
    EXPECT_GT(ips_used, 1u) << "the connections did go to several IPs";
    EXPECT_EQ(r.count(kRateLimited), requests.size() - seen);
    for (int waited = 0;
         waited < 50 && occurrences(daemon_->log(), " limit=provider") < r.count(kRateLimited);
         ++waited) {
        std::this_thread::sleep_for(50ms);
    }
    EXPECT_EQ(occurrences(daemon_->log(), " limit=provider"), r.count(kRateLimited));

    // Another provider's MX is not punished for the first one's.
    Answer other = ask("alice@other.test", "P-other", "198.51.100.30");
    EXPECT_TRUE(other.has("class=valid")) << other.line;
    EXPECT_EQ(t.at(5).connections_accepted(), 1u);
}

// --- Tagged senders ----------------------------------------------------------------------------

TEST_F(ProbeEconomy, BatvAndSrsVariantsOfOneMailboxCostOneProbeEachFamily) {
    FakeSmtpScript s;
    for (const char* local : {"prvs=1111aaaaaa=alice", "prvs=2222bbbbbb=alice",
                              "srs0=ab3d=zq=orig.example=bob", "srs0=zz9x=zr=orig.example=bob"}) {
        s.recipients[local] = "250 2.1.5 ok";
    }
    FakeSmtpFleet t({{kTagIp, s}});
    ASSERT_TRUE(t.ok());
    start(t.port(), "");

    Answer b1 = ask("prvs=1111aaaaaa=alice@batv.test", "T1");
    EXPECT_TRUE(b1.has("class=valid")) << b1.line;
    EXPECT_TRUE(b1.has("source=probe")) << b1.line;
    Answer b2 = ask("prvs=2222bbbbbb=alice@batv.test", "T2");
    EXPECT_TRUE(b2.has("class=valid")) << b2.line;
    EXPECT_TRUE(b2.has("source=cache")) << b2.line;
    Answer s1 = ask("SRS0=Ab3d=ZQ=orig.example=bob@fwd.test", "T3");
    EXPECT_TRUE(s1.has("class=valid")) << s1.line;
    EXPECT_TRUE(s1.has("source=probe")) << s1.line;
    Answer s2 = ask("SRS0=Zz9x=ZR=orig.example=bob@fwd.test", "T4");
    EXPECT_TRUE(s2.has("class=valid")) << s2.line;
    EXPECT_TRUE(s2.has("source=cache")) << s2.line;
    EXPECT_EQ(t.at(0).connections_accepted(), 2u) << "one probe per family";
    // The probe asked for the address as given (a BATV server refuses the untagged form).
    EXPECT_EQ(t.at(0).count_commands("RCPT TO:<prvs=1111aaaaaa=alice@batv.test>"), 1u);
    EXPECT_EQ(t.at(0).count_commands("RCPT TO:<SRS0=Ab3d=ZQ=orig.example=bob@fwd.test>"), 1u);
    EXPECT_EQ(t.at(0).count_commands("RCPT TO:<alice@batv.test>"), 0u);

    // A rejection is about one tagged address only: another tag of that mailbox is probed.
    Answer c1 = ask("prvs=3333cccccc=carol@batv.test", "T5");
    EXPECT_TRUE(c1.has("class=invalid")) << c1.line;
    Answer c2 = ask("prvs=4444dddddd=carol@batv.test", "T6");
    EXPECT_TRUE(c2.has("class=invalid")) << c2.line;
    EXPECT_TRUE(c2.has("source=probe")) << c2.line;
    EXPECT_EQ(t.at(0).connections_accepted(), 4u);
}

// --- A failed refresh is remembered -------------------------------------------------------------

// A valid address whose MX starts greylisting `<>` for good: once it is due for refresh, every
// request is still answered valid from the cache, and the refresh is tried once per
// cache.tempfail_ttl, not once per request. (The shortest settings the schema allows:
// positive_refresh 1m, tempfail_ttl 10s; the test takes about 90 s.)
TEST_F(ProbeEconomy, AValidAddressWhoseRefreshKeepsFailingIsRefreshedOncePerTempfailTtl) {
    auto server = std::make_unique<FakeSmtpServer>(knows_alice(), kRefreshIp, 0);
    ASSERT_TRUE(server->ok()) << server->error();
    uint16_t smtp_port = server->port();
    start(smtp_port, "[cache]\npositive_refresh = \"1m\"\ntempfail_ttl = \"10s\"\n");
    Answer first = ask("alice@refresh.test", "R-first");
    ASSERT_TRUE(first.has("class=valid")) << first.line;
    auto probed = std::chrono::steady_clock::now();

    server->stop();
    FakeSmtpScript greylist = knows_alice();
    greylist.recipients["alice"] =
        "450 4.2.0 <alice@refresh.test>: Recipient address rejected: Greylisted, see "
        "http://postgrey.schweikert.ch/help/refresh.test.html";
    server = std::make_unique<FakeSmtpServer>(greylist, kRefreshIp, smtp_port);
    ASSERT_TRUE(server->ok()) << server->error();
    std::this_thread::sleep_until(probed + 61s);

    // 100 requests over 25 s: the refresh window of 2.5 tempfail TTLs.
    auto begin = std::chrono::steady_clock::now();
    for (int i = 0; i < 100; ++i) {
        Answer a = ask("alice@refresh.test", "R" + std::to_string(i));
        EXPECT_TRUE(a.has("class=valid")) << a.line;
        EXPECT_TRUE(a.has("source=cache")) << a.line;
        std::this_thread::sleep_until(begin + (i + 1) * 250ms);
    }
    auto elapsed = std::chrono::steady_clock::now() - begin;
    std::this_thread::sleep_for(500ms);  // the last refresh, if any, is over
    size_t refreshes = server->connections_accepted();
    size_t bound = 1 + static_cast<size_t>(elapsed / 10s);
    std::cout << "[ figures  ] 100 requests over "
              << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()
              << " ms after the verdict was due for refresh: " << refreshes
              << " refresh connection(s) (tempfail_ttl 10s)\n";
    EXPECT_GE(refreshes, 2u) << "a refresh is tried again once tempfail_ttl has passed";
    EXPECT_LE(refreshes, bound) << "at most one refresh per tempfail_ttl";
    EXPECT_EQ(occurrences(daemon_->log(), "refresh=yes"), refreshes);
}

// --- Client budget by IPv6 prefix -------------------------------------------------------------

TEST_F(ProbeEconomy, AnIpv6ClientRotatingItsSlash64HasOneClientBudget) {
    FakeSmtpFleet t({{kV6Ip, FakeSmtpScript{}}});
    ASSERT_TRUE(t.ok());
    start(t.port(),
          "[limits]\ndomain_rate = \"unlimited\"\nclient_rate = \"2/1m\"\n"
          "global_rate = \"unlimited\"\nmx_rate = \"unlimited\"\nmx_concurrency = 100\n"
          "provider_rate = \"unlimited\"\n");
    size_t limited = 0;
    for (int i = 0; i < 10; ++i) {
        // A new address of 2001:db8:1:2::/64 for every forged sender.
        std::string client =
            "2001:db8:1:2:" + std::to_string(1000 + i) + "::" + std::to_string(i + 1);
        Answer a = ask("forged" + std::to_string(i) + "@v6.test", "V" + std::to_string(i), client);
        if (a.action == kRateLimited) {
            ++limited;
            EXPECT_TRUE(a.has("limit=client")) << a.line;
        }
    }
    EXPECT_EQ(limited, 8u);
    EXPECT_EQ(t.at(0).connections_accepted(), 2u);
    // The next /64 is another client.
    Answer other = ask("someone@v6.test", "V-other", "2001:db8:1:3::1");
    EXPECT_NE(other.action, kRateLimited) << other.line;
    EXPECT_EQ(t.at(0).connections_accepted(), 3u);
}

}  // namespace
}  // namespace calloutd::test
