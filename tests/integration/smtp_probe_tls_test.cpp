// STARTTLS inside the probe state machine, against the fake SMTP server's OpenSSL side: the
// session and the EHLO inside it, the plaintext retry after every way a handshake can fail, the
// three callout.tls modes, and cancel/deadline in the middle of a handshake (run under ASan with
// detect_leaks=1, these prove every path frees its SSL objects).
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <uv.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "callout/smtp_probe.hpp"
#include "callout/tls_context.hpp"
#include "callout/tls_session.hpp"
#include "support/fake_smtp.hpp"
#include "support/paths.hpp"
#include "support/tls_cert.hpp"

namespace calloutd {
namespace {

using namespace std::chrono_literals;
using test::FakeReply;
using test::FakeSmtpScript;
using test::FakeSmtpServer;
using test::FakeTls;
using Clock = std::chrono::steady_clock;

constexpr const char* kRandom = "rnd-q7x2k9";

class SmtpProbeTls : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        dir_ = test::make_temp_dir("probe-tls");
        cert_ = test::make_self_signed_certificate(dir_, "mx1", "mx1.example.org");
    }
    static void TearDownTestSuite() {
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }

    // Knows alice; STARTTLS offered and served with the test certificate.
    static FakeSmtpScript tls_script(FakeTls::Fault fault = FakeTls::Fault::none) {
        FakeSmtpScript s;
        s.recipients["alice"] = "250 2.1.5 ok";
        FakeTls t;
        t.cert_file = cert_.cert_file;
        t.key_file = cert_.key_file;
        t.fault = fault;
        s.tls = t;
        return s;
    }

    static ProbeOptions options(uint16_t port, TlsMode mode = TlsMode::may) {
        ProbeOptions o;
        o.port = port;
        o.helo_name = "probe.calloutd.test";
        o.connect_timeout = 1s;
        o.command_timeout = 2s;
        o.tls_timeout = 2s;
        o.probe_timeout = 8s;
        o.tls = mode;
        return o;
    }

    struct Run {
        ProbeResult result;
        int calls = 0;
        std::chrono::milliseconds wall{};
        const HostAttempt& at(std::size_t i) const { return result.attempts.at(i); }
    };

    // One probe on a private loop to completion; the lifetime promises hold with TLS too.
    static Run run_probe(const ProbeOptions& o, std::vector<ProbeTarget> targets,
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
        }
        uv_run(&loop, UV_RUN_DEFAULT);
        run.wall = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
        EXPECT_EQ(uv_loop_close(&loop), 0) << "probe left a handle open";
        EXPECT_EQ(run.calls, 1);
        return run;
    }

    static std::vector<ProbeTarget> at(const FakeSmtpServer& s) {
        return {{"mx1.example.org", s.ip()}};
    }

    static std::vector<std::string> notes(const HostAttempt& a) {
        std::vector<std::string> out;
        for (const auto& w : a.wire)
            if (w.note) out.push_back(w.text);
        return out;
    }

    // Index of the first wire line whose text starts with `prefix`, or -1.
    static int line_index(const HostAttempt& a, const std::string& prefix) {
        for (std::size_t i = 0; i < a.wire.size(); ++i)
            if (a.wire[i].text.rfind(prefix, 0) == 0) return static_cast<int>(i);
        return -1;
    }

    // The plaintext retry after a failed handshake decides, from a conversation without TLS.
    static void expect_plaintext_retry(const Run& run, const FakeSmtpServer& srv) {
        ASSERT_EQ(run.result.attempts.size(), 2u);
        const HostAttempt& first = run.at(0);
        EXPECT_EQ(first.last_stage, SmtpStage::tls_handshake) << describe(first);
        EXPECT_TRUE(first.tls_failed);
        EXPECT_FALSE(first.tls);
        EXPECT_FALSE(first.plaintext_retry);
        EXPECT_TRUE(describe(first).find("TLS handshake failed") != std::string::npos ||
                    first.event != StageEvent::protocol_error)
            << describe(first);
        const HostAttempt& retry = run.at(1);
        EXPECT_EQ(retry.address, first.address) << "the same MX host again";
        EXPECT_TRUE(retry.plaintext_retry);
        EXPECT_FALSE(retry.tls);
        EXPECT_TRUE(retry.starttls_offered) << "offered, and deliberately not used";
        EXPECT_EQ(retry.last_stage, SmtpStage::rcpt) << describe(retry);
        ASSERT_TRUE(retry.rcpt);
        EXPECT_EQ(retry.rcpt->code, 250);
        EXPECT_EQ(srv.connections_accepted(), 2u);
        EXPECT_EQ(srv.count_commands("STARTTLS"), 1u) << "the retry never says STARTTLS";
        EXPECT_EQ(srv.count_commands("RCPT TO:<alice@example.org>"), 1u);
    }

    static inline std::string dir_;
    static inline test::TestCertificate cert_;
};

