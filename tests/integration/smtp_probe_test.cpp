// The SMTP probe against the scriptable fake server on loopback: transcript facts and deadlines.
// Over 500 lines as one concept: the probe state machine's tests, stage by stage.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <chrono>
#include <csignal>
#include <memory>
#include <string>
#include <vector>

#include "callout/smtp_probe.hpp"
#include "support/fake_smtp.hpp"

namespace calloutd {
namespace {

using namespace std::chrono_literals;
using test::FakeReply;
using test::FakeSmtpScript;
using test::FakeSmtpServer;
using Clock = std::chrono::steady_clock;

constexpr const char* kRandom = "rnd-q7x2k9";

struct Run {
    ProbeResult result;
    std::chrono::milliseconds wall{};
    int calls = 0;
    const HostAttempt& at(std::size_t i) const { return result.attempts.at(i); }
};

ProbeOptions options(uint16_t port) {
    ProbeOptions o;
    o.port = port;
    o.helo_name = "probe.calloutd.test";
    o.connect_timeout = 500ms;
    o.command_timeout = 400ms;
    o.probe_timeout = 3s;
    return o;
}

// Runs one probe on a private loop to completion; checks the lifetime promises on the way.
Run run_probe(const ProbeOptions& o, std::vector<ProbeTarget> targets,
              const std::string& sender = "alice@example.org") {
    uv_loop_t loop;
    EXPECT_EQ(uv_loop_init(&loop), 0);
    Run run;
    const auto t0 = Clock::now();
    {
        auto probe = SmtpProbe::create(&loop, o);
        probe->start(std::move(targets), sender, kRandom, [&](ProbeResult r) {
            run.result = std::move(r);
            ++run.calls;
        });
        EXPECT_EQ(run.calls, 0) << "callback invoked synchronously from start()";
    }  // our reference is gone: the probe must keep itself alive
    uv_run(&loop, UV_RUN_DEFAULT);
    run.wall = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
    EXPECT_EQ(uv_loop_close(&loop), 0) << "probe left a handle open";
    EXPECT_EQ(run.calls, 1);
    return run;
}

std::vector<ProbeTarget> at(const FakeSmtpServer& s) {
    return {{"mx1.example.org", s.ip()}};
}

// A server on `ip` at the same port as `first` (the probe uses one port for all targets).
std::unique_ptr<FakeSmtpServer> sibling(FakeSmtpScript script, const std::string& ip,
                                        const FakeSmtpServer& first) {
    return std::make_unique<FakeSmtpServer>(std::move(script), ip, first.port());
}

FakeSmtpScript only_alice() {
    FakeSmtpScript s;
    s.recipients["alice"] = "250 2.1.5 ok";
    return s;
}

std::size_t wire_bytes(const HostAttempt& a) {
    std::size_t n = 0;
    for (const auto& w : a.wire) n += w.text.size();
    return n;
}

TEST(SmtpProbe, ValidUser) {
    FakeSmtpServer srv(only_alice());
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port()), at(srv));
    srv.stop();
    ASSERT_EQ(run.result.attempts.size(), 1u);
    const auto& a = run.at(0);
    EXPECT_EQ(a.mx_host, "mx1.example.org");
    EXPECT_EQ(a.address, "127.0.0.1");
    EXPECT_EQ(a.last_stage, SmtpStage::rcpt);
    EXPECT_EQ(a.event, StageEvent::reply);
    ASSERT_TRUE(a.mail_from && a.random_rcpt && a.rcpt && a.last_reply);
    EXPECT_EQ(a.mail_from->code, 250);
    EXPECT_EQ(a.random_rcpt->code, 550);
    EXPECT_EQ(a.random_rcpt->enhanced, "5.1.1");
    EXPECT_EQ(a.rcpt->code, 250);
    EXPECT_EQ(a.rcpt->enhanced, "2.1.5");
    EXPECT_EQ(describe(a), "250 reply to RCPT: 2.1.5 ok");
    const std::vector<std::string> expected = {"EHLO probe.calloutd.test",
                                               "MAIL FROM:<>",
                                               "RCPT TO:<rnd-q7x2k9@example.org>",
                                               "RSET",
                                               "MAIL FROM:<>",
                                               "RCPT TO:<alice@example.org>",
                                               "QUIT"};
    EXPECT_EQ(srv.commands(), expected);
    // The transcript has both directions, in order, with the banner first.
    ASSERT_FALSE(a.wire.empty());
    EXPECT_FALSE(a.wire.front().sent);
    EXPECT_EQ(a.wire.front().text, "220 fake.test ESMTP");
    EXPECT_TRUE(a.wire[1].sent);
    EXPECT_EQ(a.wire[1].text, "EHLO probe.calloutd.test");
    EXPECT_LT(run.wall, 2s);
}

