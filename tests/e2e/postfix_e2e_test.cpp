// End to end with a real Postfix as the MTA under test: swaks talks SMTP to a private Postfix
// whose restrictions and smtpd services come from contrib/postfix/*.snippet; that Postfix asks
// calloutd, which resolves senders at a test dnsmasq and probes a real Postfix and fake targets.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/callout_world.hpp"
#include "support/command.hpp"
#include "support/daemon_process.hpp"
#include "support/dnsmasq.hpp"
#include "support/fake_smtp.hpp"
#include "support/paths.hpp"
#include "support/postfix_target.hpp"

namespace calloutd::test {
namespace {

using namespace std::chrono_literals;

// Loopback addresses of this file only, so it can run beside the integration tests.
constexpr const char* kMtaIp = "127.0.0.60";         // the Postfix under test, dest.test
constexpr const char* kPostfixIp = "127.0.0.61";     // pf.test: a real Postfix, alice exists
constexpr const char* kCatchAllIp = "127.0.0.62";    // catchall.test: accepts every RCPT
constexpr const char* kGreylistIp = "127.0.0.63";    // greylist.test: 450 to every RCPT
constexpr const char* kCountedIp = "127.0.0.64";     // counted.test: alice only, RCPTs counted
constexpr const char* kClientIp = "127.0.0.69";      // swaks connects from here
constexpr const char* kMyNetworks = "127.0.0.1/32";  // ... which is not in mynetworks

// The policy address in contrib/postfix/main.cf.snippet, and the unix-socket form it documents.
constexpr const char* kContribPolicy = "inet:127.0.0.1:10023";
constexpr const char* kUnixPolicy = "unix:calloutd/calloutd.sock";

constexpr const char* kDeferIfPermit =
    "DEFER_IF_PERMIT 4.7.1 Sender address verification failed temporarily, try again later";

std::string read_text(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
}

// contrib/postfix/main.cf.snippet with the policy address of its one active
// check_policy_service line replaced by `policy`; comments stay as shipped.
std::string main_cf_snippet(const std::string& policy) {
    std::string text = read_text(source_dir() + "/contrib/postfix/main.cf.snippet");
    std::string out;
    int replaced = 0;
    for (std::string line : lines_of(text)) {
        auto pos = line.find(kContribPolicy);
        if (!line.starts_with("#") && pos != std::string::npos) {
            line.replace(pos, std::string(kContribPolicy).size(), policy);
            ++replaced;
        }
        out += line + "\n";
    }
    if (replaced != 1) {
        throw std::runtime_error("main.cf.snippet: expected one active " +
                                 std::string(kContribPolicy) + " line, found " +
                                 std::to_string(replaced));
    }
    return out;
}

// contrib/postfix/master.cf.snippet with its service names turned into listen addresses: smtp
// becomes the test port (@LISTEN@), submission `submission_listen`. Chroot stays as shipped.
std::string master_cf_snippet(const std::string& submission_listen) {
    std::string text = read_text(source_dir() + "/contrib/postfix/master.cf.snippet");
    std::string out;
    int services = 0;
    for (std::string line : lines_of(text)) {
        if (line.starts_with("smtp ")) {
            line.replace(0, 4, "@LISTEN@");
            ++services;
        } else if (line.starts_with("submission ")) {
            line.replace(0, 10, submission_listen);
            ++services;
        }
        out += line + "\n";
    }
    if (services != 2) throw std::runtime_error("master.cf.snippet: no smtp and submission");
    return out;
}

// What one swaks session saw.
struct Session {
    CommandResult run;
    // The server's replies to each RCPT TO, in order ("250 2.1.5 Ok").
    std::vector<std::string> rcpt_replies() const {
        std::vector<std::string> out;
        bool after_rcpt = false;
        for (const auto& line : lines_of(run.out)) {
            if (line.starts_with(" -> ")) after_rcpt = line.starts_with(" -> RCPT TO:");
            if (after_rcpt && (line.starts_with("<-  ") || line.starts_with("<** "))) {
                out.push_back(line.substr(4));
                after_rcpt = false;
            }
        }
        return out;
    }
    std::string rcpt_reply() const {
        auto r = rcpt_replies();
        return r.size() == 1 ? r.front() : "<" + std::to_string(r.size()) + " RCPT replies>";
    }
    bool queued() const {
        return run.out.find("<-  250 2.0.0 Ok: queued as ") != std::string::npos;
    }
};

std::ostream& operator<<(std::ostream& os, const Session& s) {
    return os << "swaks exit " << s.run.exit_code << (s.run.timed_out ? " (timed out)" : "") << "\n"
              << s.run.out << s.run.err;
}

DnsmasqZones e2e_zones() {
    DnsmasqZones z;
    z.local_domains = {"test"};
    z.mx = {
        {"pf.test", "mx.pf.test", 10},
        {"catchall.test", "mx.catchall.test", 10},
        {"greylist.test", "mx.greylist.test", 10},
        {"counted.test", "mx.counted.test", 10},
        {"nullmx.test", ".", 0},
    };
    z.hosts = {
        {"mx.pf.test", {kPostfixIp}},
        {"mx.catchall.test", {kCatchAllIp}},
        {"mx.greylist.test", {kGreylistIp}},
        {"mx.counted.test", {kCountedIp}},
    };
    return z;  // nx.test is NXDOMAIN
}

class PostfixE2e : public ::testing::Test {
  protected:
    void SetUp() override {
        if (geteuid() != 0) GTEST_SKIP() << "a private Postfix instance needs root";
        dnsmasq_ = std::make_unique<Dnsmasq>(e2e_zones());
        PostfixTargetOptions t;
        t.address = kPostfixIp;
        t.domain = "pf.test";
        t.hostname = "mx.pf.test";
        t.users = {"alice"};
        // callout.port is one port for every MX: the fakes share the real target's, and if
        // one of them cannot bind it, everything starts over on another port.
        FakeSmtpScript catch_all;
        catch_all.accept_all = true;
        FakeSmtpScript greylist;
        greylist.rcpt_default = "450 4.2.0 Greylisted, please try again in 5 minutes";
        FakeSmtpScript counted;
        counted.recipients["alice"] = "250 2.1.5 ok";
        for (int attempt = 0; attempt < 3 && fakes_.empty(); ++attempt) {
            target_ = std::make_unique<PostfixTarget>(t);
            for (auto [ip, script] :
                 {std::pair{kCatchAllIp, catch_all}, std::pair{kGreylistIp, greylist},
                  std::pair{kCountedIp, counted}}) {
                fakes_.push_back(std::make_unique<FakeSmtpServer>(script, ip, target_->port()));
                if (!fakes_.back()->ok()) {
                    std::cerr << "retrying: " << fakes_.back()->error() << "\n";
                    fakes_.clear();
                    break;
                }
            }
        }
        ASSERT_FALSE(fakes_.empty()) << "no port free on every target address";
    }