TEST_F(SmtpProbeTls, StartTlsWhenOfferedThenEhloAgainInside) {
    FakeSmtpServer srv(tls_script());
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port()), at(srv));
    srv.stop();
    ASSERT_EQ(run.result.attempts.size(), 1u);
    const HostAttempt& a = run.at(0);
    EXPECT_EQ(a.last_stage, SmtpStage::rcpt) << describe(a);
    ASSERT_TRUE(a.rcpt);
    EXPECT_EQ(a.rcpt->code, 250);
    EXPECT_TRUE(a.starttls_offered);
    ASSERT_TRUE(a.tls);
    EXPECT_EQ(a.tls->version, "TLSv1.3");
    EXPECT_EQ(a.tls->cipher, "TLS_AES_256_GCM_SHA384");
    EXPECT_EQ(a.tls->peer_subject, "CN=mx1.example.org");
    EXPECT_EQ(a.tls->peer_issuer, "CN=mx1.example.org") << "self-signed, and not verified";
    EXPECT_FALSE(a.extensions.starttls) << "the EHLO inside TLS no longer offers it";
    const std::vector<std::string> expected = {"EHLO probe.calloutd.test",
                                               "STARTTLS",
                                               "EHLO probe.calloutd.test",
                                               "MAIL FROM:<>",
                                               "RCPT TO:<rnd-q7x2k9@example.org>",
                                               "RSET",
                                               "MAIL FROM:<>",
                                               "RCPT TO:<alice@example.org>",
                                               "QUIT"};
    EXPECT_EQ(srv.commands(), expected);
    EXPECT_EQ(srv.tls_handshakes(), 1u);
    EXPECT_EQ(srv.tls_server_names(), std::vector<std::string>{"mx1.example.org"}) << "SNI";
    // The transcript: the session note comes after the 220 and before the second EHLO.
    const std::vector<std::string> want_notes = {
        "TLS TLSv1.3 TLS_AES_256_GCM_SHA384",
        "TLS peer subject=CN=mx1.example.org issuer=CN=mx1.example.org"};
    EXPECT_EQ(notes(a), want_notes);
    const int ready = line_index(a, "220 2.0.0 Ready to start TLS");
    const int session = line_index(a, "TLS TLSv1.3");
    ASSERT_GE(ready, 0);
    ASSERT_GT(session, ready);
    ASSERT_LT(session + 2, static_cast<int>(a.wire.size()));
    EXPECT_TRUE(a.wire[session + 2].sent);
    EXPECT_EQ(a.wire[session + 2].text, "EHLO probe.calloutd.test");
}

TEST_F(SmtpProbeTls, NoSniForAnIpLiteralMxName) {
    FakeSmtpServer srv(tls_script());
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port()), {{"127.0.0.1", srv.ip()}});
    srv.stop();
    ASSERT_TRUE(run.at(0).tls);
    EXPECT_EQ(srv.tls_server_names(), std::vector<std::string>{""});
    EXPECT_FALSE(is_sni_host_name("192.0.2.1"));
    EXPECT_FALSE(is_sni_host_name("2001:db8::1"));
    EXPECT_FALSE(is_sni_host_name(""));
    EXPECT_TRUE(is_sni_host_name("mx1.example.org"));
}