TEST(SmtpProbe, UnknownUser) {
    FakeSmtpServer srv(FakeSmtpScript{});
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port()), at(srv), "bob@example.org");
    ASSERT_EQ(run.result.attempts.size(), 1u);
    const auto& a = run.at(0);
    EXPECT_EQ(a.last_stage, SmtpStage::rcpt);
    EXPECT_EQ(a.event, StageEvent::reply);
    ASSERT_TRUE(a.rcpt);
    EXPECT_EQ(a.rcpt->code, 550);
    EXPECT_EQ(a.rcpt->enhanced, "5.1.1");
    EXPECT_EQ(srv.count_commands("RCPT TO:<bob@example.org>"), 1u);
}

TEST(SmtpProbe, AcceptAllStopsBeforeTheRealAddress) {
    FakeSmtpScript s;
    s.accept_all = true;
    FakeSmtpServer srv(s);
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port()), at(srv));
    srv.stop();
    ASSERT_EQ(run.result.attempts.size(), 1u);
    const auto& a = run.at(0);
    EXPECT_EQ(a.last_stage, SmtpStage::random_rcpt);
    EXPECT_EQ(a.event, StageEvent::reply);
    ASSERT_TRUE(a.random_rcpt);
    EXPECT_EQ(a.random_rcpt->code, 250);
    EXPECT_FALSE(a.rcpt);
    EXPECT_EQ(srv.count_commands("RCPT TO:<alice@"), 0u);
    EXPECT_EQ(srv.count_commands("RSET"), 0u);
    EXPECT_EQ(srv.count_commands("QUIT"), 1u);
}

TEST(SmtpProbe, WithoutRandomCheckAsksTheAddressDirectly) {
    FakeSmtpServer srv(only_alice());
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto o = options(srv.port());
    o.random_check = false;
    auto run = run_probe(o, at(srv));
    srv.stop();
    const auto& a = run.at(0);
    EXPECT_EQ(a.last_stage, SmtpStage::rcpt);
    ASSERT_TRUE(a.rcpt);
    EXPECT_EQ(a.rcpt->code, 250);
    EXPECT_FALSE(a.random_rcpt);
    const std::vector<std::string> expected = {"EHLO probe.calloutd.test", "MAIL FROM:<>",
                                               "RCPT TO:<alice@example.org>", "QUIT"};
    EXPECT_EQ(srv.commands(), expected);
}

// A definitive RCPT answer is a domain fact: the secondary is never contacted.
void expect_rcpt_answer_ends_probe(const char* reply, int code, const char* enhanced) {
    FakeSmtpScript s;
    s.verbs["RCPT"] = reply;
    FakeSmtpServer primary(s, "127.0.0.11");
    ASSERT_TRUE(primary.ok()) << primary.error();
    auto secondary = sibling(only_alice(), "127.0.0.12", primary);
    ASSERT_TRUE(secondary->ok()) << secondary->error();
    auto run = run_probe(options(primary.port()),
                         {{"mx1.example.org", "127.0.0.11"}, {"mx2.example.org", "127.0.0.12"}});
    primary.stop();
    secondary->stop();
    ASSERT_EQ(run.result.attempts.size(), 1u);
    const auto& a = run.at(0);
    EXPECT_EQ(a.last_stage, SmtpStage::rcpt);
    EXPECT_EQ(a.event, StageEvent::reply);
    ASSERT_TRUE(a.rcpt);
    EXPECT_EQ(a.rcpt->code, code);
    EXPECT_EQ(a.rcpt->enhanced, enhanced);
    EXPECT_EQ(secondary->connections_accepted(), 0u);
}

TEST(SmtpProbe, GreylistedAtRcpt) {
    expect_rcpt_answer_ends_probe("451 4.7.1 greylisted, try again later", 451, "4.7.1");
}

TEST(SmtpProbe, PolicyBlockAtRcpt) {
    expect_rcpt_answer_ends_probe("550 5.7.1 access denied", 550, "5.7.1");
}

TEST(SmtpProbe, NullSenderRejectedIsADomainFact) {
    FakeSmtpScript s;
    s.verbs["MAIL"] = "550 5.7.1 null sender not accepted";
    FakeSmtpServer primary(s, "127.0.0.11");
    ASSERT_TRUE(primary.ok()) << primary.error();
    auto secondary = sibling(only_alice(), "127.0.0.12", primary);
    auto run = run_probe(options(primary.port()),
                         {{"mx1.example.org", "127.0.0.11"}, {"mx2.example.org", "127.0.0.12"}});
    primary.stop();
    secondary->stop();
    ASSERT_EQ(run.result.attempts.size(), 1u);
    const auto& a = run.at(0);
    EXPECT_EQ(a.last_stage, SmtpStage::mail_from);
    EXPECT_EQ(a.event, StageEvent::reply);
    ASSERT_TRUE(a.mail_from);
    EXPECT_EQ(a.mail_from->code, 550);
    EXPECT_FALSE(a.random_rcpt);
    EXPECT_EQ(primary.count_commands("RCPT"), 0u);
    EXPECT_EQ(secondary->connections_accepted(), 0u);
}

