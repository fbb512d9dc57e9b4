// STARTTLS and SMTPUTF8 through the real daemon against real Postfix targets (private
// instances with a certificate made at test time): a server that demands TLS, one that offers
// it, one whose handshake breaks (fake), and one without SMTPUTF8 that must never get jörg@
// called invalid. Needs root for Postfix.
#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "support/callout_world.hpp"
#include "support/command.hpp"
#include "support/daemon_process.hpp"
#include "support/dnsmasq.hpp"
#include "support/fake_smtp.hpp"
#include "support/metrics_scrape.hpp"
#include "support/paths.hpp"
#include "support/policy_client.hpp"
#include "support/postfix_target.hpp"
#include "support/text.hpp"
#include "support/tls_cert.hpp"

namespace calloutd::test {
namespace {

using namespace std::chrono_literals;

// One loopback address per target (callout_world.hpp and the other tests use others).
constexpr const char* kEncryptIp = "127.0.0.141";  // tlsenc.test: Postfix, TLS required
constexpr const char* kMayIp = "127.0.0.142";      // tlsmay.test: Postfix, TLS offered
constexpr const char* kBrokenIp = "127.0.0.143";   // tlsbroken.test: fake, handshake breaks
constexpr const char* kNoUtf8Ip = "127.0.0.144";   // noutf8.test: Postfix, smtputf8_enable = no
constexpr const char* kPlainIp = "127.0.0.147";    // plain.test: fake, no STARTTLS

DnsmasqZones zones() {
    DnsmasqZones z;
    z.local_domains = {"test"};
    z.mx = {{"tlsenc.test", "mx.tlsenc.test", 10},
            {"tlsmay.test", "mx.tlsmay.test", 10},
            {"tlsbroken.test", "mx.tlsbroken.test", 10},
            {"noutf8.test", "mx.noutf8.test", 10},
            {"plain.test", "mx.plain.test", 10}};
    z.hosts = {{"mx.tlsenc.test", {kEncryptIp}},
               {"mx.tlsmay.test", {kMayIp}},
               {"mx.tlsbroken.test", {kBrokenIp}},
               {"mx.noutf8.test", {kNoUtf8Ip}},
               {"mx.plain.test", {kPlainIp}}};
    return z;
}

PostfixTargetOptions postfix_options(const std::string& ip, const std::string& domain,
                                     uint16_t port) {
    PostfixTargetOptions o;
    o.address = ip;
    o.port = port;
    o.domain = domain;
    o.hostname = "mx." + domain;
    o.users = {"alice", "jörg"};
    return o;
}

// What the daemon answered to one request, and its decision and probe lines.
struct Answer {
    std::optional<std::string> action;
    std::string decision;
    std::string probe;  // the `probe` line for this sender, when this request probed
    std::string cls() const { return log_field(decision, "class"); }
    std::string reason() const { return log_field(decision, "reason"); }
    std::string source() const { return log_field(decision, "source"); }
};

// postlogd writes the maillog a moment after the fact: wait for `n` occurrences of `needle`.
std::string maillog_with(const PostfixTarget& postfix, const std::string& needle, size_t n) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    std::string log = postfix.maillog();
    while (occurrences(log, needle) < n && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(20ms);
        log = postfix.maillog();
    }
    return log;
}

std::ostream& operator<<(std::ostream& os, const Answer& a) {
    return os << "action=" << a.action.value_or("<none>") << "\n  " << a.decision << "\n  "
              << a.probe;
}

class StartTlsDaemon : public ::testing::Test {
  protected:
    static void SetUpTestSuite() { dnsmasq_ = std::make_unique<Dnsmasq>(zones()); }
    static void TearDownTestSuite() { dnsmasq_.reset(); }

    void SetUp() override {
        port_ = unused_port(kEncryptIp);
        ASSERT_NE(port_, 0);
    }
    void TearDown() override {
        if (HasFailure() && daemon_) std::cerr << "--- calloutd log ---\n" << daemon_->log();
        stop_daemon();
    }
    void stop_daemon() {
        if (daemon_ && daemon_->running()) {
            daemon_->signal(SIGTERM);
            if (daemon_->wait_exit(10s) < 0) ADD_FAILURE() << "calloutd did not exit on SIGTERM";
        }
        daemon_.reset();
    }

