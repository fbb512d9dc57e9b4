// The real calloutd binary verifying senders end to end: policy socket -> dnsmasq test zones ->
// fake SMTP servers and a real Postfix on loopback -> verdict class, action, cache, single flight,
// target guard and refusal of bad senders.
#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/callout_world.hpp"
#include "support/daemon_process.hpp"
#include "support/dnsmasq.hpp"
#include "support/fake_dns.hpp"
#include "support/fake_smtp.hpp"
#include "support/policy_client.hpp"
#include "support/postfix_target.hpp"

namespace calloutd::test {
namespace {

using namespace std::chrono_literals;
using namespace world;

constexpr const char* kInProgress =
    "DEFER_IF_PERMIT 4.1.7 Verifying the sender address, please try again later";

// The value of `key` in a key=value log line ("" if absent); quoted values are unescaped.
std::string field(const std::string& line, const std::string& key) {
    std::string needle = " " + key + "=";
    auto pos = line.find(needle);
    if (pos == std::string::npos) return {};
    pos += needle.size();
    if (pos >= line.size() || line[pos] != '"') {
        return line.substr(pos, line.find(' ', pos) - pos);
    }
    std::string out;
    for (++pos; pos < line.size() && line[pos] != '"'; ++pos) {
        if (line[pos] == '\\' && pos + 1 < line.size()) ++pos;
        out += line[pos];
    }
    return out;
}

// What the daemon answered to one request and the decision line it logged for it.
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

// A fake SMTP server for each (address, script) on one shared port, since callout.port is one
// port for every MX. The first binds an ephemeral port; on a clash at a sibling, start over.

FakeSmtpScript only_alice() {
    FakeSmtpScript s;
    s.recipients["alice"] = "250 2.1.5 ok";
    return s;  // everyone else: 550 5.1.1
}

class CalloutDaemon : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        servfail_ = std::make_unique<FakeDnsServer>(FakeDnsServer::Mode::servfail);
        dnsmasq_ = std::make_unique<Dnsmasq>(callout_test_zones(servfail_->dnsmasq_upstream()));
    }
    static void TearDownTestSuite() {
        dnsmasq_.reset();
        servfail_.reset();
    }
    void TearDown() override {
        if (HasFailure() && daemon_) std::cerr << "--- calloutd log ---\n" << daemon_->log();
        if (daemon_ && daemon_->running()) {
            daemon_->signal(SIGTERM);
            if (daemon_->wait_exit(5s) < 0) ADD_FAILURE() << "calloutd did not exit on SIGTERM";
        }
        daemon_.reset();  // kills it if it is still there
    }

    CalloutConfig config(uint16_t smtp_port) const {
        CalloutConfig c;
        c.dns_server = dnsmasq_->server();
        c.smtp_port = smtp_port;
        return c;
    }
    void start(const CalloutConfig& c) {
        daemon_ = std::make_unique<DaemonProcess>("callout", callout_config(c));
        ASSERT_TRUE(daemon_->started()) << daemon_->log();
        port_ = daemon_->tcp_port();
        ASSERT_NE(port_, 0) << daemon_->log();
    }
    void start(uint16_t smtp_port) { start(config(smtp_port)); }

    PolicyClient client() const { return PolicyClient::inet("127.0.0.1", port_); }

    // The decision line logged for `queue_id`, waiting for it to be flushed.
    std::string decision_line(const std::string& queue_id) const {
        std::string needle = "decision queue_id=" + queue_id + " ";
        if (!daemon_->wait_for_log(needle, 3s)) return {};
        std::string log = daemon_->log();
        auto pos = log.find(needle);
        auto begin = log.rfind('\n', pos);
        begin = begin == std::string::npos ? 0 : begin + 1;
        return log.substr(begin, log.find('\n', pos) - begin);
    }