TEST(SmtpProbe, StartTlsRequiredAtMail) {
    FakeSmtpScript s;
    s.verbs["MAIL"] = "530 5.7.0 Must issue a STARTTLS command first";
    FakeSmtpServer srv(s);
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port()), at(srv));
    ASSERT_EQ(run.result.attempts.size(), 1u);
    const auto& a = run.at(0);
    EXPECT_EQ(a.last_stage, SmtpStage::mail_from);
    ASSERT_TRUE(a.mail_from);
    EXPECT_EQ(a.mail_from->code, 530);
    EXPECT_EQ(a.mail_from->enhanced, "5.7.0");
    EXPECT_EQ(srv.count_commands("RCPT"), 0u);
}

// Banner refusals are about this host: the next target is tried.
void expect_banner_moves_on(FakeReply banner, int code) {
    FakeSmtpScript s;
    s.banner = std::move(banner);
    FakeSmtpServer primary(s, "127.0.0.11");
    ASSERT_TRUE(primary.ok()) << primary.error();
    auto secondary = sibling(only_alice(), "127.0.0.12", primary);
    ASSERT_TRUE(secondary->ok()) << secondary->error();
    auto run = run_probe(options(primary.port()),
                         {{"mx1.example.org", "127.0.0.11"}, {"mx2.example.org", "127.0.0.12"}});
    primary.stop();
    secondary->stop();
    ASSERT_EQ(run.result.attempts.size(), 2u);
    EXPECT_EQ(run.at(0).last_stage, SmtpStage::banner);
    EXPECT_EQ(run.at(0).event, StageEvent::reply);
    ASSERT_TRUE(run.at(0).last_reply);
    EXPECT_EQ(run.at(0).last_reply->code, code);
    EXPECT_EQ(primary.count_commands("EHLO"), 0u);
    EXPECT_EQ(run.at(1).address, "127.0.0.12");
    EXPECT_EQ(run.at(1).last_stage, SmtpStage::rcpt);
    ASSERT_TRUE(run.at(1).rcpt);
    EXPECT_EQ(run.at(1).rcpt->code, 250);
}

TEST(SmtpProbe, Banner554MovesToNextTarget) {
    expect_banner_moves_on("554 5.7.1 no service for you", 554);
}

TEST(SmtpProbe, Banner421MovesToNextTarget) {
    expect_banner_moves_on("421 4.3.2 too busy", 421);
}

TEST(SmtpProbe, Reply421AtMailMovesToNextTarget) {
    FakeSmtpScript s;
    s.verbs["MAIL"] = "421 4.3.2 shutting down";
    FakeSmtpServer primary(s, "127.0.0.11");
    ASSERT_TRUE(primary.ok()) << primary.error();
    auto secondary = sibling(only_alice(), "127.0.0.12", primary);
    auto run = run_probe(options(primary.port()),
                         {{"mx1.example.org", "127.0.0.11"}, {"mx2.example.org", "127.0.0.12"}});
    ASSERT_EQ(run.result.attempts.size(), 2u);
    EXPECT_EQ(run.at(0).last_stage, SmtpStage::mail_from);
    ASSERT_TRUE(run.at(0).last_reply);
    EXPECT_EQ(run.at(0).last_reply->code, 421);
    ASSERT_TRUE(run.at(1).rcpt);
    EXPECT_EQ(run.at(1).rcpt->code, 250);
}

// Once a recipient is named, a 421 ends the probe: moving on would ask another MX about the
// same address (the random local part's RCPT included).
TEST(SmtpProbe, Reply421AtEitherRcptStopsTheProbe) {
    for (const char* who : {"alice", "random"}) {
        SCOPED_TRACE(who);
        FakeSmtpScript s = only_alice();
        if (std::string(who) == "alice") {
            s.recipients["alice"] = "421 4.7.0 closing connection";
        } else {
            s.rcpt_default = "421 4.7.0 closing connection";
        }
        FakeSmtpServer primary(s, "127.0.0.11");
        ASSERT_TRUE(primary.ok()) << primary.error();
        auto secondary = sibling(only_alice(), "127.0.0.12", primary);
        auto run = run_probe(options(primary.port()), {{"mx1.example.org", "127.0.0.11"},
                                                       {"mx2.example.org", "127.0.0.12"}});
        ASSERT_EQ(run.result.attempts.size(), 1u);
        EXPECT_EQ(run.at(0).last_stage,
                  std::string(who) == "alice" ? SmtpStage::rcpt : SmtpStage::random_rcpt);
        ASSERT_TRUE(run.at(0).last_reply);
        EXPECT_EQ(run.at(0).last_reply->code, 421);
        EXPECT_EQ(secondary->connections_accepted(), 0u);
    }
}

