// Truth under attack, against the real daemon, dnsmasq, redis-server and fake SMTP targets: no
// forged sender switches verification off for a domain, mailbox-level replies never back off an
// MX, greylisting cannot make an accept-all domain look `valid`, a resolver that says NXDOMAIN
// to everything cannot make calloutd reject, and a 421 at RCPT ends the probe.
#include <gtest/gtest.h>

#include <csignal>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "support/callout_world.hpp"
#include "support/daemon_process.hpp"
#include "support/dnsmasq.hpp"
#include "support/fake_dns.hpp"
#include "support/fake_smtp.hpp"
#include "support/policy_client.hpp"
#include "support/redis_server.hpp"
#include "support/text.hpp"

namespace calloutd::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kRestrictedIp = "127.0.0.120";  // restricted.test: one restricted mailbox
constexpr const char* kRefusesIp = "127.0.0.121";     // refuses.test: refuses every probe
constexpr const char* kQuotaIp = "127.0.0.122";       // quota.test: one full mailbox
constexpr const char* kGreyAllIp = "127.0.0.123";     // greyall.test: greylisting accept-all
constexpr const char* kClosesIp = "127.0.0.124";      // closes.test, shared.test: 421 at RCPT
constexpr const char* kBackupIp = "127.0.0.125";      // closes.test backup MX: knows everyone
constexpr const char* kGreyRandomIp = "127.0.0.126";  // greyrandom.test: random part greylisted

DnsmasqZones zones() {
    DnsmasqZones z;
    z.local_domains = {"test"};
    z.mx = {{"restricted.test", "mx.restricted.test", 10},
            {"refuses.test", "mx.refuses.test", 10},
            {"quota.test", "mx.quota.test", 10},
            {"greyall.test", "mx.greyall.test", 10},
            {"closes.test", "mx1.closes.test", 10},
            {"closes.test", "mx2.closes.test", 20},
            {"shared.test", "mx1.closes.test", 10},
            {"greyrandom.test", "mx.greyrandom.test", 10}};
    z.hosts = {{"mx.restricted.test", {kRestrictedIp}}, {"mx.refuses.test", {kRefusesIp}},
               {"mx.quota.test", {kQuotaIp}},           {"mx.greyall.test", {kGreyAllIp}},
               {"mx1.closes.test", {kClosesIp}},        {"mx2.closes.test", {kBackupIp}},
               {"mx.greyrandom.test", {kGreyRandomIp}}};
    return z;  // nx.test does not exist
}

// Exchange Online's reply for a mailbox that only accepts authenticated senders.
constexpr const char* kAuthRequired =
    "550 5.7.1 RESOLVER.RST.AuthRequired; authentication required";

FakeSmtpScript restricted_script() {
    FakeSmtpScript s;
    s.recipients["restricted"] = kAuthRequired;
    s.recipients["alice"] = "250 2.1.5 ok";
    return s;  // everyone else, the random local part included: 550 5.1.1
}

FakeSmtpScript refuses_script() {
    FakeSmtpScript s;
    s.rcpt_default = "550 5.7.1 Client host rejected: Access denied";
    return s;
}

FakeSmtpScript quota_script() {
    FakeSmtpScript s;
    s.recipients["full"] = "452 4.2.2 <full@quota.test>: mailbox full, quota limit exceeded";
    s.recipients["alice"] = "250 2.1.5 ok";
    return s;
}

FakeSmtpScript grey_accept_all_script() {
    FakeSmtpScript s;
    s.accept_all = true;
    s.greylist_new_recipients = true;  // each new recipient: 450 once, then 250
    return s;
}

FakeSmtpScript closes_script() {
    FakeSmtpScript s;
    s.recipients["alice"] = "421 4.7.0 mx1.closes.test Error: too many errors, closing";
    return s;
}

FakeSmtpScript knows_everyone() {
    FakeSmtpScript s;
    s.recipients["alice"] = "250 2.1.5 ok";
    return s;
}

std::string field(const std::string& line, const std::string& key) {
    std::string needle = " " + key + "=";
    auto pos = line.find(needle);
    if (pos == std::string::npos) return {};
    pos += needle.size();
    if (pos >= line.size() || line[pos] != '"') return line.substr(pos, line.find(' ', pos) - pos);
    std::string out;
    for (++pos; pos < line.size() && line[pos] != '"'; ++pos) {
        if (line[pos] == '\\' && pos + 1 < line.size()) ++pos;
        out += line[pos];
    }
    return out;
}

struct Answer {
    std::optional<std::string> action;
    std::string line;
    std::string cls() const { return field(line, "class"); }
    std::string reason() const { return field(line, "reason"); }
    std::string source() const { return field(line, "source"); }
};