    // One request on its own connection; every request gets a distinct queue_id.
    Answer ask(const std::string& sender) {
        std::string queue_id = "Q" + std::to_string(++requests_);
        PolicyClient c = client();
        if (!c.connected()) return {};
        c.send(policy_request(sender, "198.51.100.7", "", queue_id));
        Answer a;
        a.action = c.read_action(10s);
        a.line = decision_line(queue_id);
        return a;
    }

    static inline std::unique_ptr<FakeDnsServer> servfail_;
    static inline std::unique_ptr<Dnsmasq> dnsmasq_;
    std::unique_ptr<DaemonProcess> daemon_;
    uint16_t port_ = 0;
    int requests_ = 0;
};

// --- 1. The right class for each kind of target -------------------------------------------

TEST_F(CalloutDaemon, ExistingAndUnknownUserAtARealPostfix) {
    if (geteuid() != 0) GTEST_SKIP() << "a private Postfix instance needs root";
    PostfixTargetOptions o;
    o.address = kPostfixIp;
    o.domain = "pf.test";
    o.hostname = "mx.pf.test";
    o.users = {"alice"};
    PostfixTarget postfix(o);
    start(postfix.port());

    Answer valid = ask("alice@pf.test");
    EXPECT_EQ(valid.action, "DUNNO") << valid;
    EXPECT_EQ(valid.cls(), "valid") << valid;
    EXPECT_EQ(valid.source(), "probe") << valid;

    Answer invalid = ask("nobody@pf.test");
    ASSERT_TRUE(invalid.action) << invalid;
    EXPECT_TRUE(invalid.action->starts_with("REJECT 5.1.7 ")) << invalid;
    EXPECT_EQ(invalid.cls(), "invalid") << invalid;
    // The rejection text never leaks the target's name or address.
    EXPECT_EQ(invalid.action->find("pf.test"), std::string::npos) << invalid;
    EXPECT_EQ(invalid.action->find(kPostfixIp), std::string::npos) << invalid;
    if (HasFailure()) std::cerr << "--- postfix maillog ---\n" << postfix.maillog();
}

TEST_F(CalloutDaemon, CatchAllDomainIsAcceptAllAndTheRealAddressIsNotAsked) {
    FakeSmtpScript s;
    s.accept_all = true;
    FakeSmtpFleet t({{kCatchAllIp, s}});
    ASSERT_TRUE(t.ok());
    start(t.port());
    Answer a = ask("anyone@catchall.test");
    EXPECT_EQ(a.action, "DUNNO") << a;
    EXPECT_EQ(a.cls(), "accept_all") << a;
    EXPECT_EQ(t.at(0).count_commands("RCPT TO:<anyone@"), 0u);
    EXPECT_EQ(t.at(0).count_commands("MAIL FROM:<>"), t.at(0).count_commands("MAIL FROM:"))
        << "every probe uses the null sender";
    // accept_all is a domain fact: every other address of the domain is answered from it.
    Answer other = ask("someone.else@catchall.test");
    EXPECT_EQ(other.cls(), "accept_all") << other;
    EXPECT_EQ(other.source(), "cache") << other;
    EXPECT_EQ(t.at(0).connections_accepted(), 1u);
}

TEST_F(CalloutDaemon, GreylistingAtRcptIsTempfail) {
    FakeSmtpScript s;
    s.rcpt_default = "451 4.7.1 Greylisted, please try again later";
    FakeSmtpFleet t({{kGreylistIp, s}});
    ASSERT_TRUE(t.ok());
    start(t.port());
    Answer a = ask("alice@greylist.test");
    EXPECT_EQ(a.action, "DUNNO") << a;
    EXPECT_EQ(a.cls(), "tempfail") << a;
}

TEST_F(CalloutDaemon, NullSenderRejectedAtMailFrom) {
    FakeSmtpScript s;
    s.verbs["MAIL"] = "550 5.7.1 We do not accept mail from <>";
    FakeSmtpFleet t({{kNullSenderIp, s}});
    ASSERT_TRUE(t.ok());
    start(t.port());
    Answer a = ask("alice@nobounce.test");
    EXPECT_EQ(a.action, "DUNNO") << a;
    EXPECT_EQ(a.cls(), "null_sender_rejected") << a;
    EXPECT_EQ(t.at(0).count_commands("RCPT"), 0u);
}