TEST(SmtpProbe, TarpitTimesOutWaitingForBanner) {
    FakeSmtpScript s;
    s.banner.reset();
    FakeSmtpServer srv(s);
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port()), at(srv));
    ASSERT_EQ(run.result.attempts.size(), 1u);
    const auto& a = run.at(0);
    EXPECT_EQ(a.last_stage, SmtpStage::banner);
    EXPECT_EQ(a.event, StageEvent::timeout);
    EXPECT_EQ(describe(a), "timeout while waiting for banner");
    EXPECT_GE(run.result.elapsed, 390ms);
    EXPECT_LT(run.wall, 1500ms);
}

// Partial data must not reset the stage timer, or a dribbling peer holds the probe forever.
TEST(SmtpProbe, HangupBeforeBannerMovesOn) {
    FakeSmtpScript s;
    s.banner = FakeReply::cut("220 hi", 0);
    FakeSmtpServer primary(s, "127.0.0.11");
    ASSERT_TRUE(primary.ok()) << primary.error();
    auto secondary = sibling(only_alice(), "127.0.0.12", primary);
    auto run = run_probe(options(primary.port()),
                         {{"mx1.example.org", "127.0.0.11"}, {"mx2.example.org", "127.0.0.12"}});
    ASSERT_EQ(run.result.attempts.size(), 2u);
    EXPECT_EQ(run.at(0).event, StageEvent::closed);
    EXPECT_EQ(describe(run.at(0)), "connection closed while waiting for banner");
    ASSERT_TRUE(run.at(1).rcpt);
    EXPECT_EQ(run.at(1).rcpt->code, 250);
}

// A listener whose accept queue is full drops SYNs: connect() hangs as for a dead host.
TEST(SmtpProbe, ConnectTimeoutOnUnansweredSyn) {
    int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(lfd, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(0x7f00000f);  // 127.0.0.15
    ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    ASSERT_EQ(::listen(lfd, 0), 0);
    socklen_t len = sizeof sa;
    ::getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &len);
    std::vector<int> fillers;
    for (int i = 0; i < 4; ++i) {
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
        fillers.push_back(fd);
    }
    auto o = options(ntohs(sa.sin_port));
    o.connect_timeout = 300ms;
    auto run = run_probe(o, {{"mx1.example.org", "127.0.0.15"}});
    for (int fd : fillers) ::close(fd);
    ::close(lfd);
    ASSERT_EQ(run.result.attempts.size(), 1u);
    if (run.at(0).event != StageEvent::timeout)
        GTEST_SKIP() << "kernel completed the handshake anyway: " << describe(run.at(0));
    EXPECT_EQ(run.at(0).last_stage, SmtpStage::connect);
    EXPECT_EQ(describe(run.at(0)), "timeout while connecting");
    EXPECT_LT(run.wall, 800ms);
}

TEST(SmtpProbe, DribblingPeerIsBoundedByTheStageTimeout) {
    FakeSmtpScript s;
    s.dribble = 40ms;  // the 21-byte banner would take ~840 ms
    FakeSmtpServer srv(s);
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port()), at(srv));
    const auto& a = run.at(0);
    EXPECT_EQ(a.last_stage, SmtpStage::banner);
    EXPECT_EQ(a.event, StageEvent::timeout);
    EXPECT_LT(run.wall, 700ms);
}

TEST(SmtpProbe, MegabyteBannerIsAProtocolErrorWithBoundedTranscript) {
    FakeSmtpScript s;
    s.huge_banner_bytes = 1024 * 1024;
    FakeSmtpServer srv(s);
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port()), at(srv));
    const auto& a = run.at(0);
    EXPECT_EQ(a.last_stage, SmtpStage::banner);
    EXPECT_EQ(a.event, StageEvent::protocol_error);
    EXPECT_NE(a.detail.find("reply too large"), std::string::npos) << a.detail;
    EXPECT_LT(wire_bytes(a), 20000u);
    EXPECT_EQ(describe(a).rfind("protocol error while waiting for banner", 0), 0u);
}