// RFC 3207 4.2: what the server said before TLS is forgotten; the EHLO inside counts.
TEST_F(SmtpProbeTls, ExtensionsAreReadAgainInsideTls) {
    FakeSmtpScript s = tls_script();
    s.recipients["jörg"] = "250 2.1.5 ok";
    s.tls_verbs["EHLO"] = "250-fake.test\n250-SMTPUTF8\n250 PIPELINING";
    FakeSmtpServer upgraded(s);
    ASSERT_TRUE(upgraded.ok()) << upgraded.error();
    auto run = run_probe(options(upgraded.port()), at(upgraded), "jörg@example.org");
    upgraded.stop();
    ASSERT_TRUE(run.at(0).tls);
    EXPECT_TRUE(run.at(0).extensions.smtputf8);
    EXPECT_TRUE(run.at(0).extensions.pipelining);
    ASSERT_TRUE(run.at(0).rcpt) << describe(run.at(0));
    EXPECT_EQ(run.at(0).rcpt->code, 250);
    EXPECT_EQ(upgraded.count_commands("MAIL FROM:<> SMTPUTF8"), 2u);

    // Offered outside TLS only: gone once inside, so the UTF-8 address is not asked.
    FakeSmtpScript d = tls_script();
    d.verbs["EHLO"] = "250-fake.test\n250-STARTTLS\n250 SMTPUTF8";
    d.tls_verbs["EHLO"] = "250-fake.test\n250 8BITMIME";
    FakeSmtpServer downgraded(d);
    ASSERT_TRUE(downgraded.ok()) << downgraded.error();
    auto down = run_probe(options(downgraded.port()), at(downgraded), "jörg@example.org");
    downgraded.stop();
    ASSERT_TRUE(down.at(0).tls);
    EXPECT_EQ(down.at(0).event, StageEvent::smtputf8_unsupported) << describe(down.at(0));
    EXPECT_EQ(downgraded.count_commands("MAIL"), 0u);
}

TEST_F(SmtpProbeTls, GarbageAfterReadyIsRetriedOnceInPlaintext) {
    FakeSmtpServer srv(tls_script(FakeTls::Fault::garbage));
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port()), at(srv));
    srv.stop();
    expect_plaintext_retry(run, srv);
    EXPECT_EQ(run.at(0).event, StageEvent::protocol_error);
    const auto n = notes(run.at(0));
    ASSERT_FALSE(n.empty());
    EXPECT_TRUE(n.back().starts_with("TLS handshake failed: ")) << n.back();
}

TEST_F(SmtpProbeTls, GarbageAnswerToTheClientHelloIsRetriedOnceInPlaintext) {
    FakeSmtpServer srv(tls_script(FakeTls::Fault::garbage_reply));
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port()), at(srv));
    srv.stop();
    expect_plaintext_retry(run, srv);
    EXPECT_EQ(run.at(0).event, StageEvent::protocol_error);
    EXPECT_EQ(describe(run.at(0)), "TLS handshake failed: " + run.at(0).detail);
    EXPECT_FALSE(run.at(0).detail.empty()) << "OpenSSL's reason, e.g. wrong version number";
}

TEST_F(SmtpProbeTls, HandshakeThatNeverAnswersTimesOutThenPlaintextRetry) {
    FakeSmtpServer srv(tls_script(FakeTls::Fault::stall));
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto o = options(srv.port());
    o.tls_timeout = 300ms;
    auto run = run_probe(o, at(srv));
    srv.stop();
    expect_plaintext_retry(run, srv);
    EXPECT_EQ(run.at(0).event, StageEvent::timeout);
    EXPECT_EQ(describe(run.at(0)), "timeout while doing the TLS handshake");
    EXPECT_GE(run.wall, 300ms);
    EXPECT_LT(run.wall, o.command_timeout) << "the handshake has its own timeout";
}

TEST_F(SmtpProbeTls, ResetMidHandshakeIsRetriedInPlaintext) {
    FakeSmtpServer srv(tls_script(FakeTls::Fault::reset));
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port()), at(srv));
    srv.stop();
    expect_plaintext_retry(run, srv);
    EXPECT_TRUE(run.at(0).event == StageEvent::io_error || run.at(0).event == StageEvent::closed)
        << describe(run.at(0));
}

TEST_F(SmtpProbeTls, TlsBelowOnePointTwoIsRefusedAndRetriedInPlaintext) {
    FakeSmtpScript s = tls_script();
    s.tls->max_version = TLS1_1_VERSION;
    FakeSmtpServer srv(s);
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port()), at(srv));
    srv.stop();
    expect_plaintext_retry(run, srv);
    EXPECT_EQ(srv.tls_handshakes(), 0u);
    EXPECT_FALSE(run.at(0).detail.empty());
}

