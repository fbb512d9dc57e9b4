// SMTPUTF8 in the probe: a UTF-8 address is asked only under "MAIL FROM:<> SMTPUTF8", and not at
// all where the EHLO reply does not offer it; ASCII addresses never declare it; no UTF-8 (and no
// malformed UTF-8 ever) reaches the wire otherwise.
#include <gtest/gtest.h>
#include <uv.h>

#include <chrono>
#include <string>
#include <vector>

#include "callout/classifier.hpp"
#include "callout/smtp_probe.hpp"
#include "support/fake_smtp.hpp"

namespace calloutd {
namespace {

using namespace std::chrono_literals;
using test::FakeSmtpScript;
using test::FakeSmtpServer;

constexpr const char* kRandom = "rnd-q7x2k9";

ProbeOptions options(uint16_t port) {
    ProbeOptions o;
    o.port = port;
    o.helo_name = "probe.calloutd.test";
    o.connect_timeout = 1s;
    o.command_timeout = 2s;
    o.probe_timeout = 5s;
    return o;
}

ProbeResult run_probe(const ProbeOptions& o, std::vector<ProbeTarget> targets,
                      const std::string& sender) {
    uv_loop_t loop;
    EXPECT_EQ(uv_loop_init(&loop), 0);
    ProbeResult result;
    int calls = 0;
    SmtpProbe::create(&loop, o)->start(std::move(targets), sender, kRandom, [&](ProbeResult r) {
        result = std::move(r);
        ++calls;
    });
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop), 0);
    EXPECT_EQ(calls, 1);
    return result;
}

// Knows jörg and alice; offers SMTPUTF8 when `utf8`.
FakeSmtpScript script(bool utf8) {
    FakeSmtpScript s;
    s.recipients["jörg"] = "250 2.1.5 ok";
    s.recipients["alice"] = "250 2.1.5 ok";
    if (utf8) s.verbs["EHLO"] = "250-fake.test\n250-8BITMIME\n250 SMTPUTF8";
    return s;
}

TEST(SmtpProbeSmtputf8, Utf8AddressIsAskedUnderSmtputf8) {
    FakeSmtpServer srv(script(true));
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto r = run_probe(options(srv.port()), {{"mx.example.org", srv.ip()}}, "jörg@example.org");
    srv.stop();
    ASSERT_EQ(r.attempts.size(), 1u);
    ASSERT_TRUE(r.attempts[0].rcpt) << describe(r.attempts[0]);
    EXPECT_EQ(r.attempts[0].rcpt->code, 250);
    EXPECT_TRUE(r.attempts[0].extensions.smtputf8);
    const std::vector<std::string> expected = {"EHLO probe.calloutd.test",
                                               "MAIL FROM:<> SMTPUTF8",
                                               "RCPT TO:<rnd-q7x2k9@example.org>",
                                               "RSET",
                                               "MAIL FROM:<> SMTPUTF8",
                                               "RCPT TO:<jörg@example.org>",
                                               "QUIT"};
    EXPECT_EQ(srv.commands(), expected);
    EXPECT_EQ(classify(r.attempts).cls, VerdictClass::valid);
}

TEST(SmtpProbeSmtputf8, Utf8AddressIsNotAskedWithoutSmtputf8) {
    FakeSmtpServer first(script(false), "127.0.0.11");
    ASSERT_TRUE(first.ok()) << first.error();
    FakeSmtpServer second(script(true), "127.0.0.12", first.port());
    ASSERT_TRUE(second.ok()) << second.error();
    auto r = run_probe(options(first.port()),
                       {{"mx1.example.org", "127.0.0.11"}, {"mx2.example.org", "127.0.0.12"}},
                       "jörg@example.org");
    first.stop();
    second.stop();
    ASSERT_EQ(r.attempts.size(), 1u) << "not asked here means not asked at all";
    EXPECT_EQ(r.attempts[0].event, StageEvent::smtputf8_unsupported);
    EXPECT_EQ(r.attempts[0].last_stage, SmtpStage::ehlo);
    EXPECT_EQ(describe(r.attempts[0]), "SMTPUTF8 not offered: a UTF-8 address is not asked");
    const std::vector<std::string> expected = {"EHLO probe.calloutd.test", "QUIT"};
    EXPECT_EQ(first.commands(), expected);
    EXPECT_EQ(second.connections_accepted(), 0u);
    Verdict v = classify(r.attempts);
    EXPECT_EQ(v.cls, VerdictClass::skipped);
    EXPECT_TRUE(v.reason.starts_with("smtputf8-unsupported")) << v.reason;
}

TEST(SmtpProbeSmtputf8, AsciiAddressesNeverDeclareSmtputf8) {
    FakeSmtpServer srv(script(true));
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto r = run_probe(options(srv.port()), {{"mx.example.org", srv.ip()}}, "alice@example.org");
    srv.stop();
    ASSERT_TRUE(r.attempts[0].rcpt);
    EXPECT_EQ(srv.count_commands("MAIL FROM:<>"), 2u);
    EXPECT_EQ(srv.count_commands("MAIL FROM:<> SMTPUTF8"), 0u);
}

TEST(SmtpProbeSmtputf8, HeloFallbackOffersNoExtensions) {
    FakeSmtpScript s = script(true);
    s.verbs["EHLO"] = "502 5.5.2 EHLO not supported";
    FakeSmtpServer srv(s);
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto utf8 = run_probe(options(srv.port()), {{"mx.example.org", srv.ip()}}, "jörg@example.org");
    EXPECT_EQ(utf8.attempts[0].last_stage, SmtpStage::helo);
    EXPECT_EQ(utf8.attempts[0].event, StageEvent::smtputf8_unsupported);
    EXPECT_FALSE(utf8.attempts[0].extensions.esmtp);
    auto ascii =
        run_probe(options(srv.port()), {{"mx.example.org", srv.ip()}}, "alice@example.org");
    srv.stop();
    ASSERT_TRUE(ascii.attempts[0].rcpt) << "HELO still works for ASCII addresses";
    EXPECT_EQ(ascii.attempts[0].rcpt->code, 250);
    EXPECT_EQ(srv.count_commands("RCPT TO:<j"), 0u);
}

// Defence in depth: even under SMTPUTF8 only well-formed UTF-8 is written.
TEST(SmtpProbeSmtputf8, MalformedUtf8IsNeverWritten) {
    FakeSmtpServer srv(script(true));
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto r =
        run_probe(options(srv.port()), {{"mx.example.org", srv.ip()}}, "j\xff\xfe@example.org");
    srv.stop();
    EXPECT_EQ(r.attempts[0].event, StageEvent::protocol_error);
    EXPECT_EQ(r.attempts[0].detail, "unsafe address");
    EXPECT_EQ(srv.count_commands("RCPT TO:<j"), 0u);
}

}  // namespace
}  // namespace calloutd