TEST(SmtpProbe, GarbageIsAProtocolError) {
    FakeSmtpScript s;
    s.banner = FakeReply::garbage(std::string("\x16\x03\x01\x00\xa5garbage\r\n", 14));
    FakeSmtpServer srv(s);
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port()), at(srv));
    const auto& a = run.at(0);
    EXPECT_EQ(a.last_stage, SmtpStage::banner);
    EXPECT_EQ(a.event, StageEvent::protocol_error);
    EXPECT_FALSE(a.detail.empty());
}

TEST(SmtpProbe, UnsolicitedSecondReplyIsAPipeliningViolation) {
    FakeSmtpScript s;
    s.banner = FakeReply::garbage("220 hello\r\n250 surprise\r\n");
    FakeSmtpServer srv(s);
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port()), at(srv));
    const auto& a = run.at(0);
    EXPECT_EQ(a.last_stage, SmtpStage::banner);
    EXPECT_EQ(a.event, StageEvent::protocol_error);
    EXPECT_NE(a.detail.find("pipelining"), std::string::npos) << a.detail;
    EXPECT_EQ(srv.count_commands("EHLO"), 0u);
}

TEST(SmtpProbe, CloseMidReplyMovesOnBeforeRcpt) {
    FakeSmtpScript s;
    s.verbs["MAIL"] = FakeReply::cut("250 2.1.0 ok", 5);
    FakeSmtpServer primary(s, "127.0.0.11");
    ASSERT_TRUE(primary.ok()) << primary.error();
    auto secondary = sibling(only_alice(), "127.0.0.12", primary);
    auto run = run_probe(options(primary.port()),
                         {{"mx1.example.org", "127.0.0.11"}, {"mx2.example.org", "127.0.0.12"}});
    ASSERT_EQ(run.result.attempts.size(), 2u);
    EXPECT_EQ(run.at(0).last_stage, SmtpStage::mail_from);
    EXPECT_EQ(run.at(0).event, StageEvent::closed);
    EXPECT_EQ(describe(run.at(0)), "connection closed while waiting for MAIL FROM reply");
    ASSERT_TRUE(run.at(1).rcpt);
    EXPECT_EQ(run.at(1).rcpt->code, 250);
}

TEST(SmtpProbe, CloseAtRcptDoesNotMoveOn) {
    FakeSmtpScript s;
    s.verbs["RCPT"] = FakeReply::cut("550 5.1.1 nope", 3);
    FakeSmtpServer primary(s, "127.0.0.11");
    ASSERT_TRUE(primary.ok()) << primary.error();
    auto secondary = sibling(only_alice(), "127.0.0.12", primary);
    auto run = run_probe(options(primary.port()),
                         {{"mx1.example.org", "127.0.0.11"}, {"mx2.example.org", "127.0.0.12"}});
    ASSERT_EQ(run.result.attempts.size(), 1u);
    EXPECT_EQ(run.at(0).last_stage, SmtpStage::random_rcpt);
    EXPECT_EQ(run.at(0).event, StageEvent::closed);
    EXPECT_EQ(secondary->connections_accepted(), 0u);
}

TEST(SmtpProbe, SlowRcptTimesOutWithoutMovingOn) {
    FakeSmtpScript s;
    s.verbs["RCPT"] = FakeReply::slow("250 2.1.5 ok", 2s);
    FakeSmtpServer primary(s, "127.0.0.11");
    ASSERT_TRUE(primary.ok()) << primary.error();
    auto secondary = sibling(only_alice(), "127.0.0.12", primary);
    auto o = options(primary.port());
    o.random_check = false;
    auto run = run_probe(o, {{"mx1.example.org", "127.0.0.11"}, {"mx2.example.org", "127.0.0.12"}});
    ASSERT_EQ(run.result.attempts.size(), 1u);
    EXPECT_EQ(run.at(0).last_stage, SmtpStage::rcpt);
    EXPECT_EQ(run.at(0).event, StageEvent::timeout);
    EXPECT_EQ(describe(run.at(0)), "timeout while waiting for RCPT reply");
    EXPECT_EQ(secondary->connections_accepted(), 0u);
    EXPECT_LT(run.wall, 1s);
}

TEST(SmtpProbe, QuitReplyIsNotAwaitedLong) {
    FakeSmtpScript s = only_alice();
    s.verbs["QUIT"] = FakeReply::slow("221 2.0.0 bye", 5s);
    FakeSmtpServer srv(s);
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto o = options(srv.port());
    o.command_timeout = 3s;
    auto run = run_probe(o, at(srv));
    EXPECT_EQ(run.at(0).last_stage, SmtpStage::rcpt);
    EXPECT_EQ(run.at(0).event, StageEvent::reply);
    EXPECT_EQ(srv.count_commands("QUIT"), 1u);
    EXPECT_LT(run.wall, 1500ms);
}