    void start(const std::string& callout_extra = "") {
        CalloutConfig c;
        c.dns_server = dnsmasq_->server();
        c.smtp_port = port_;
        c.reply_timeout = "8s";
        c.command_timeout = "5s";
        c.probe_timeout = "20s";
        c.log_level = "info";
        c.sections = callout_extra;  // right after [callout]'s own keys
        daemon_ = std::make_unique<DaemonProcess>("starttls", callout_config(c));
        ASSERT_TRUE(daemon_->started()) << daemon_->log();
        policy_port_ = daemon_->tcp_port();
        ASSERT_NE(policy_port_, 0) << daemon_->log();
    }

    Answer ask(const std::string& sender) {
        const std::string queue_id = "Q" + std::to_string(++requests_);
        PolicyClient c = PolicyClient::inet("127.0.0.1", policy_port_);
        if (!c.connected()) return {};
        c.send(policy_request(sender, "198.51.100.7", "", queue_id));
        Answer a;
        a.action = c.read_action(15s);
        const std::string needle = "decision queue_id=" + queue_id + " ";
        if (daemon_->wait_for_log(needle, 5s)) a.decision = line_with(daemon_->log(), needle);
        if (a.source() == "probe") {
            const std::string probe = " probe sender=" + sender + " ";
            if (daemon_->wait_for_log(probe, 5s)) {
                // The last such line: a sender may have been probed before.
                std::string log = daemon_->log();
                auto pos = log.rfind(probe);
                auto begin = log.rfind('\n', pos);
                begin = begin == std::string::npos ? 0 : begin + 1;
                a.probe = log.substr(begin, log.find('\n', pos) - begin);
            }
        }
        return a;
    }

    // `calloutd probe` with the running daemon's configuration.
    CommandResult probe_command(const std::string& address) {
        auto r =
            run_command({daemon_binary(), "probe", "-c", daemon_->config_path(), address}, 30s);
        EXPECT_FALSE(r.timed_out);
        return r;
    }