std::ostream& operator<<(std::ostream& os, const Answer& a) {
    return os << "action=" << a.action.value_or("<none>") << " line: " << a.line;
}

// The daemon with its world; `redis` selects cluster mode with a real redis-server.
class World {
  public:
    World(const std::string& dns_server, uint16_t smtp_port, const std::string& sections,
          const std::string& canary = kDnsCanaryName) {
        CalloutConfig c;
        c.dns_server = dns_server;
        c.dns_canary = canary;
        c.smtp_port = smtp_port;
        c.log_level = "info";
        c.sections = sections;
        daemon_ = std::make_unique<DaemonProcess>("truth", callout_config(c));
    }
    ~World() {
        if (daemon_ && daemon_->running()) {
            daemon_->signal(SIGTERM);
            daemon_->wait_exit(10s);
        }
    }
    DaemonProcess& daemon() { return *daemon_; }

    Answer ask(const std::string& sender) {
        std::string queue_id = "T" + std::to_string(++requests_);
        PolicyClient c = PolicyClient::inet("127.0.0.1", daemon_->tcp_port());
        if (!c.connected()) return {};
        c.send(policy_request(sender, "198.51.100.7", "", queue_id));
        Answer a;
        a.action = c.read_action(15s);
        std::string needle = "decision queue_id=" + queue_id + " ";
        if (daemon_->wait_for_log(needle, 5s)) a.line = line_with(daemon_->log(), needle);
        return a;
    }

  private:
    std::unique_ptr<DaemonProcess> daemon_;
    int requests_ = 0;
};

class TruthUnderAttack : public ::testing::TestWithParam<bool> {
  protected:
    static void SetUpTestSuite() { dnsmasq_ = std::make_unique<Dnsmasq>(zones()); }
    static void TearDownTestSuite() { dnsmasq_.reset(); }
    void TearDown() override {
        if (HasFailure() && world_) std::cerr << "--- calloutd log ---\n" << world_->daemon().log();
        world_.reset();
    }

    // Memory mode, or cluster mode against a real redis-server (GetParam()).
    void start(uint16_t smtp_port, std::string sections = "") {
        if (GetParam()) {
            redis_ = std::make_unique<RedisServer>();
            sections += "[redis]\nurl = \"" + redis_->url() + "\"\n";
        }
        world_ = std::make_unique<World>(dnsmasq_->server(), smtp_port, sections);
        ASSERT_TRUE(world_->daemon().started()) << world_->daemon().log();
        if (GetParam()) {
            ASSERT_TRUE(world_->daemon().wait_for_log("state=up", 10s)) << world_->daemon().log();
        }
    }

    static inline std::unique_ptr<Dnsmasq> dnsmasq_;
    std::unique_ptr<RedisServer> redis_;
    std::unique_ptr<World> world_;
};

// One forged sender at a restricted mailbox is a verdict about that mailbox only: every other
// address of the domain is still verified and answered as its own reply says.
TEST_P(TruthUnderAttack, OneRestrictedMailboxDoesNotSpeakForItsDomain) {
    FakeSmtpFleet t({{kRestrictedIp, restricted_script()}});
    ASSERT_TRUE(t.ok());
    start(t.port());
    World& w = *world_;

    Answer forged = w.ask("restricted@restricted.test");
    EXPECT_EQ(forged.action, "DUNNO") << forged;
    EXPECT_EQ(forged.cls(), "policy_blocked") << forged;
    EXPECT_TRUE(forged.reason().starts_with("vendor:m365-restricted-recipient")) << forged;
    ASSERT_EQ(t.at(0).connections_accepted(), 1u);

    Answer unknown = w.ask("nobody@restricted.test");
    EXPECT_EQ(unknown.cls(), "invalid") << unknown;
    EXPECT_TRUE(unknown.action && unknown.action->starts_with("REJECT 5.1.7")) << unknown;
    EXPECT_EQ(unknown.source(), "probe") << unknown;
    Answer alice = w.ask("alice@restricted.test");
    EXPECT_EQ(alice.cls(), "valid") << alice;
    EXPECT_EQ(alice.source(), "probe") << alice;
    EXPECT_EQ(t.at(0).connections_accepted(), 3u);

    // The restricted mailbox itself is answered from its own cached verdict.
    Answer again = w.ask("restricted@restricted.test");
    EXPECT_EQ(again.cls(), "policy_blocked") << again;
    EXPECT_EQ(again.source(), "cache") << again;
    EXPECT_EQ(t.at(0).connections_accepted(), 3u);
    // And a known-invalid address stays known-invalid.
    Answer unknown_again = w.ask("nobody@restricted.test");
    EXPECT_EQ(unknown_again.cls(), "invalid") << unknown_again;
    EXPECT_EQ(unknown_again.source(), "cache") << unknown_again;
}