TEST(SmtpProbe, EhloRejectedFallsBackToHelo) {
    FakeSmtpScript s = only_alice();
    s.verbs["EHLO"] = "502 5.5.2 EHLO not supported";
    FakeSmtpServer srv(s);
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port()), at(srv));
    srv.stop();
    const auto& a = run.at(0);
    EXPECT_EQ(a.last_stage, SmtpStage::rcpt);
    ASSERT_TRUE(a.rcpt);
    EXPECT_EQ(a.rcpt->code, 250);
    EXPECT_EQ(srv.count_commands("HELO probe.calloutd.test"), 1u);
}

TEST(SmtpProbe, RefusedPrimaryThenWorkingSecondary) {
    FakeSmtpServer secondary(only_alice(), "127.0.0.12");
    ASSERT_TRUE(secondary.ok()) << secondary.error();
    // Nothing listens on 127.0.0.13 at that port.
    auto run = run_probe(options(secondary.port()),
                         {{"mx1.example.org", "127.0.0.13"}, {"mx2.example.org", "127.0.0.12"}});
    ASSERT_EQ(run.result.attempts.size(), 2u);
    EXPECT_EQ(run.at(0).event, StageEvent::connect_failed);
    EXPECT_EQ(run.at(0).last_stage, SmtpStage::connect);
    EXPECT_EQ(describe(run.at(0)), "connect failed: connection refused");
    ASSERT_TRUE(run.at(1).rcpt);
    EXPECT_EQ(run.at(1).rcpt->code, 250);
}

TEST(SmtpProbe, DeadPrimaryThenWorkingSecondary) {
    FakeSmtpScript tarpit;
    tarpit.banner.reset();
    FakeSmtpServer primary(tarpit, "127.0.0.11");
    ASSERT_TRUE(primary.ok()) << primary.error();
    auto secondary = sibling(only_alice(), "127.0.0.12", primary);
    auto run = run_probe(options(primary.port()),
                         {{"mx1.example.org", "127.0.0.11"}, {"mx2.example.org", "127.0.0.12"}});
    ASSERT_EQ(run.result.attempts.size(), 2u);
    EXPECT_EQ(run.at(0).event, StageEvent::timeout);
    ASSERT_TRUE(run.at(1).rcpt);
    EXPECT_EQ(run.at(1).rcpt->code, 250);
    EXPECT_LT(run.wall, 1500ms);
}

TEST(SmtpProbe, ConnectionRefusedOnAllTargets) {
    const uint16_t port = test::unused_port("127.0.0.1");
    ASSERT_NE(port, 0);
    auto run = run_probe(options(port),
                         {{"mx1.example.org", "127.0.0.13"}, {"mx2.example.org", "127.0.0.14"}});
    ASSERT_EQ(run.result.attempts.size(), 2u);
    for (const auto& a : run.result.attempts) {
        EXPECT_EQ(a.event, StageEvent::connect_failed);
        EXPECT_EQ(a.detail, "connection refused");
        EXPECT_TRUE(a.wire.empty());
    }
    EXPECT_LT(run.wall, 500ms);
}

TEST(SmtpProbe, RejectOnlyAtDataStillCountsRcpt) {
    FakeSmtpScript s = only_alice();
    s.verbs["DATA"] = "554 5.7.1 rejected at DATA";
    FakeSmtpServer srv(s);
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port()), at(srv));
    srv.stop();
    ASSERT_TRUE(run.at(0).rcpt);
    EXPECT_EQ(run.at(0).rcpt->code, 250);
    EXPECT_EQ(srv.count_commands("DATA"), 0u);
}

TEST(SmtpProbe, UnsafeAddressIsNeverWritten) {
    FakeSmtpServer srv(FakeSmtpScript{});
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port()), at(srv), "alice>\r\nDATA\r\nx<@example.org");
    srv.stop();
    ASSERT_EQ(run.result.attempts.size(), 1u);
    const auto& a = run.at(0);
    EXPECT_EQ(a.last_stage, SmtpStage::rcpt);
    EXPECT_EQ(a.event, StageEvent::protocol_error);
    EXPECT_EQ(a.detail, "unsafe address");
    EXPECT_EQ(describe(a), "refused to send RCPT: unsafe address");
    EXPECT_EQ(srv.count_commands("DATA"), 0u);
    EXPECT_EQ(srv.count_commands("RCPT TO:<alice"), 0u);
    EXPECT_EQ(srv.count_commands("X<"), 0u);
}

TEST(SmtpProbe, UnsafeDomainIsRefusedAtTheRandomRcpt) {
    FakeSmtpServer srv(FakeSmtpScript{});
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port()), at(srv), std::string("alice@exa\0mple.org", 18));
    srv.stop();
    const auto& a = run.at(0);
    EXPECT_EQ(a.last_stage, SmtpStage::random_rcpt);
    EXPECT_EQ(a.event, StageEvent::protocol_error);
    EXPECT_EQ(a.detail, "unsafe address");
    EXPECT_EQ(srv.count_commands("RCPT"), 0u);
}