    static inline std::unique_ptr<Dnsmasq> dnsmasq_;
    std::unique_ptr<DaemonProcess> daemon_;
    uint16_t port_ = 0;
    uint16_t policy_port_ = 0;
    int requests_ = 0;
};

// A Postfix that demands TLS (smtpd_tls_security_level = encrypt) and speaks SMTPUTF8.
TEST_F(StartTlsDaemon, ServerThatRequiresTlsIsVerifiedInsideTls) {
    if (geteuid() != 0) GTEST_SKIP() << "a private Postfix instance needs root";
    PostfixTargetOptions o = postfix_options(kEncryptIp, "tlsenc.test", port_);
    o.tls_security_level = "encrypt";
    o.smtputf8 = true;
    PostfixTarget postfix(o);
    start();

    Answer alice = ask("alice@tlsenc.test");
    EXPECT_EQ(alice.cls(), "valid") << alice;
    EXPECT_EQ(log_field(alice.probe, "tls"), "TLSv1.3") << alice;
    Answer joerg = ask("jörg@tlsenc.test");
    EXPECT_EQ(joerg.cls(), "valid") << joerg;
    EXPECT_EQ(log_field(joerg.probe, "tls"), "TLSv1.3") << joerg;
    Answer nobody = ask("nobody@tlsenc.test");
    EXPECT_EQ(nobody.cls(), "invalid") << nobody;
    ASSERT_TRUE(nobody.action);
    EXPECT_TRUE(nobody.action->starts_with("REJECT 5.1.7 ")) << nobody;
    EXPECT_EQ(log_field(nobody.probe, "tls"), "TLSv1.3") << nobody;

    // The target saw a TLS session for each of the three probes, and jörg under SMTPUTF8.
    std::string maillog = maillog_with(postfix, "TLS connection established from", 3);
    EXPECT_EQ(occurrences(maillog, "TLS connection established from"), 3u) << maillog;
    EXPECT_EQ(occurrences(maillog, "Must issue a STARTTLS command first"), 0u) << maillog;

    // The transcript shows the session and the commands inside it.
    auto r = probe_command("jörg@tlsenc.test");
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    const auto session = r.out.find("--- TLS TLSv1.3 TLS_AES_256_GCM_SHA384\n");
    ASSERT_NE(session, std::string::npos) << r.out;
    EXPECT_NE(r.out.find("--- TLS peer subject=CN=mx.tlsenc.test issuer=CN=mx.tlsenc.test\n"),
              std::string::npos)
        << r.out;
    const auto starttls = r.out.find(">>> STARTTLS\n");
    const auto inside_mail = r.out.find(">>> MAIL FROM:<> SMTPUTF8\n");
    const auto inside_rcpt = r.out.find(">>> RCPT TO:<jörg@tlsenc.test>\n");
    ASSERT_NE(starttls, std::string::npos) << r.out;
    EXPECT_LT(starttls, session);
    EXPECT_GT(inside_mail, session) << r.out;
    EXPECT_GT(inside_rcpt, session) << r.out;
    EXPECT_NE(inside_rcpt, std::string::npos) << r.out;
    EXPECT_NE(r.out.find(" tls=TLSv1.3 "), std::string::npos) << r.out;

    // Without TLS the same server cannot be verified: tempfail, never a guess.
    stop_daemon();
    start("tls = \"none\"\n");
    Answer plain = ask("alice@tlsenc.test");
    EXPECT_EQ(plain.cls(), "tempfail") << plain;
    EXPECT_TRUE(plain.reason().starts_with("starttls-required 530 5.7.0 at MAIL FROM")) << plain;
    EXPECT_NE(plain.reason().find("STARTTLS offered, not used"), std::string::npos) << plain;
    EXPECT_EQ(log_field(plain.probe, "tls"), "none") << plain;
    EXPECT_EQ(plain.action, "DUNNO") << plain;
    if (HasFailure()) std::cerr << "--- postfix maillog ---\n" << postfix.maillog();
}

// A Postfix that offers TLS (may) gets it; a fake whose handshake breaks after "220 Ready to
// start TLS" is asked again in plaintext, once, and that conversation decides.
TEST_F(StartTlsDaemon, OpportunisticTlsAndThePlaintextRetry) {
    if (geteuid() != 0) GTEST_SKIP() << "a private Postfix instance needs root";
    PostfixTargetOptions o = postfix_options(kMayIp, "tlsmay.test", port_);
    o.tls_security_level = "may";
    PostfixTarget postfix(o);
    const std::string dir = make_temp_dir("broken-tls");
    TestCertificate cert = make_self_signed_certificate(dir, "broken", "mx.tlsbroken.test");
    FakeSmtpScript broken;
    broken.recipients["alice"] = "250 2.1.5 ok";
    broken.tls = FakeTls{cert.cert_file, cert.key_file, true, FakeTls::Fault::garbage};
    FakeSmtpServer fake(broken, kBrokenIp, port_);
    ASSERT_TRUE(fake.ok()) << fake.error();
    start("[metrics]\nlisten = \"inet:127.0.0.1:0\"\n");

    Answer alice = ask("alice@tlsmay.test");
    EXPECT_EQ(alice.cls(), "valid") << alice;
    EXPECT_EQ(log_field(alice.probe, "tls"), "TLSv1.3") << alice;
    Answer nobody = ask("nobody@tlsmay.test");
    EXPECT_EQ(nobody.cls(), "invalid") << nobody;
    std::string maillog = maillog_with(postfix, "TLS connection established from", 2);
    EXPECT_EQ(occurrences(maillog, "TLS connection established from"), 2u) << maillog;

    Answer retried = ask("alice@tlsbroken.test");
    EXPECT_EQ(retried.cls(), "valid") << retried;
    EXPECT_EQ(log_field(retried.probe, "attempts"), "2") << retried;
    EXPECT_EQ(log_field(retried.probe, "tls"), "none") << retried;
    EXPECT_EQ(fake.connections_accepted(), 2u);
    EXPECT_EQ(fake.count_commands("STARTTLS"), 1u) << "retried once, without STARTTLS";
    EXPECT_EQ(fake.count_commands("RCPT TO:<alice@tlsbroken.test>"), 1u);

    // One result per connection: two TLS sessions at Postfix, the broken handshake, and the
    // plaintext retry.
    const std::string m = scrape(*daemon_);
    auto connections = [&](const std::string& result) {
        return sample_value(m, "calloutd_probe_connections_total{result=\"" + result + "\"}");
    };
    EXPECT_EQ(connections("tls"), 2) << m;
    EXPECT_EQ(connections("tls_failed"), 1) << m;
    EXPECT_EQ(connections("connected"), 1) << m;
    EXPECT_EQ(connections("refused"), 0) << m;
    fake.stop();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    if (HasFailure()) std::cerr << "--- postfix maillog ---\n" << maillog;
}

// smtputf8_enable = no: a UTF-8 address is never asked, so never called invalid (this Postfix
// would mangle it and answer "User unknown"), and the answer is cached like a tempfail.
TEST_F(StartTlsDaemon, ServerWithoutSmtputf8NeverCallsJoergInvalid) {
    if (geteuid() != 0) GTEST_SKIP() << "a private Postfix instance needs root";
    PostfixTargetOptions o = postfix_options(kNoUtf8Ip, "noutf8.test", port_);
    PostfixTarget postfix(o);
    start();
    // The harness's own banner check connected once; count from here.
    const size_t before = occurrences(maillog_with(postfix, " connect from ", 1), " connect from ");

    Answer joerg = ask("jörg@noutf8.test");
    EXPECT_EQ(joerg.cls(), "skipped") << joerg;
    EXPECT_TRUE(joerg.reason().starts_with("smtputf8-unsupported")) << joerg;
    EXPECT_EQ(joerg.source(), "probe") << joerg;
    EXPECT_EQ(joerg.action, "DUNNO") << joerg;
    EXPECT_EQ(log_field(joerg.probe, "scope"), "address") << joerg;

    Answer again = ask("jörg@noutf8.test");
    EXPECT_EQ(again.cls(), "skipped") << again;
    EXPECT_EQ(again.source(), "cache") << again;

    Answer alice = ask("alice@noutf8.test");
    EXPECT_EQ(alice.cls(), "valid") << alice << "\n(ASCII senders are asked as ever)";
    // One connection for jörg (EHLO, QUIT) and one for alice; none for the cached answer.
    std::string maillog = maillog_with(postfix, " connect from ", before + 2);
    EXPECT_EQ(occurrences(maillog, " connect from "), before + 2) << maillog;
    EXPECT_EQ(maillog.find("rg@noutf8.test"), std::string::npos) << "jörg was never named";
    if (HasFailure()) std::cerr << "--- postfix maillog ---\n" << maillog;
}

// callout.tls = encrypt and a domain whose only MX offers no STARTTLS: tempfail tls-unavailable,
// kept as a domain fact (no mailbox was named), so the domain's next sender costs no connection.
TEST_F(StartTlsDaemon, EncryptWithoutStartTlsIsATempfailDomainFact) {
    FakeSmtpScript plain;
    plain.recipients["alice"] = "250 2.1.5 ok";
    FakeSmtpServer fake(plain, kPlainIp, port_);
    ASSERT_TRUE(fake.ok()) << fake.error();
    start("tls = \"encrypt\"\n");

    Answer alice = ask("alice@plain.test");
    EXPECT_EQ(alice.cls(), "tempfail") << alice;
    EXPECT_TRUE(alice.reason().starts_with("tls-unavailable: STARTTLS not offered")) << alice;
    EXPECT_EQ(log_field(alice.probe, "scope"), "domain") << alice;
    EXPECT_EQ(log_field(alice.probe, "tls"), "none") << alice;
    EXPECT_EQ(alice.action, "DUNNO") << alice;
    Answer bob = ask("bob@plain.test");
    EXPECT_EQ(bob.cls(), "tempfail") << bob;
    EXPECT_EQ(bob.source(), "cache") << bob;
    EXPECT_EQ(fake.connections_accepted(), 1u);
    EXPECT_EQ(fake.count_commands("MAIL"), 0u) << "never MAIL FROM without TLS";
    EXPECT_EQ(fake.count_commands("QUIT"), 1u);
    fake.stop();
}

}  // namespace
}  // namespace calloutd::test