TEST_F(CalloutDaemon, TarpitAnswersInProgressThenTempfailFromCache) {
    FakeSmtpScript s;
    s.banner = std::nullopt;  // accepts and never says a word
    FakeSmtpFleet t({{kTarpitIp, s}});
    ASSERT_TRUE(t.ok());
    CalloutConfig c = config(t.port());
    c.reply_timeout = "300ms";  // the banner wait (command_timeout) is 1s
    start(c);

    auto t0 = std::chrono::steady_clock::now();
    Answer first = ask("slow@tarpit.test");
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 900ms) << "the reply budget was not kept";
    EXPECT_EQ(first.action, kInProgress) << first;
    EXPECT_EQ(first.cls(), "in_progress") << first;

    ASSERT_TRUE(daemon_->wait_for_log("probe sender=slow@tarpit.test", 4s));
    Answer again = ask("slow@tarpit.test");
    EXPECT_EQ(again.action, "DUNNO") << again;
    EXPECT_EQ(again.cls(), "tempfail") << again;
    EXPECT_EQ(again.source(), "cache") << again;
    EXPECT_EQ(t.at(0).connections_accepted(), 1u);
}

TEST_F(CalloutDaemon, RefusedConnectionIsTempfail) {
    start(unused_port(kRefusedIp));
    Answer a = ask("alice@refused.test");
    EXPECT_EQ(a.action, "DUNNO") << a;
    EXPECT_EQ(a.cls(), "tempfail") << a;
}

TEST_F(CalloutDaemon, NullMxIsNoMailDomain) {
    start(unused_port());
    Answer a = ask("alice@nullmx.test");
    ASSERT_TRUE(a.action) << a;
    EXPECT_TRUE(a.action->starts_with("REJECT 5.1.8 ")) << a;
    EXPECT_EQ(a.cls(), "no_mail_domain") << a;
}

TEST_F(CalloutDaemon, NxdomainIsNoMailDomain) {
    start(unused_port());
    Answer a = ask("alice@nx.test");
    ASSERT_TRUE(a.action) << a;
    EXPECT_TRUE(a.action->starts_with("REJECT 5.1.8 ")) << a;
    EXPECT_EQ(a.cls(), "no_mail_domain") << a;
}

TEST_F(CalloutDaemon, DeadPrimaryMxFallsBackToTheSecondary) {
    // The primary's address has nothing listening on the shared port: connection refused.
    FakeSmtpFleet t({{kBackupIp, only_alice()}});
    ASSERT_TRUE(t.ok());
    start(t.port());
    Answer a = ask("alice@backup.test");
    EXPECT_EQ(a.action, "DUNNO") << a;
    EXPECT_EQ(a.cls(), "valid") << a;
    EXPECT_EQ(t.at(0).connections_accepted(), 1u);
    EXPECT_TRUE(daemon_->wait_for_log("mx=mx2.backup.test", 2s));
}

TEST_F(CalloutDaemon, ServfailIsTempfail) {
    start(unused_port());
    Answer a = ask("alice@servfail.test");
    EXPECT_EQ(a.action, "DUNNO") << a;
    EXPECT_EQ(a.cls(), "tempfail") << a;
    EXPECT_GT(servfail_->queries_seen(), 0);
}

// --- 2. Cache and single flight ------------------------------------------------------------