    void TearDown() override {
        if (HasFailure()) {
            if (mta_) std::cerr << "--- MTA under test: maillog ---\n" << mta_->maillog();
            if (calloutd_) std::cerr << "--- calloutd log ---\n" << calloutd_->log();
            if (target_) std::cerr << "--- pf.test target: maillog ---\n" << target_->maillog();
        }
        mta_.reset();  // stops the Postfix under test first: nothing asks calloutd any more
        stop_calloutd();
        calloutd_.reset();
        for (auto& f : fakes_) f->stop();
        fakes_.clear();
        target_.reset();
        dnsmasq_.reset();
    }

    // calloutd listening on `listen`, probing the targets, with `extra` TOML appended.
    void start_calloutd(const std::string& listen = "inet:127.0.0.1:0",
                        const std::string& extra = "") {
        CalloutConfig c;
        c.dns_server = dnsmasq_->server();
        c.smtp_port = target_->port();
        c.reply_timeout = "3s";  // far below the snippet's timeout=30s
        c.connect_timeout = "1s";
        c.command_timeout = "1s";
        c.probe_timeout = "2500ms";
        std::string config = callout_config(c);
        const std::string default_listen = "listen = [\"inet:127.0.0.1:0\"]";
        config.replace(config.find(default_listen), default_listen.size(),
                       "listen = [\"" + listen + "\"]");
        calloutd_ = std::make_unique<DaemonProcess>("e2e-calloutd", config + extra);
        ASSERT_TRUE(calloutd_->started()) << calloutd_->log();
    }

    std::string calloutd_inet() const {
        return "inet:127.0.0.1:" + std::to_string(calloutd_->tcp_port());
    }

