// `calloutd probe -c FILE ADDRESS`: one callout from the command line against dnsmasq test
// zones and a fake SMTP server; prints MX hosts, the SMTP dialogue and the class; exit code
// 0 valid, 1 invalid or no_mail_domain, 2 otherwise. Skipped while the subcommand is missing.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include "support/callout_world.hpp"
#include "support/command.hpp"
#include "support/dnsmasq.hpp"
#include "support/fake_dns.hpp"
#include "support/fake_smtp.hpp"
#include "support/paths.hpp"
#include "support/tls_cert.hpp"

namespace calloutd::test {
namespace {

using namespace std::chrono_literals;
using namespace world;

// `probe --help` alone is not proof: CLI11 answers `calloutd UNKNOWN --help` with the top-level
// help and exit 0. Only a subcommand's own help has a usage line naming it.
bool probe_command_exists() {
    static const bool exists = [] {
        auto r = run_command({daemon_binary(), "probe", "--help"}, 10s);
        if (r.exit_code != 0) return false;
        auto usage = r.out.find("Usage:");
        return usage != std::string::npos &&
               r.out.substr(usage, r.out.find('\n', usage) - usage).find(" probe") !=
                   std::string::npos;
    }();
    return exists;
}

class ProbeCommand : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        if (!probe_command_exists()) return;
        servfail_ = std::make_unique<FakeDnsServer>(FakeDnsServer::Mode::servfail);
        dnsmasq_ = std::make_unique<Dnsmasq>(callout_test_zones(servfail_->dnsmasq_upstream()));
    }
    static void TearDownTestSuite() {
        dnsmasq_.reset();
        servfail_.reset();
    }

    void SetUp() override {
        if (!probe_command_exists()) GTEST_SKIP() << "calloutd has no probe subcommand yet";
        FakeSmtpScript s;
        s.recipients["alice"] = "250 2.1.5 Ok";  // everyone else: "550 5.1.1 no such user"
        smtp_ = std::make_unique<FakeSmtpServer>(s, kSharedIp);
        ASSERT_TRUE(smtp_->ok()) << smtp_->error();
        dir_ = make_temp_dir("probe-cmd");
        CalloutConfig c;
        c.dns_server = dnsmasq_->server();
        c.smtp_port = smtp_->port();
        c.control_socket = "";  // `calloutd probe` talks to no daemon
        std::ofstream(dir_ + "/calloutd.toml") << callout_config(c);
    }
    void TearDown() override {
        if (smtp_) smtp_->stop();
        if (!dir_.empty()) {
            std::error_code ec;
            std::filesystem::remove_all(dir_, ec);
        }
    }

    // Replaces the target with `script` on a port of its own, and points the configuration there.
    void serve(const FakeSmtpScript& script) {
        smtp_->stop();
        smtp_ = std::make_unique<FakeSmtpServer>(script, kSharedIp);
        ASSERT_TRUE(smtp_->ok()) << smtp_->error();
        CalloutConfig c;
        c.dns_server = dnsmasq_->server();
        c.smtp_port = smtp_->port();
        c.control_socket = "";
        std::ofstream(dir_ + "/calloutd.toml") << callout_config(c);
    }
    FakeSmtpScript tls_script(FakeTls::Fault fault) {
        TestCertificate cert = make_self_signed_certificate(dir_, "mx", "mx.shared.test");
        FakeSmtpScript s;
        s.recipients["alice"] = "250 2.1.5 Ok";
        s.tls = FakeTls{cert.cert_file, cert.key_file, true, fault};
        return s;
    }

    CommandResult probe(const std::string& address) {
        auto r =
            run_command({daemon_binary(), "probe", "-c", dir_ + "/calloutd.toml", address}, 15s);
        EXPECT_FALSE(r.timed_out) << address;
        return r;
    }

    static std::string dump(const CommandResult& r) {
        return "exit=" + std::to_string(r.exit_code) + "\n--- stdout ---\n" + r.out +
               "--- stderr ---\n" + r.err;
    }
    // The last non-empty line of stdout: the verdict.
    static std::string last_line(const CommandResult& r) {
        std::string out = r.out;
        while (!out.empty() && out.back() == '\n') out.pop_back();
        return out.substr(out.rfind('\n') == std::string::npos ? 0 : out.rfind('\n') + 1);
    }
    static bool has(const CommandResult& r, const std::string& text) {
        return r.out.find(text) != std::string::npos;
    }

    static inline std::unique_ptr<FakeDnsServer> servfail_;
    static inline std::unique_ptr<Dnsmasq> dnsmasq_;
    std::unique_ptr<FakeSmtpServer> smtp_;
    std::string dir_;
};

TEST_F(ProbeCommand, ValidAddressPrintsTheDialogueAndExitsZero) {
    auto r = probe("alice@shared.test");
    EXPECT_EQ(r.exit_code, 0) << dump(r);
    EXPECT_TRUE(has(r, "mx.shared.test")) << dump(r);
    EXPECT_TRUE(has(r, "MAIL FROM:<>")) << dump(r);
    EXPECT_TRUE(has(r, "RCPT TO:<alice@shared.test>")) << dump(r);
    EXPECT_TRUE(has(r, "250 2.1.5 Ok")) << dump(r);
    EXPECT_TRUE(last_line(r).find("class=valid") != std::string::npos) << dump(r);
    EXPECT_TRUE(has(r, "reason=")) << dump(r);
    EXPECT_EQ(smtp_->connections_accepted(), 1u);
}