TEST_F(SmtpProbeTls, RefusedStartTlsContinuesInPlaintextAtMay) {
    FakeSmtpScript s = tls_script();
    s.verbs["STARTTLS"] = "454 4.7.0 TLS not available due to local problem";
    FakeSmtpServer srv(s);
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port()), at(srv));
    ASSERT_EQ(run.result.attempts.size(), 1u) << "the same connection goes on";
    ASSERT_TRUE(run.at(0).rcpt);
    EXPECT_EQ(run.at(0).rcpt->code, 250);
    EXPECT_FALSE(run.at(0).tls);
    EXPECT_FALSE(run.at(0).tls_failed);

    auto strict = run_probe(options(srv.port(), TlsMode::encrypt), at(srv));
    srv.stop();
    ASSERT_EQ(strict.result.attempts.size(), 1u);
    EXPECT_EQ(strict.at(0).last_stage, SmtpStage::starttls);
    ASSERT_TRUE(strict.at(0).last_reply);
    EXPECT_EQ(strict.at(0).last_reply->code, 454);
    EXPECT_EQ(srv.count_commands("MAIL"), 1u + 1u) << "only the plaintext probe said MAIL";
}

TEST_F(SmtpProbeTls, EncryptNeverSendsMailWithoutTls) {
    FakeSmtpScript plain;  // offers no STARTTLS
    FakeSmtpServer first(plain, "127.0.0.11");
    ASSERT_TRUE(first.ok()) << first.error();
    FakeSmtpServer second(plain, "127.0.0.12", first.port());
    ASSERT_TRUE(second.ok()) << second.error();
    auto run = run_probe(options(first.port(), TlsMode::encrypt),
                         {{"mx1.example.org", "127.0.0.11"}, {"mx2.example.org", "127.0.0.12"}});
    first.stop();
    second.stop();
    ASSERT_EQ(run.result.attempts.size(), 2u) << "another MX host may offer TLS";
    for (const auto& a : run.result.attempts) {
        EXPECT_EQ(a.event, StageEvent::tls_unavailable);
        EXPECT_EQ(a.last_stage, SmtpStage::ehlo);
        EXPECT_EQ(describe(a), "STARTTLS not offered, and callout.tls = encrypt");
    }
    for (const FakeSmtpServer* s : {&first, &second}) {
        EXPECT_EQ(s->count_commands("MAIL"), 0u);
        EXPECT_EQ(s->count_commands("RCPT"), 0u);
        EXPECT_EQ(s->count_commands("QUIT"), 1u) << "a polite goodbye";
    }
}

TEST_F(SmtpProbeTls, EncryptUsesTlsAndNeverRetriesInPlaintext) {
    FakeSmtpServer good(tls_script());
    ASSERT_TRUE(good.ok()) << good.error();
    auto run = run_probe(options(good.port(), TlsMode::encrypt), at(good));
    good.stop();
    ASSERT_TRUE(run.at(0).tls);
    ASSERT_TRUE(run.at(0).rcpt);
    EXPECT_EQ(run.at(0).rcpt->code, 250);

    FakeSmtpServer broken(tls_script(FakeTls::Fault::garbage));
    ASSERT_TRUE(broken.ok()) << broken.error();
    auto failed = run_probe(options(broken.port(), TlsMode::encrypt), at(broken));
    broken.stop();
    ASSERT_EQ(failed.result.attempts.size(), 1u);
    EXPECT_TRUE(failed.at(0).tls_failed);
    EXPECT_EQ(broken.connections_accepted(), 1u);
    EXPECT_EQ(broken.count_commands("MAIL"), 0u);
}

TEST_F(SmtpProbeTls, NoneNeverSaysStartTls) {
    FakeSmtpServer srv(tls_script());
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto run = run_probe(options(srv.port(), TlsMode::none), at(srv));
    srv.stop();
    EXPECT_EQ(srv.count_commands("STARTTLS"), 0u);
    EXPECT_TRUE(run.at(0).starttls_offered);
    EXPECT_FALSE(run.at(0).tls);
    ASSERT_TRUE(run.at(0).rcpt);
    EXPECT_EQ(run.at(0).rcpt->code, 250);
}