    // The Postfix under test on kMtaIp, asking calloutd at `policy` as main.cf.snippet says.
    void start_mta(const std::string& policy, const std::string& extra_main_cf = "") {
        submission_port_ = unused_port(kMtaIp);
        PostfixTargetOptions o;
        o.address = kMtaIp;
        o.domain = "dest.test";
        o.hostname = "mx.dest.test";
        o.users = {"postmaster", "rcpt1", "rcpt2", "rcpt3", "rcpt4", "rcpt5"};
        o.mynetworks = kMyNetworks;
        o.extra_main_cf = {"# --- contrib/postfix/main.cf.snippet ---", main_cf_snippet(policy),
                           extra_main_cf};
        o.smtpd_services =
            master_cf_snippet(std::string(kMtaIp) + ":" + std::to_string(submission_port_));
        mta_ = std::make_unique<PostfixTarget>(o);
    }

    void stop_calloutd() {
        if (calloutd_ && calloutd_->running()) {
            calloutd_->signal(SIGTERM);
            if (calloutd_->wait_exit(5s) < 0) ADD_FAILURE() << "calloutd did not exit on SIGTERM";
        }
    }

    // One SMTP session from kClientIp; `quit_after` "RCPT", or "" for a whole message.
    Session send(const std::string& from, const std::vector<std::string>& to,
                 const std::string& quit_after = "RCPT", uint16_t port = 0,
                 const std::vector<std::string>& extra_args = {},
                 const std::string& client_ip = kClientIp) const {
        std::string rcpts;
        for (const auto& r : to) rcpts += (rcpts.empty() ? "" : ",") + r;
        std::vector<std::string> argv = {
            "/usr/bin/swaks",
            "--server",
            std::string(kMtaIp) + ":" + std::to_string(port ? port : mta_->port()),
            "--local-interface",
            client_ip,
            "--helo",
            "client.example.test",
            "--from",
            from,
            "--to",
            rcpts,
            "--timeout",
            "20"};
        argv.insert(argv.end(), extra_args.begin(), extra_args.end());
        if (!quit_after.empty()) {
            argv.push_back("--quit-after");
            argv.push_back(quit_after);
        }
        return Session{run_command(argv, 30s)};
    }

    // The decision lines calloutd logged for `sender`, once there are `at_least` of them (log
    // lines are written asynchronously, shortly after the reply) or 5 s have passed.
    std::vector<std::string> decisions(const std::string& sender, size_t at_least = 0) const {
        std::vector<std::string> out;
        for (auto deadline = std::chrono::steady_clock::now() + 5s;;
             std::this_thread::sleep_for(10ms)) {
            out.clear();
            for (const auto& line : lines_of(calloutd_->log())) {
                if (line.find(" decision ") != std::string::npos &&
                    line.find(" sender=" + sender + " ") != std::string::npos) {
                    out.push_back(line);
                }
            }
            if (out.size() >= at_least || std::chrono::steady_clock::now() >= deadline) break;
        }
        return out;
    }
    std::string decision(const std::string& sender) const {
        auto d = decisions(sender, 1);
        return d.empty() ? "<no decision>" : d.back();
    }

    FakeSmtpServer& fake(const char* ip) {
        for (auto& f : fakes_) {
            if (f->ip() == ip) return *f;
        }
        throw std::logic_error("no fake at " + std::string(ip));
    }