TEST_F(CalloutDaemon, RepeatRequestIsAnsweredFromCacheWithoutConnecting) {
    FakeSmtpFleet t({{kSharedIp, only_alice()}});
    ASSERT_TRUE(t.ok());
    start(t.port());
    for (const char* sender : {"alice@shared.test", "nobody@shared.test"}) {
        Answer first = ask(sender);
        EXPECT_EQ(first.source(), "probe") << first;
        size_t connections = t.at(0).connections_accepted();
        Answer again = ask(sender);
        EXPECT_EQ(again.action, first.action) << again;
        EXPECT_EQ(again.cls(), first.cls()) << again;
        EXPECT_EQ(again.source(), "cache") << again;
        EXPECT_EQ(t.at(0).connections_accepted(), connections) << sender;
    }
    // The domain is case-insensitive, so this is the same cached address.
    Answer upper = ask("alice@SHARED.Test");
    EXPECT_EQ(upper.cls(), "valid") << upper;
    EXPECT_EQ(upper.source(), "cache") << upper;
    EXPECT_EQ(t.at(0).connections_accepted(), 2u);
}

TEST_F(CalloutDaemon, TenConcurrentRequestsShareOneProbe) {
    FakeSmtpScript s = only_alice();
    s.reply_delay = 50ms;  // the probe lasts long enough for every request to join it
    FakeSmtpFleet t({{kSharedIp, s}});
    ASSERT_TRUE(t.ok());
    start(t.port());
    std::vector<PolicyClient> clients;
    for (int i = 0; i < 10; ++i) {
        clients.push_back(client());
        ASSERT_TRUE(clients.back().connected());
    }
    for (int i = 0; i < 10; ++i) {
        ASSERT_TRUE(clients[static_cast<size_t>(i)].send(
            policy_request("nobody@shared.test", "198.51.100.7", "", "C" + std::to_string(i))));
    }
    for (auto& c : clients) {
        auto action = c.read_action(10s);
        ASSERT_TRUE(action);
        EXPECT_TRUE(action->starts_with("REJECT 5.1.7 ")) << *action;
    }
    EXPECT_EQ(t.at(0).connections_accepted(), 1u);
    EXPECT_EQ(t.at(0).count_commands("RCPT TO:<nobody@shared.test>"), 1u);
    for (int i = 0; i < 10; ++i) {
        std::string line = decision_line("C" + std::to_string(i));
        EXPECT_EQ(field(line, "class"), "invalid") << line;
    }
}

TEST_F(CalloutDaemon, TenConcurrentRequestsOutlivingTheBudgetStillShareOneProbe) {
    FakeSmtpScript s = only_alice();
    s.reply_delay = 100ms;  // about 8 replies: the probe outlives the 200ms reply budget
    FakeSmtpFleet t({{kSharedIp, s}});
    ASSERT_TRUE(t.ok());
    CalloutConfig c = config(t.port());
    c.reply_timeout = "200ms";
    start(c);
    std::vector<PolicyClient> clients;
    for (int i = 0; i < 10; ++i) clients.push_back(client());
    for (auto& cl : clients) ASSERT_TRUE(cl.send(policy_request("nobody@shared.test")));
    for (auto& cl : clients) EXPECT_EQ(cl.read_action(3s), kInProgress);
    ASSERT_TRUE(daemon_->wait_for_log("probe sender=nobody@shared.test", 4s));
    Answer retry = ask("nobody@shared.test");
    ASSERT_TRUE(retry.action) << retry;
    EXPECT_TRUE(retry.action->starts_with("REJECT 5.1.7 ")) << retry;
    EXPECT_EQ(retry.source(), "cache") << retry;
    EXPECT_EQ(t.at(0).connections_accepted(), 1u);
}