TEST_F(SmtpProbeTls, StallAfterTheHandshakeTimesOutWaitingForEhlo) {
    FakeSmtpScript s = tls_script();
    s.tls->stall_after_handshake = true;
    FakeSmtpServer srv(s);
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto o = options(srv.port());
    o.command_timeout = 300ms;
    auto run = run_probe(o, at(srv));
    srv.stop();
    ASSERT_EQ(run.result.attempts.size(), 1u) << "TLS worked: nothing to retry in plaintext";
    EXPECT_TRUE(run.at(0).tls);
    EXPECT_EQ(run.at(0).last_stage, SmtpStage::ehlo);
    EXPECT_EQ(run.at(0).event, StageEvent::timeout);
}

TEST_F(SmtpProbeTls, DeadlineMidHandshakeEndsWithoutRetry) {
    FakeSmtpServer srv(tls_script(FakeTls::Fault::stall));
    ASSERT_TRUE(srv.ok()) << srv.error();
    auto o = options(srv.port());
    o.tls_timeout = 5s;
    o.probe_timeout = 1s;
    auto run = run_probe(o, at(srv));
    srv.stop();
    ASSERT_EQ(run.result.attempts.size(), 1u);
    EXPECT_EQ(run.at(0).last_stage, SmtpStage::tls_handshake);
    EXPECT_EQ(run.at(0).event, StageEvent::deadline);
    EXPECT_LT(run.wall, 2500ms);
    EXPECT_EQ(srv.connections_accepted(), 1u);
}

TEST_F(SmtpProbeTls, CancelMidHandshakeSuppressesTheCallbackAndClosesEverything) {
    FakeSmtpServer srv(tls_script(FakeTls::Fault::stall));
    ASSERT_TRUE(srv.ok()) << srv.error();
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    int calls = 0;
    auto probe = SmtpProbe::create(&loop, options(srv.port()));
    probe->start(at(srv), "alice@example.org", kRandom, [&](ProbeResult) { ++calls; });
    // Cancel once the ClientHello is out (STARTTLS seen by the server), from inside the loop.
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    struct Ctx {
        SmtpProbe* probe;
        FakeSmtpServer* srv;
        int ticks = 0;
    } ctx{probe.get(), &srv};
    t.data = &ctx;
    uv_timer_start(
        &t,
        [](uv_timer_t* timer) {
            auto* c = static_cast<Ctx*>(timer->data);
            if (c->srv->count_commands("STARTTLS") == 0 && ++c->ticks < 200) return;
            c->probe->cancel();
            uv_close(reinterpret_cast<uv_handle_t*>(timer), nullptr);
        },
        10, 10);
    probe.reset();  // the probe keeps itself alive until its handles are closed
    const auto t0 = Clock::now();
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_LT(Clock::now() - t0, 1500ms);
    EXPECT_EQ(calls, 0);
    EXPECT_EQ(uv_loop_close(&loop), 0);
    EXPECT_EQ(srv.count_commands("STARTTLS"), 1u);
    srv.stop();
}

TEST_F(SmtpProbeTls, ManyConcurrentTlsProbesShareOneContext) {
    FakeSmtpServer srv(tls_script());
    ASSERT_TRUE(srv.ok()) << srv.error();
    std::string error;
    auto o = options(srv.port());
    o.tls_context = TlsContext::create(error);
    ASSERT_TRUE(o.tls_context) << error;
    o.command_timeout = 10s;
    o.tls_timeout = 10s;
    o.probe_timeout = 30s;
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    constexpr int kProbes = 200;
    int valid = 0;
    int calls = 0;
    for (int i = 0; i < kProbes; ++i) {
        SmtpProbe::create(&loop, o)->start(at(srv), "alice@example.org", kRandom,
                                           [&](ProbeResult r) {
                                               ++calls;
                                               const auto& a = r.attempts.at(0);
                                               if (a.tls && a.rcpt && a.rcpt->code == 250) ++valid;
                                           });
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop), 0);
    srv.stop();
    EXPECT_EQ(calls, kProbes);
    EXPECT_EQ(valid, kProbes);
    EXPECT_EQ(srv.tls_handshakes(), static_cast<std::size_t>(kProbes));
}

}  // namespace
}  // namespace calloutd