    std::unique_ptr<Dnsmasq> dnsmasq_;
    std::unique_ptr<PostfixTarget> target_;
    std::vector<std::unique_ptr<FakeSmtpServer>> fakes_;
    std::unique_ptr<DaemonProcess> calloutd_;
    std::unique_ptr<PostfixTarget> mta_;
    uint16_t submission_port_ = 0;
};

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

TEST_F(PostfixE2e, ValidSenderIsAcceptedAndTheMessageQueued) {
    start_calloutd();
    start_mta(calloutd_inet());
    Session s = send("alice@pf.test", {"rcpt1@dest.test"}, "");
    EXPECT_TRUE(s.rcpt_reply().starts_with("250 ")) << s;
    EXPECT_TRUE(s.queued()) << s;
    EXPECT_TRUE(contains(decision("alice@pf.test"), " class=valid ")) << calloutd_->log();
    EXPECT_TRUE(contains(decision("alice@pf.test"), " client=" + std::string(kClientIp) + " "));
}

TEST_F(PostfixE2e, UnknownUserSenderIsRejectedWith517) {
    start_calloutd();
    start_mta(calloutd_inet());
    Session s = send("nobody@pf.test", {"rcpt1@dest.test"});
    EXPECT_TRUE(s.rcpt_reply().starts_with("5")) << s;
    EXPECT_TRUE(contains(s.rcpt_reply(), " 5.1.7 ")) << s;
    EXPECT_TRUE(contains(decision("nobody@pf.test"), " class=invalid ")) << calloutd_->log();
}

TEST_F(PostfixE2e, AcceptAllDomainIsAccepted) {
    start_calloutd();
    start_mta(calloutd_inet());
    Session s = send("anyone@catchall.test", {"rcpt1@dest.test"}, "");
    EXPECT_TRUE(s.rcpt_reply().starts_with("250 ")) << s;
    EXPECT_TRUE(s.queued()) << s;
    EXPECT_TRUE(contains(decision("anyone@catchall.test"), " class=accept_all "))
        << calloutd_->log();
}

TEST_F(PostfixE2e, GreylistingTargetIsAcceptedWithTheDefaultTempfailAction) {
    start_calloutd();
    start_mta(calloutd_inet());
    Session s = send("someone@greylist.test", {"rcpt1@dest.test"});
    EXPECT_TRUE(s.rcpt_reply().starts_with("250 ")) << s;
    EXPECT_TRUE(contains(decision("someone@greylist.test"), " class=tempfail "))
        << calloutd_->log();
}

TEST_F(PostfixE2e, GreylistingTargetIsDeferredWhenTempfailIsDeferIfPermit) {
    start_calloutd("inet:127.0.0.1:0",
                   std::string("[actions]\ntempfail = \"") + kDeferIfPermit + "\"\n");
    start_mta(calloutd_inet());
    Session s = send("someone@greylist.test", {"rcpt1@dest.test"});
    EXPECT_TRUE(s.rcpt_reply().starts_with("450 ")) << s;
    EXPECT_TRUE(contains(s.rcpt_reply(), " 4.7.1 ")) << s;
    EXPECT_TRUE(contains(decision("someone@greylist.test"), " class=tempfail "))
        << calloutd_->log();
}

TEST_F(PostfixE2e, NoMailDomainsAreRejectedWith518) {
    start_calloutd();
    start_mta(calloutd_inet());
    for (const char* sender : {"someone@nullmx.test", "someone@nx.test"}) {
        Session s = send(sender, {"rcpt1@dest.test"});
        EXPECT_TRUE(s.rcpt_reply().starts_with("5")) << s;
        EXPECT_TRUE(contains(s.rcpt_reply(), " 5.1.8 ")) << s;
        EXPECT_TRUE(contains(decision(sender), " class=no_mail_domain ")) << calloutd_->log();
    }
}

TEST_F(PostfixE2e, BounceIsAcceptedAndNeverProbed) {
    start_calloutd();
    start_mta(calloutd_inet());
    std::string dns_before = dnsmasq_->log();
    std::string target_before = target_->maillog();
    Session s = send("<>", {"rcpt1@dest.test"}, "");
    EXPECT_TRUE(s.rcpt_reply().starts_with("250 ")) << s;
    EXPECT_TRUE(s.queued()) << s;
    // calloutd was asked (Postfix sends every RCPT) and skipped it without DNS or SMTP.
    EXPECT_TRUE(contains(decision("\"\""), " class=skipped ")) << calloutd_->log();
    EXPECT_EQ(dnsmasq_->log(), dns_before);
    EXPECT_EQ(target_->maillog(), target_before);
    for (auto& f : fakes_) EXPECT_EQ(f->connections_accepted(), 0u) << f->ip();
}

TEST_F(PostfixE2e, FiveRecipientsAreOneProbeAndOneVerdict) {
    start_calloutd();
    start_mta(calloutd_inet());
    std::vector<std::string> to = {"rcpt1@dest.test", "rcpt2@dest.test", "rcpt3@dest.test",
                                   "rcpt4@dest.test", "rcpt5@dest.test"};
    Session good = send("alice@counted.test", to, "");
    EXPECT_EQ(good.rcpt_replies().size(), 5u) << good;
    for (const auto& r : good.rcpt_replies()) EXPECT_TRUE(r.starts_with("250 ")) << good;
    EXPECT_TRUE(good.queued()) << good;
    EXPECT_EQ(fake(kCountedIp).count_commands("RCPT TO:<alice@counted.test>"), 1u);
    auto d = decisions("alice@counted.test", 5);
    EXPECT_EQ(d.size(), 5u) << calloutd_->log();
    EXPECT_EQ(std::count_if(d.begin(), d.end(),
                            [](const std::string& l) {
                                return contains(l, " source=probe ") && !contains(l, "repeat=yes");
                            }),
              1)
        << calloutd_->log();

    // A rejection is repeated for every recipient of the message, from the one probe.
    Session bad = send("bob@counted.test", to);
    EXPECT_EQ(bad.rcpt_replies().size(), 5u) << bad;
    for (const auto& r : bad.rcpt_replies()) EXPECT_TRUE(contains(r, " 5.1.7 ")) << bad;
    EXPECT_EQ(fake(kCountedIp).count_commands("RCPT TO:<bob@counted.test>"), 1u);
    EXPECT_EQ(fake(kCountedIp).connections_accepted(), 2u);
}

TEST_F(PostfixE2e, MailStillFlowsWhenCalloutdIsStopped) {
    start_calloutd();
    start_mta(calloutd_inet());
    stop_calloutd();
    Session s = send("nobody@pf.test", {"rcpt1@dest.test"}, "");
    // default_action=DUNNO: as if the check were not there.
    EXPECT_TRUE(s.rcpt_reply().starts_with("250 ")) << s;
    EXPECT_TRUE(s.queued()) << s;
    EXPECT_TRUE(contains(mta_->maillog(), "problem talking to server")) << mta_->maillog();
}

// A chrooted smtpd (as master.cf.snippet ships it) reaches calloutd through a socket below the
// queue directory, named relative to it as main.cf.snippet documents.
TEST_F(PostfixE2e, UnixSocketInsideTheQueueDirectory) {
    start_mta(kUnixPolicy);
    std::string socket_dir = mta_->dir() + "/spool/calloutd";
    std::filesystem::create_directories(socket_dir);
    start_calloutd("unix:" + socket_dir + "/calloutd.sock");
    Session good = send("alice@pf.test", {"rcpt1@dest.test"});
    EXPECT_TRUE(good.rcpt_reply().starts_with("250 ")) << good;
    EXPECT_TRUE(contains(decision("alice@pf.test"), " class=valid ")) << calloutd_->log();
    Session bad = send("nobody@pf.test", {"rcpt1@dest.test"});
    EXPECT_TRUE(contains(bad.rcpt_reply(), " 5.1.7 ")) << bad;
}

// master.cf.snippet's submission service overrides the restrictions: calloutd is not asked.
TEST_F(PostfixE2e, SubmissionServiceDoesNotAskCalloutd) {
    start_calloutd();
    start_mta(calloutd_inet());
    Session s = send("nobody@pf.test", {"rcpt1@dest.test"}, "RCPT", submission_port_);
    EXPECT_TRUE(s.rcpt_reply().starts_with("554 ")) << s;  // not authenticated: "reject"
    EXPECT_TRUE(decisions("nobody@pf.test").empty()) << calloutd_->log();
    EXPECT_TRUE(contains(mta_->maillog(), "postfix/submission/smtpd")) << mta_->maillog();
}

// README's "try it" step: on the Postfix host itself the client is in mynetworks and never
// verified; XCLIENT lets a session pose as a stranger.
TEST_F(PostfixE2e, ReadmeTryItStepWithXclient) {
    start_calloutd();
    start_mta(calloutd_inet(), "smtpd_authorized_xclient_hosts = 127.0.0.1");
    Session own = send("nobody@pf.test", {"rcpt1@dest.test"}, "RCPT", 0, {}, "127.0.0.1");
    EXPECT_TRUE(own.rcpt_reply().starts_with("250 ")) << own;  // permit_mynetworks
    EXPECT_TRUE(decisions("nobody@pf.test").empty()) << calloutd_->log();
    Session stranger = send("nobody@pf.test", {"rcpt1@dest.test"}, "RCPT", 0,
                            {"--xclient-addr", "192.0.2.1"}, "127.0.0.1");
    EXPECT_TRUE(contains(stranger.rcpt_reply(), " 5.1.7 ")) << stranger;
    EXPECT_TRUE(contains(decision("nobody@pf.test"), " client=192.0.2.1 ")) << calloutd_->log();
}

// README's Deploying/Postfix recipe is a copy: every active line of the tested snippets is in it.
TEST(PostfixRecipe, ReadmeCopiesTheTestedSnippets) {
    std::string readme = read_text(source_dir() + "/README.md");
    auto section = readme.find("### Postfix");
    ASSERT_NE(section, std::string::npos);
    for (const char* file : {"main.cf.snippet", "master.cf.snippet"}) {
        for (const auto& line : lines_of(read_text(source_dir() + "/contrib/postfix/" + file))) {
            if (line.empty() || line.starts_with("#")) continue;
            EXPECT_NE(readme.find("\n" + line + "\n", section), std::string::npos)
                << file << " line missing from README.md: " << line;
        }
    }
}

}  // namespace
}  // namespace calloutd::test