TEST_F(CalloutDaemon, SigtermDuringAProbeAnswersTheWaitingClientAndExits) {
    FakeSmtpScript s;
    s.banner = std::nullopt;
    FakeSmtpFleet t({{kTarpitIp, s}});
    ASSERT_TRUE(t.ok());
    CalloutConfig c = config(t.port());
    c.reply_timeout = "1s";
    c.command_timeout = "4s";  // the probe would outlive the reply budget and the drain
    c.server_extra = "shutdown_timeout = \"3s\"\n";
    start(c);
    PolicyClient waiting = client();
    ASSERT_TRUE(waiting.send(policy_request("slow@tarpit.test")));
    for (int i = 0; i < 200 && t.at(0).connections_accepted() == 0; ++i) {
        std::this_thread::sleep_for(10ms);
    }
    ASSERT_EQ(t.at(0).connections_accepted(), 1u) << "the probe never reached the tarpit";
    auto t0 = std::chrono::steady_clock::now();
    daemon_->signal(SIGTERM);
    EXPECT_EQ(waiting.read_action(3s), kInProgress);
    EXPECT_EQ(daemon_->wait_exit(4s), 0);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 2500ms) << "shutdown waited for the probe";
}

// --- 3. Target guard -----------------------------------------------------------------------

TEST_F(CalloutDaemon, LoopbackMxIsNeverContactedByDefault) {
    FakeSmtpScript s;
    s.accept_all = true;
    FakeSmtpFleet t({{kLoopbackIp, s}});
    ASSERT_TRUE(t.ok());
    CalloutConfig c = config(t.port());
    c.allow_loopback = false;
    start(c);
    Answer a = ask("alice@guarded.test");
    EXPECT_EQ(a.action, "DUNNO") << a;
    EXPECT_EQ(a.cls(), "policy_blocked") << a;
    EXPECT_EQ(a.reason(), "target-not-allowed") << a;
    std::this_thread::sleep_for(100ms);
    EXPECT_EQ(t.at(0).connections_accepted(), 0u);
}

// --- 4. Senders that must never reach the SMTP wire ----------------------------------------

TEST_F(CalloutDaemon, BadSendersAreNeverProbed) {
    FakeSmtpScript s;
    s.accept_all = true;
    FakeSmtpFleet t({{kInjectIp, s}});
    ASSERT_TRUE(t.ok());
    start(t.port());

    // Control bytes: the policy reader drops the connection without an answer.
    const std::string unreadable[] = {
        "a\x01"
        "b@inject.test",
        std::string("a\0b@inject.test", 15),
        "a\x7f@inject.test",
        "a\x1b[31m@inject.test",
        "a\rRCPT TO:<x@inject.test>",
    };
    for (const auto& sender : unreadable) {
        PolicyClient c = client();
        ASSERT_TRUE(c.send(policy_request(sender)));
        EXPECT_TRUE(c.wait_closed(3s)) << sender;
    }

    // Readable but not an address we may put into RCPT TO.
    const std::string bad[] = {
        "a\tb@inject.test",
        "\"unbalanced@inject.test",
        "a@[127.0.0.1]",
        std::string(300, 'a') + "@inject.test",
        "a b@inject.test",
        "a>RCPT TO:<x@inject.test",
        "<a@inject.test>",
        "a@inject.test>",
        "a@inject.test RCPT TO:<b@inject.test>",
        "a@@inject.test",
        "a@inject.test\xc3",
    };
    for (const auto& sender : bad) {
        Answer a = ask(sender);
        EXPECT_EQ(a.action, "DUNNO") << a;
        EXPECT_EQ(a.cls(), "skipped") << a;
        EXPECT_EQ(a.source(), "skip") << a;
        EXPECT_TRUE(a.reason().starts_with("bad-address") ||
                    a.reason().starts_with("address-literal"))
            << a;
    }
    std::this_thread::sleep_for(100ms);
    EXPECT_EQ(t.at(0).connections_accepted(), 0u);
    EXPECT_TRUE(t.at(0).commands().empty());

    // The target was reachable all along: a well-formed sender is probed.
    Answer good = ask("good@inject.test");
    EXPECT_EQ(good.cls(), "accept_all") << good;
    EXPECT_EQ(t.at(0).connections_accepted(), 1u);
    EXPECT_TRUE(daemon_->running());
}

}  // namespace
}  // namespace calloutd::test