TEST(SmtpProbe, OverallDeadlineAcrossTargets) {
    FakeSmtpScript tarpit;
    tarpit.banner.reset();
    FakeSmtpServer primary(tarpit, "127.0.0.11");
    ASSERT_TRUE(primary.ok()) << primary.error();
    auto secondary = sibling(tarpit, "127.0.0.12", primary);
    auto third = sibling(tarpit, "127.0.0.14", primary);
    auto o = options(primary.port());
    o.probe_timeout = 600ms;
    auto run = run_probe(o, {{"mx1.example.org", "127.0.0.11"},
                             {"mx2.example.org", "127.0.0.12"},
                             {"mx3.example.org", "127.0.0.14"}});
    ASSERT_EQ(run.result.attempts.size(), 2u);
    EXPECT_EQ(run.at(0).event, StageEvent::timeout);
    EXPECT_EQ(run.at(1).event, StageEvent::deadline);
    EXPECT_EQ(describe(run.at(1)), "probe deadline reached while waiting for banner");
    EXPECT_EQ(third->connections_accepted(), 0u);
    EXPECT_GE(run.result.elapsed, 590ms);
    EXPECT_LT(run.wall, 1200ms);
}

TEST(SmtpProbe, Ipv6Loopback) {
    FakeSmtpServer srv(only_alice(), "::1");
    if (!srv.ok()) GTEST_SKIP() << "no IPv6 loopback: " << srv.error();
    auto run = run_probe(options(srv.port()), {{"mx1.example.org", "::1"}});
    ASSERT_TRUE(run.at(0).rcpt);
    EXPECT_EQ(run.at(0).rcpt->code, 250);
}

TEST(SmtpProbe, BindsSourceAddress) {
    FakeSmtpServer srv(only_alice(), "127.0.0.11");
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto o = options(srv.port());
    o.source_address = "127.0.0.21";
    auto run = run_probe(o, at(srv));
    ASSERT_TRUE(run.at(0).rcpt);
    EXPECT_EQ(run.at(0).rcpt->code, 250);
    o.source_address = "::1";  // wrong family for an IPv4 target
    auto bad = run_probe(o, at(srv));
    EXPECT_EQ(bad.at(0).event, StageEvent::connect_failed);
    EXPECT_EQ(bad.at(0).detail, "source address family mismatch");
}

TEST(SmtpProbe, NoTargetsStillCallsBackAsynchronously) {
    auto run = run_probe(options(25), {});
    EXPECT_TRUE(run.result.attempts.empty());
}

TEST(SmtpProbe, InvalidTargetAddress) {
    auto run = run_probe(options(25), {{"mx1.example.org", "not-an-ip"}});
    ASSERT_EQ(run.result.attempts.size(), 1u);
    EXPECT_EQ(run.at(0).event, StageEvent::connect_failed);
    EXPECT_EQ(run.at(0).detail, "invalid address");
}

TEST(SmtpProbe, CancelSuppressesCallbackAndClosesEverything) {
    FakeSmtpScript tarpit;
    tarpit.banner.reset();
    FakeSmtpServer srv(tarpit);
    ASSERT_TRUE(srv.ok()) << srv.error();
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    int calls = 0;
    auto probe = SmtpProbe::create(&loop, options(srv.port()));
    probe->start(at(srv), "alice@example.org", kRandom, [&](ProbeResult) { ++calls; });
    // Let it connect, then cancel from inside the loop.
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = probe.get();
    uv_timer_start(
        &t,
        [](uv_timer_t* timer) {
            static_cast<SmtpProbe*>(timer->data)->cancel();
            uv_close(reinterpret_cast<uv_handle_t*>(timer), nullptr);
        },
        100, 0);
    const auto t0 = Clock::now();
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_LT(Clock::now() - t0, 300ms);
    EXPECT_EQ(calls, 0);
    EXPECT_EQ(uv_loop_close(&loop), 0);
}