// A server that refuses the random local part and the real one alike refuses probes: that is a
// domain fact, and the next sender of the domain costs no connection.
TEST_P(TruthUnderAttack, AServerThatRefusesEveryProbeIsADomainFact) {
    FakeSmtpFleet t({{kRefusesIp, refuses_script()}});
    ASSERT_TRUE(t.ok());
    start(t.port());
    World& w = *world_;

    Answer first = w.ask("anyone@refuses.test");
    EXPECT_EQ(first.cls(), "policy_blocked") << first;
    EXPECT_TRUE(first.reason().starts_with("probes-refused: ")) << first;
    EXPECT_EQ(t.at(0).connections_accepted(), 1u);

    Answer other = w.ask("someone.else@refuses.test");
    EXPECT_EQ(other.cls(), "policy_blocked") << other;
    EXPECT_EQ(other.source(), "cache") << other;
    EXPECT_EQ(t.at(0).connections_accepted(), 1u);
}

// "Mailbox full, quota limit exceeded" is about one mailbox: the MX and the domain stay
// probe-able, and the next address is probed at once.
TEST_P(TruthUnderAttack, AQuotaReplyLeavesTheMxAndTheDomainProbeable) {
    FakeSmtpFleet t({{kQuotaIp, quota_script()}});
    ASSERT_TRUE(t.ok());
    start(t.port(), "[limits]\nbackoff_ttl = \"1h\"\n");
    World& w = *world_;

    Answer full = w.ask("full@quota.test");
    EXPECT_EQ(full.cls(), "tempfail") << full;
    EXPECT_TRUE(full.reason().starts_with("mailbox-full 452 4.2.2")) << full;
    Answer alice = w.ask("alice@quota.test");
    EXPECT_EQ(alice.cls(), "valid") << alice;
    EXPECT_EQ(alice.source(), "probe") << alice;
    EXPECT_EQ(t.at(0).connections_accepted(), 2u);
    EXPECT_EQ(occurrences(w.daemon().log(), "backoff"), 0u);
    EXPECT_EQ(occurrences(w.daemon().log(), " limit=mx"), 0u);
}

// Each new recipient is greylisted once, then everything is accepted. The random local part
// is greylisted as well, so a 2xx for the real address proves nothing: never `valid`. The
// random local part stays the same all day, so after the greylist delay it is accepted and the
// domain is recognised as accept-all.
TEST_P(TruthUnderAttack, GreylistingAcceptAllIsNeverValid) {
    FakeSmtpFleet t({{kGreyAllIp, grey_accept_all_script()}});
    ASSERT_TRUE(t.ok());
    start(t.port(), "[cache]\ntempfail_ttl = \"10s\"\n");
    World& w = *world_;

    Answer first = w.ask("alice@greyall.test");  // random 450, real 450
    EXPECT_EQ(first.cls(), "tempfail") << first;
    EXPECT_NE(first.cls(), "valid") << first;
    // Meanwhile the domain's other senders wait for the greylist delay without a probe.
    Answer hot = w.ask("bob@greyall.test");
    EXPECT_EQ(hot.cls(), "tempfail") << hot;
    EXPECT_EQ(hot.source(), "cache") << hot;
    EXPECT_TRUE(hot.reason().starts_with("random-local-part-greylisted")) << hot;
    EXPECT_EQ(t.at(0).connections_accepted(), 1u);

    // The same address asked again after cache.tempfail_ttl: still never valid.
    std::this_thread::sleep_for(11s);
    Answer retry = w.ask("alice@greyall.test");
    EXPECT_NE(retry.cls(), "valid") << retry;
    EXPECT_EQ(retry.cls(), "accept_all") << retry;
    EXPECT_EQ(retry.source(), "probe") << retry;
    Answer later = w.ask("carol@greyall.test");
    EXPECT_EQ(later.cls(), "accept_all") << later;
    EXPECT_EQ(later.source(), "cache") << later;

    // Both probes asked the same random local part, so the greylister let its retry through.
    std::set<std::string> randoms;
    for (const auto& c : t.at(0).commands()) {
        if (c.find("calloutd-check-") != std::string::npos) randoms.insert(c);
    }
    EXPECT_EQ(randoms.size(), 1u);
    EXPECT_EQ(t.at(0).count_commands("RCPT TO:<calloutd-check-"), 2u);
    EXPECT_EQ(occurrences(w.daemon().log(), " class=valid "), 0u);
}