TEST_F(ProbeCommand, InvalidAddressExitsOne) {
    auto r = probe("nobody@shared.test");
    EXPECT_EQ(r.exit_code, 1) << dump(r);
    EXPECT_TRUE(has(r, "RCPT TO:<nobody@shared.test>")) << dump(r);
    EXPECT_TRUE(has(r, "550 5.1.1 no such user")) << dump(r);
    EXPECT_TRUE(last_line(r).find("class=invalid") != std::string::npos) << dump(r);
    EXPECT_TRUE(last_line(r).find(" scope=address ") != std::string::npos) << dump(r);
    EXPECT_TRUE(last_line(r).find("reason=") != std::string::npos) << dump(r);
}

// An offline resolver cannot resolve the root zone (the default canary): its NXDOMAIN is not
// believed, and the output says which rule decided.
TEST_F(ProbeCommand, NxdomainFromAResolverFailingTheCanaryIsTempfail) {
    CalloutConfig c;
    c.dns_server = dnsmasq_->server();
    c.dns_canary = ".";
    c.smtp_port = smtp_->port();
    c.control_socket = "";  // `calloutd probe` talks to no daemon
    std::ofstream(dir_ + "/calloutd.toml") << callout_config(c);
    auto r = probe("alice@nx.test");
    EXPECT_EQ(r.exit_code, 2) << dump(r);
    EXPECT_TRUE(last_line(r).starts_with("class=tempfail reason=\"dns-unhealthy: nxdomain"))
        << dump(r);
    // A null MX is a record that exists: believed without the canary.
    auto nullmx = probe("alice@nullmx.test");
    EXPECT_EQ(nullmx.exit_code, 1) << dump(nullmx);
}

TEST_F(ProbeCommand, NoMailDomainExitsOne) {
    for (const char* address : {"alice@nullmx.test", "alice@nx.test"}) {
        auto r = probe(address);
        EXPECT_EQ(r.exit_code, 1) << dump(r);
        EXPECT_TRUE(has(r, "class=no_mail_domain")) << dump(r);
        EXPECT_TRUE(has(r, " scope=domain ")) << dump(r);
    }
    EXPECT_EQ(smtp_->connections_accepted(), 0u);
}

TEST_F(ProbeCommand, OtherClassesExitTwo) {
    // Nothing listens on the shared port at refused.test's MX address: connection refused.
    auto refused = probe("alice@refused.test");
    EXPECT_EQ(refused.exit_code, 2) << dump(refused);
    EXPECT_TRUE(has(refused, "class=tempfail")) << dump(refused);

    auto servfail = probe("alice@servfail.test");
    EXPECT_EQ(servfail.exit_code, 2) << dump(servfail);
    EXPECT_TRUE(has(servfail, "class=tempfail")) << dump(servfail);
}

TEST_F(ProbeCommand, TlsSessionAndTheCommandsInsideItAreShown) {
    serve(tls_script(FakeTls::Fault::none));
    auto r = probe("alice@shared.test");
    EXPECT_EQ(r.exit_code, 0) << dump(r);
    const auto session = r.out.find(" --- TLS TLSv1.3 TLS_AES_256_GCM_SHA384\n");
    ASSERT_NE(session, std::string::npos) << dump(r);
    EXPECT_TRUE(has(r, " --- TLS peer subject=CN=mx.shared.test issuer=CN=mx.shared.test\n"))
        << dump(r);
    EXPECT_LT(r.out.find(">>> STARTTLS"), session) << dump(r);
    EXPECT_GT(r.out.find(">>> RCPT TO:<alice@shared.test>"), session) << dump(r);
    EXPECT_NE(last_line(r).find(" tls=TLSv1.3 "), std::string::npos) << dump(r);
    EXPECT_EQ(smtp_->tls_handshakes(), 1u);
}

TEST_F(ProbeCommand, FailedHandshakeAndThePlaintextRetryAreShown) {
    serve(tls_script(FakeTls::Fault::garbage));
    auto r = probe("alice@shared.test");
    EXPECT_EQ(r.exit_code, 0) << dump(r);
    EXPECT_TRUE(has(r, " --- TLS handshake failed: ")) << dump(r);
    EXPECT_TRUE(has(r, "--- mx.shared.test [" + std::string(kSharedIp) +
                           "] (plaintext retry: the TLS handshake failed)\n"))
        << dump(r);
    EXPECT_NE(last_line(r).find("class=valid"), std::string::npos) << dump(r);
    EXPECT_NE(last_line(r).find(" tls=none "), std::string::npos) << dump(r);
    EXPECT_EQ(smtp_->connections_accepted(), 2u);
}

TEST_F(ProbeCommand, Utf8AddressAtAServerWithoutSmtputf8IsNotAsked) {
    auto r = probe("jörg@shared.test");
    EXPECT_EQ(r.exit_code, 2) << dump(r);
    EXPECT_TRUE(last_line(r).starts_with("class=skipped reason=\"smtputf8-unsupported")) << dump(r);
    EXPECT_TRUE(has(r, "--- SMTPUTF8 not offered: a UTF-8 address is not asked\n")) << dump(r);
    EXPECT_FALSE(has(r, ">>> MAIL")) << dump(r);
}

}  // namespace
}  // namespace calloutd::test