TEST(SmtpProbe, ManyConcurrentProbesAgainstOneServer) {
    FakeSmtpScript s = only_alice();
    s.reply_delay = 20ms;
    FakeSmtpServer srv(s);
    ASSERT_TRUE(srv.ok()) << srv.error();
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    constexpr int kProbes = 300;
    int valid = 0, calls = 0;
    auto o = options(srv.port());
    o.command_timeout = 3s;
    o.probe_timeout = 10s;
    for (int i = 0; i < kProbes; ++i) {
        SmtpProbe::create(&loop, o)->start(
            at(srv), "alice@example.org", kRandom, [&](ProbeResult r) {
                ++calls;
                if (r.attempts.size() == 1 && r.attempts[0].rcpt && r.attempts[0].rcpt->code == 250)
                    ++valid;
            });
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop), 0);
    srv.stop();
    EXPECT_EQ(calls, kProbes);
    EXPECT_EQ(valid, kProbes);
    EXPECT_EQ(srv.connections_accepted(), static_cast<std::size_t>(kProbes));
    EXPECT_GT(srv.max_concurrent_connections(), 1u);
    EXPECT_EQ(srv.current_connections(), 0u);
}

}  // namespace
}  // namespace calloutd

namespace calloutd {
namespace {

// The per-target gate: a denied target is skipped without a connection, admitted slots are
// released when their connection closes, and an asynchronous answer is honoured.
TEST(SmtpProbeGate, DeniedTargetIsSkippedAndSlotsAreReleased) {
    FakeSmtpServer primary(only_alice(), "127.0.0.14");
    ASSERT_TRUE(primary.ok()) << primary.error();
    auto secondary = sibling(only_alice(), "127.0.0.15", primary);
    uv_loop_t loop;
    uv_loop_init(&loop);
    std::vector<std::string> asked;
    std::vector<std::string> released;
    std::optional<ProbeResult> result;
    uv_timer_t later;
    uv_timer_init(&loop, &later);
    std::function<void(bool)> pending;
    later.data = &pending;
    {
        auto probe = SmtpProbe::create(&loop, options(primary.port()));
        probe->set_gate(
            [&](const ProbeTarget& t, std::function<void(bool)> done) {
                asked.push_back(t.ip);
                if (t.ip == "127.0.0.14") {
                    done(false);  // at once: over budget
                    return;
                }
                pending = std::move(done);  // later, from a timer
                uv_timer_start(
                    &later,
                    [](uv_timer_t* tm) {
                        auto* p = static_cast<std::function<void(bool)>*>(tm->data);
                        (*p)(true);
                    },
                    20, 0);
            },
            [&](const ProbeTarget& t) { released.push_back(t.ip); });
        probe->start({{"mx1.example.org", "127.0.0.14"}, {"mx2.example.org", "127.0.0.15"}},
                     "alice@example.org", kRandom, [&](ProbeResult r) { result = std::move(r); });
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close(reinterpret_cast<uv_handle_t*>(&later), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop), 0);
    ASSERT_TRUE(result);
    EXPECT_EQ(asked, (std::vector<std::string>{"127.0.0.14", "127.0.0.15"}));
    EXPECT_EQ(released, (std::vector<std::string>{"127.0.0.15"}));
    EXPECT_EQ(primary.connections_accepted(), 0u);
    EXPECT_EQ(secondary->connections_accepted(), 1u);
    ASSERT_EQ(result->attempts.size(), 1u);
    ASSERT_TRUE(result->attempts[0].rcpt);
    EXPECT_EQ(result->attempts[0].rcpt->code, 250);
}

TEST(SmtpProbeGate, CancelReleasesAHeldSlotAndNeverCallsTheGateOwnerAgain) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    std::function<void(bool)> pending;
    int released = 0;
    bool called = false;
    auto probe = SmtpProbe::create(&loop, options(25));
    probe->set_gate([&](const ProbeTarget&, std::function<void(bool)> done) { pending = done; },
                    [&](const ProbeTarget&) { ++released; });
    probe->start({{"mx1.example.org", "127.0.0.16"}}, "alice@example.org", kRandom,
                 [&](ProbeResult) { called = true; });
    probe->cancel();
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_TRUE(pending);
    pending(true);  // the budget answers after the probe is gone: the owner's slot to return
    EXPECT_EQ(released, 0);
    EXPECT_FALSE(called);

    // A slot held by a connecting probe comes back at cancel(), once.
    FakeSmtpScript tarpit;
    tarpit.banner.reset();
    FakeSmtpServer slow(tarpit, "127.0.0.17");
    ASSERT_TRUE(slow.ok()) << slow.error();
    auto second = SmtpProbe::create(&loop, options(slow.port()));
    second->set_gate([](const ProbeTarget&, std::function<void(bool)> done) { done(true); },
                     [&](const ProbeTarget&) { ++released; });
    second->start({{"mx1.example.org", "127.0.0.17"}}, "alice@example.org", kRandom,
                  [&](ProbeResult) { called = true; });
    while (slow.connections_accepted() == 0) uv_run(&loop, UV_RUN_NOWAIT);
    second->cancel();
    EXPECT_EQ(released, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(released, 1);
    EXPECT_FALSE(called);
    probe.reset();
    second.reset();
    EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace
}  // namespace calloutd