// The random local part is always deferred while the real address is accepted: that 2xx proves
// nothing (an accept-all server looks exactly like this), so it is tempfail, never a cached
// positive.
TEST_P(TruthUnderAttack, A2xxWithTheRandomLocalPartDeferredIsNotValid) {
    FakeSmtpScript s;
    s.rcpt_default = "450 4.7.1 <x>: Recipient address rejected: Greylisted, try again later";
    s.recipients["alice"] = "250 2.1.5 ok";
    FakeSmtpFleet t({{kGreyRandomIp, s}});
    ASSERT_TRUE(t.ok());
    start(t.port());
    Answer a = world_->ask("alice@greyrandom.test");
    EXPECT_EQ(a.cls(), "tempfail") << a;
    EXPECT_TRUE(a.reason().starts_with("accept-all-unknown: rcpt-accepted 250")) << a;
    Answer again = world_->ask("alice@greyrandom.test");
    EXPECT_EQ(again.cls(), "tempfail") << again;
    EXPECT_EQ(again.source(), "cache") << again;
}

// A 421 in reply to RCPT ends the probe: no second MX is asked about the same address, and
// the MX that pushed back is left alone for every domain it serves.
TEST_P(TruthUnderAttack, A421AtRcptStopsTheProbeAndBacksOffTheMx) {
    FakeSmtpFleet t({{kClosesIp, closes_script()}, {kBackupIp, knows_everyone()}});
    ASSERT_TRUE(t.ok());
    start(t.port());
    World& w = *world_;

    Answer a = w.ask("alice@closes.test");
    EXPECT_EQ(a.cls(), "tempfail") << a;
    EXPECT_TRUE(a.reason().starts_with("service-unavailable 421 4.7.0 at RCPT")) << a;
    EXPECT_EQ(t.at(0).connections_accepted(), 1u);
    EXPECT_EQ(t.at(1).connections_accepted(), 0u) << "no second MX for the same address";

    Answer other = w.ask("bob@shared.test");  // another domain on the MX that pushed back
    EXPECT_EQ(other.cls(), "rate_limited") << other;
    EXPECT_NE(other.line.find(" limit=mx"), std::string::npos) << other;
    EXPECT_EQ(t.at(0).connections_accepted(), 1u);
}

INSTANTIATE_TEST_SUITE_P(MemoryAndRedis, TruthUnderAttack, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "redis" : "memory"; });

// --- A resolver that says NXDOMAIN to everything ----------------------------------------------

TEST(DnsCanary, AResolverThatAnswersNxdomainToEverythingNeverCausesAReject) {
    FakeDnsServer liar(FakeDnsServer::Mode::nxdomain);
    World w(liar.server(), 25, "", ".");  // the default canary: the root zone's NS set
    ASSERT_TRUE(w.daemon().started()) << w.daemon().log();
    ASSERT_TRUE(w.daemon().wait_for_log("dns-canary", 10s)) << w.daemon().log();

    for (const char* sender : {"alice@nx.test", "bob@example.com", "carol@gmail.example"}) {
        Answer a = w.ask(sender);
        EXPECT_EQ(a.action, "DUNNO") << a;
        EXPECT_EQ(a.cls(), "tempfail") << a;
        EXPECT_TRUE(a.reason().starts_with("dns-unhealthy: nxdomain")) << a;
    }
    std::string log = w.daemon().log();
    EXPECT_EQ(occurrences(log, "no_mail_domain"), 0u) << log;
    EXPECT_EQ(occurrences(log, "REJECT"), 0u) << log;
    // Logged once per change of state, not once per answer.
    EXPECT_EQ(occurrences(log, "dns-canary name=. state=failing"), 1u) << log;
}

TEST(DnsCanary, AHealthyResolverStillGivesNoMailDomain) {
    Dnsmasq dns(zones());
    World w(dns.server(), 25, "");
    ASSERT_TRUE(w.daemon().started()) << w.daemon().log();
    Answer a = w.ask("alice@nx.test");
    EXPECT_EQ(a.cls(), "no_mail_domain") << a << "\n" << w.daemon().log();
    EXPECT_TRUE(a.action && a.action->starts_with("REJECT 5.1.8 ")) << a;
    EXPECT_EQ(occurrences(w.daemon().log(), "state=healthy"), 1u) << w.daemon().log();
}

// The canary is the resolver's health, not the domain's: the same offline dnsmasq with the
// root zone as canary (which it refuses) turns its NXDOMAIN into tempfail.
TEST(DnsCanary, AnOfflineResolverThatRefusesTheRootIsNotBelieved) {
    Dnsmasq dns(zones());
    World w(dns.server(), 25, "", ".");
    ASSERT_TRUE(w.daemon().started()) << w.daemon().log();
    Answer a = w.ask("alice@nx.test");
    EXPECT_EQ(a.cls(), "tempfail") << a;
    EXPECT_NE(a.reason().find("canary . does not resolve (refused)"), std::string::npos) << a;
}

}  // namespace
}  // namespace calloutd::test
