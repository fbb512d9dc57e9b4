// A real Exim asking calloutd through contrib/exim/calloutd.acl (included, not copied): Exim in
// host-checking mode (-bh) -> ${readsocket} -> calloutd -> dnsmasq test zones -> a real Postfix or
// fake SMTP targets on loopback aliases, asserting the replies Exim itself gives at RCPT.
// Over 500 lines as one concept: one Exim instance and the recipes' scenarios against it.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/callout_world.hpp"
#include "support/daemon_process.hpp"
#include "support/dnsmasq.hpp"
#include "support/exim.hpp"
#include "support/fake_smtp.hpp"
#include "support/paths.hpp"
#include "support/postfix_target.hpp"

namespace calloutd::test {
namespace {

using namespace std::chrono_literals;

// Loopback aliases of this file's targets, apart from the other suites' (which may run at once).
constexpr const char* kPostfixIp = "127.0.0.91";   // pf.test: real Postfix, only alice exists
constexpr const char* kCatchAllIp = "127.0.0.92";  // catchall.test: accepts every RCPT
constexpr const char* kGreylistIp = "127.0.0.93";  // greylist.test: 450 to every RCPT
constexpr const char* kTarpitIp = "127.0.0.94";    // tarpit.test: answers RCPT too late
constexpr const char* kClientIp = "192.0.2.10";    // the SMTP client Exim pretends to talk to
constexpr const char* kRecipient = "postmaster@local.test";

DnsmasqZones exim_test_zones() {
    DnsmasqZones z;
    z.local_domains = {"test"};
    z.mx = {
        {"pf.test", "mx.pf.test", 10},
        {"catchall.test", "mx.catchall.test", 10},
        {"greylist.test", "mx.greylist.test", 10},
        {"tarpit.test", "mx.tarpit.test", 10},
        {"nullmx.test", ".", 0},
    };
    z.hosts = {
        {"mx.pf.test", {kPostfixIp}},
        {"mx.catchall.test", {kCatchAllIp}},
        {"mx.greylist.test", {kGreylistIp}},
        {"mx.tarpit.test", {kTarpitIp}},
    };
    return z;
}

// The site configuration an admin would write: contrib/exim's ACL and its example acl_smtp_rcpt,
// included from the source tree (never copied); -D sets the ACL's macros. An authenticator that
// accepts any password stands in for the admin's own.
std::string exim_config(const std::string& dir) {
    std::string contrib = source_dir() + "/contrib/exim/";
    return "primary_hostname = mx.local.test\n"
           "domainlist local_domains = local.test\n"
           "domainlist relay_to_domains =\n"
           "spool_directory = " +
           dir + "/spool\nlog_file_path = " + dir +
           "/log/%slog\n"
           "keep_environment =\n"
           "acl_smtp_rcpt = acl_check_rcpt\n"
           "\n"
           "begin acl\n"
           ".include " +
           contrib + "calloutd.acl\n.include " + contrib +
           "acl_check_rcpt.example\n"
           "\n"
           "begin authenticators\n"
           "plain:\n"
           "  driver = plaintext\n"
           "  public_name = PLAIN\n"
           "  server_prompts = :\n"
           "  server_condition = yes\n"
           "  server_set_id = $auth2\n";
}

bool starts_with(const std::string& s, const std::string& prefix) {
    return s.rfind(prefix, 0) == 0;
}

// `n` recipients in our domain: postmaster, user1, user2 ...
std::vector<std::string> local_recipients(int n) {
    std::vector<std::string> r;
    for (int i = 0; i < n; ++i) {
        r.push_back(i == 0 ? kRecipient : "user" + std::to_string(i) + "@local.test");
    }
    return r;
}

// What Exim said in one session: the reply to MAIL and to each RCPT.
struct Session {
    std::string auth;
    std::string mail;
    std::vector<std::string> rcpt;
    std::string debug;  // Exim's -bh debug output, for failure messages
};

std::ostream& operator<<(std::ostream& os, const Session& s) {
    if (!s.auth.empty()) os << "AUTH: " << s.auth << "\n";
    os << "MAIL: " << s.mail << "\n";
    for (const auto& r : s.rcpt) os << "RCPT: " << r << "\n";
    return os << "--- exim -bh stderr ---\n" << s.debug;
}

// A policy server that answers every request with a fixed reply, or never ("" = stay silent),
// to show how the ACL maps each kind of action. Records every request it got.
class FakePolicyServer {
  public:
    FakePolicyServer() {
        fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        if (bind(fd_, reinterpret_cast<sockaddr*>(&a), len) != 0 || listen(fd_, 16) != 0 ||
            getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
            return;
        }
        port_ = ntohs(a.sin_port);
        thread_ = std::thread([this] { run(); });
    }
    ~FakePolicyServer() {
        shutdown(fd_, SHUT_RDWR);  // wakes accept()
        if (thread_.joinable()) thread_.join();
        close(fd_);
        for (int c : silent_) close(c);
    }
    uint16_t port() const { return port_; }
    void set_reply(const std::string& reply) {
        std::lock_guard lock(mu_);
        reply_ = reply;
    }
    std::vector<std::string> requests() const {
        std::lock_guard lock(mu_);
        return requests_;
    }

  private:
    void run() {
        for (;;) {
            int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (c < 0) return;
            std::string request;
            char buf[4096];
            while (request.find("\n\n") == std::string::npos) {
                ssize_t n = read(c, buf, sizeof buf);
                if (n <= 0) break;
                request.append(buf, static_cast<size_t>(n));
            }
            std::lock_guard lock(mu_);
            requests_.push_back(request);
            if (reply_.empty()) {
                silent_.push_back(c);  // readsocket waits for its timeout
                continue;
            }
            std::string wire = reply_ + "\n\n";
            [[maybe_unused]] ssize_t n = write(c, wire.data(), wire.size());
            close(c);
        }
    }

    int fd_ = -1;
    uint16_t port_ = 0;
    std::thread thread_;
    mutable std::mutex mu_;
    std::string reply_ = "action=DUNNO";
    std::vector<std::string> requests_;
    std::vector<int> silent_;
};

// The value of attribute `name` in a policy request ("" if absent).
std::string attribute(const std::string& request, const std::string& name) {
    std::istringstream lines(request);
    for (std::string line; std::getline(lines, line);) {
        if (starts_with(line, name + "=")) return line.substr(name.size() + 1);
    }
    return {};
}

class EximE2E : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        if (geteuid() != 0) return;
        exim_ = exim_binary(unpack_error_);
        dnsmasq_ = std::make_unique<Dnsmasq>(exim_test_zones());
    }
    static void TearDownTestSuite() { dnsmasq_.reset(); }

    void SetUp() override {
        if (geteuid() != 0) GTEST_SKIP() << "exim -C and a private Postfix need root";
        ASSERT_FALSE(exim_.empty()) << unpack_error_;
        dir_ = make_temp_dir("exim");
        // Exim gives up root for its user (Debian-exim) before it looks at spool and log.
        namespace fs = std::filesystem;
        fs::permissions(dir_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                  fs::perms::others_read | fs::perms::others_exec);
        for (const char* sub : {"/spool", "/log"}) {
            fs::create_directory(dir_ + sub);
            fs::permissions(dir_ + sub, fs::perms::all);
        }
        std::ofstream(dir_ + "/exim.conf") << exim_config(dir_);
    }
    void TearDown() override {
        if (HasFailure() && daemon_) std::cerr << "--- calloutd log ---\n" << daemon_->log();
        stop_daemon();
        daemon_.reset();
        if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_);
    }

    void start_daemon(uint16_t smtp_port, const std::string& reply_timeout = "3s") {
        CalloutConfig c;
        c.dns_server = dnsmasq_->server();  // never the system resolver
        c.smtp_port = smtp_port;
        c.reply_timeout = reply_timeout;
        daemon_ = std::make_unique<DaemonProcess>("exim-calloutd", callout_config(c));
        ASSERT_TRUE(daemon_->started()) << daemon_->log();
        port_ = daemon_->tcp_port();
        ASSERT_NE(port_, 0) << daemon_->log();
    }
    void stop_daemon() {
        if (!daemon_ || !daemon_->running()) return;
        daemon_->signal(SIGTERM);
        if (daemon_->wait_exit(5s) < 0) ADD_FAILURE() << "calloutd did not exit on SIGTERM";
    }

    // One SMTP session with the daemon under test: EHLO, MAIL FROM:<sender>, one RCPT per
    // recipient, QUIT.
    Session session(const std::string& sender, int recipients = 1) {
        return session_at("inet:127.0.0.1:" + std::to_string(port_), "5s", sender,
                          local_recipients(recipients));
    }
    // The same against any policy socket (CALLOUTD_SOCKET), with readsocket's timeout.
    Session session_at(const std::string& socket, const std::string& timeout,
                       const std::string& sender, const std::vector<std::string>& recipients,
                       const std::string& auth = "") {
        Session s;
        std::string err = dir_ + "/exim-" + std::to_string(++sessions_) + ".stderr";
        EximSession exim(exim_, dir_ + "/exim.conf",
                         {"CALLOUTD_SOCKET=" + socket, "CALLOUTD_TIMEOUT=" + timeout}, kClientIp,
                         err);
        if (!exim.started()) return s;
        std::string banner = exim.banner();
        if (reply_code(banner) == "220" &&
            reply_code(exim.command("EHLO client.example")) == "250") {
            if (!auth.empty()) s.auth = exim.command("AUTH PLAIN " + auth);
            s.mail = exim.command("MAIL FROM:<" + sender + ">");
            for (const auto& rcpt : recipients) {
                s.rcpt.push_back(exim.command("RCPT TO:<" + rcpt + ">"));
            }
        }
        exim.quit();
        s.debug = exim.stderr_text();
        return s;
    }

    // calloutd's decision lines for `sender`.
    // The decision lines for `sender`, waiting up to 5 s for the first: the daemon writes its
    // log after the reply, so Exim may have its answer before the line reaches the file.
    // The decision lines for `sender`, once there are at least `at_least` of them (or after 5 s):
    // the reply leaves before the log lines of its loop turn are written.
    std::vector<std::string> decisions(const std::string& sender, size_t at_least = 1) const {
        std::vector<std::string> lines;
        if (!daemon_) return lines;
        auto deadline = std::chrono::steady_clock::now() + 5s;
        while (true) {
            lines.clear();
            std::istringstream log(daemon_->log());
            for (std::string line; std::getline(log, line);) {
                if (line.find(" decision ") != std::string::npos &&
                    line.find(" sender=" + sender + " ") != std::string::npos) {
                    lines.push_back(line);
                }
            }
            if (lines.size() >= at_least || std::chrono::steady_clock::now() > deadline)
                return lines;
            std::this_thread::sleep_for(20ms);
        }
    }

    static inline std::string exim_;
    static inline std::string unpack_error_;
    static inline std::unique_ptr<Dnsmasq> dnsmasq_;
    std::string dir_;
    std::unique_ptr<DaemonProcess> daemon_;
    uint16_t port_ = 0;
    int sessions_ = 0;
};

// Every line of a (possibly wrapped) reply carries `code` and `enhanced`: "550-5.1.7 ...".
bool is_reply(const std::string& reply, const std::string& code, const std::string& enhanced) {
    if (reply.empty()) return false;
    std::istringstream lines(reply);
    for (std::string line; std::getline(lines, line);) {
        if (!starts_with(line, code + " " + enhanced + " ") &&
            !starts_with(line, code + "-" + enhanced + " ")) {
            return false;
        }
    }
    return true;
}

TEST_F(EximE2E, RealPostfixTargetValidSenderAcceptedUnknownUserRejected517) {
    PostfixTargetOptions o;
    o.address = kPostfixIp;
    o.domain = "pf.test";
    o.hostname = "mx.pf.test";
    o.users = {"alice"};
    PostfixTarget postfix(o);
    start_daemon(postfix.port());

    Session valid = session("alice@pf.test");
    EXPECT_EQ(reply_code(valid.mail), "250") << valid;
    ASSERT_EQ(valid.rcpt.size(), 1u) << valid;
    EXPECT_EQ(reply_code(valid.rcpt[0]), "250") << valid;
    ASSERT_EQ(decisions("alice@pf.test").size(), 1u) << "calloutd was not asked";
    EXPECT_NE(decisions("alice@pf.test")[0].find(" class=valid "), std::string::npos);

    Session invalid = session("nobody@pf.test");
    ASSERT_EQ(invalid.rcpt.size(), 1u) << invalid;
    EXPECT_TRUE(is_reply(invalid.rcpt[0], "550", "5.1.7")) << invalid;
    // calloutd's text reaches the client; it never names the target.
    EXPECT_EQ(invalid.rcpt[0].find(kPostfixIp), std::string::npos) << invalid;
    if (HasFailure()) std::cerr << "--- postfix maillog ---\n" << postfix.maillog();
}

TEST_F(EximE2E, AcceptAllDomainIsAccepted) {
    FakeSmtpScript s;
    s.accept_all = true;
    FakeSmtpServer target(s, kCatchAllIp);
    ASSERT_TRUE(target.ok()) << target.error();
    start_daemon(target.port());

    Session a = session("anyone@catchall.test");
    ASSERT_EQ(a.rcpt.size(), 1u) << a;
    EXPECT_EQ(reply_code(a.rcpt[0]), "250") << a;
    auto lines = decisions("anyone@catchall.test");
    ASSERT_EQ(lines.size(), 1u) << a;
    EXPECT_NE(lines[0].find(" class=accept_all "), std::string::npos) << lines[0];
}

TEST_F(EximE2E, GreylistingTargetIsAccepted) {
    FakeSmtpScript s;
    s.rcpt_default = "450 4.7.1 Greylisted, please try again later";
    FakeSmtpServer target(s, kGreylistIp);
    ASSERT_TRUE(target.ok()) << target.error();
    start_daemon(target.port());

    Session a = session("someone@greylist.test");
    ASSERT_EQ(a.rcpt.size(), 1u) << a;
    EXPECT_EQ(reply_code(a.rcpt[0]), "250") << a;
    auto lines = decisions("someone@greylist.test");
    ASSERT_EQ(lines.size(), 1u) << a;
    EXPECT_NE(lines[0].find(" class=tempfail "), std::string::npos) << lines[0];
    EXPECT_GE(target.count_commands("RCPT TO:<"), 1u) << "the target was never probed";
}

TEST_F(EximE2E, NoMailDomainIsRejected518) {
    start_daemon(unused_port());

    for (const char* sender : {"user@nullmx.test", "user@nx.test"}) {
        Session a = session(sender);
        ASSERT_EQ(a.rcpt.size(), 1u) << a;
        EXPECT_TRUE(is_reply(a.rcpt[0], "550", "5.1.8")) << sender << "\n" << a;
    }
}

TEST_F(EximE2E, BounceIsAcceptedAndNeverProbed) {
    FakeSmtpScript s;
    s.accept_all = true;
    FakeSmtpServer target(s, kCatchAllIp);
    ASSERT_TRUE(target.ok()) << target.error();
    start_daemon(target.port());

    Session a = session("");
    EXPECT_EQ(reply_code(a.mail), "250") << a;
    ASSERT_EQ(a.rcpt.size(), 1u) << a;
    EXPECT_EQ(reply_code(a.rcpt[0]), "250") << a;
    // The ACL does not even ask: calloutd logs no decision at all.
    EXPECT_EQ(daemon_->log().find(" decision "), std::string::npos) << daemon_->log();
    EXPECT_EQ(target.connections_accepted(), 0u);
}

TEST_F(EximE2E, FiveRecipientsOneProbeOneVerdict) {
    FakeSmtpScript s;
    s.recipients["alice"] = "250 2.1.5 ok";  // everyone else: 550 5.1.1
    FakeSmtpServer target(s, kCatchAllIp);
    ASSERT_TRUE(target.ok()) << target.error();
    start_daemon(target.port());

    Session a = session("nobody@catchall.test", 5);
    ASSERT_EQ(a.rcpt.size(), 5u) << a;
    for (const auto& r : a.rcpt) EXPECT_TRUE(is_reply(r, "550", "5.1.7")) << a;
    EXPECT_EQ(target.count_commands("RCPT TO:<nobody@"), 1u);
}

TEST_F(EximE2E, ProbeOutlivingReplyTimeoutIsDeferredThenTheRetryIsAnswered) {
    FakeSmtpScript s;
    s.accept_all = true;
    s.verbs["RCPT"] = FakeReply::slow("250 2.1.5 ok", 800ms);  // < command_timeout (1s)
    FakeSmtpServer target(s, kTarpitIp);
    ASSERT_TRUE(target.ok()) << target.error();
    start_daemon(target.port(), "300ms");

    Session a = session("slow@tarpit.test");
    ASSERT_EQ(a.rcpt.size(), 1u) << a;
    EXPECT_TRUE(is_reply(a.rcpt[0], "450", "4.1.7")) << a;

    // The probe finishes in the background; the client's retry gets the cached verdict.
    ASSERT_TRUE(daemon_->wait_for_log("probe sender=slow@tarpit.test", 5s)) << daemon_->log();
    Session retry = session("slow@tarpit.test");
    ASSERT_EQ(retry.rcpt.size(), 1u) << retry;
    EXPECT_EQ(reply_code(retry.rcpt[0]), "250") << retry;
    auto lines = decisions("slow@tarpit.test", 2);
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_NE(lines[1].find(" class=accept_all "), std::string::npos) << lines[1];
    EXPECT_NE(lines[1].find(" source=cache "), std::string::npos) << lines[1];
    EXPECT_EQ(target.connections_accepted(), 1u);
}

TEST_F(EximE2E, CalloutdStoppedMailFlows) {
    FakeSmtpScript s;
    s.recipients["alice"] = "250 2.1.5 ok";  // nobody@ would be rejected if calloutd were asked
    FakeSmtpServer target(s, kCatchAllIp);
    ASSERT_TRUE(target.ok()) << target.error();
    start_daemon(target.port());
    stop_daemon();
    ASSERT_FALSE(daemon_->running());

    auto t0 = std::chrono::steady_clock::now();
    Session a = session("nobody@catchall.test");
    ASSERT_EQ(a.rcpt.size(), 1u) << a;
    EXPECT_EQ(reply_code(a.rcpt[0]), "250") << a;  // readsocket's fail string: DUNNO
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s) << "a refused connection took long";
    EXPECT_EQ(target.connections_accepted(), 0u);
}

// The ACL's mapping of every kind of action to Exim's answer, against a scripted policy server.
TEST_F(EximE2E, ActionsMapToDenyDeferOrContinue) {
    FakePolicyServer policy;
    ASSERT_NE(policy.port(), 0);
    struct Case {
        std::string reply;  // what the policy server answers ("" = nothing, until the timeout)
        std::string code;
        std::string text;  // the reply's first line after the code and separator
    };
    const std::vector<Case> cases = {
        {"action=REJECT 5.1.7 Sender address rejected: gone", "550",
         "5.1.7 Sender address rejected: gone"},
        {"action=reject no such sender", "550", "no such sender"},
        {"action=REJECT", "550", "Administrative prohibition"},
        {"action=554 5.7.1 Go away", "554", "5.7.1 Go away"},
        {"action=DEFER_IF_PERMIT 4.1.7 Sender address verification in progress", "450",
         "4.1.7 Sender address verification in progress"},
        {"action=DEFER 4.3.0 try later", "450", "4.3.0 try later"},
        {"action=defer try later", "450", "try later"},
        {"action=DEFER", "451", "Temporary local problem - please try later"},
        {"action=451 4.3.0 Local trouble", "451", "4.3.0 Local trouble"},
        {"action=DEFER_IF_REJECT 4.7.1 only if rejected", "250", "Accepted"},
        {"action=DUNNO", "250", "Accepted"},
        {"action=OK", "250", "Accepted"},
        {"action=PREPEND X-Checked: yes", "250", "Accepted"},
        {"garbage", "250", "Accepted"},
        {"", "250", "Accepted"},  // no answer within CALLOUTD_TIMEOUT: fail open
    };
    std::string socket = "inet:127.0.0.1:" + std::to_string(policy.port());
    for (const auto& c : cases) {
        policy.set_reply(c.reply);
        Session a = session_at(socket, "1s", "someone@example.test", local_recipients(1));
        ASSERT_EQ(a.rcpt.size(), 1u) << c.reply << "\n" << a;
        EXPECT_EQ(a.rcpt[0].substr(0, 3), c.code) << c.reply << "\n" << a;
        EXPECT_EQ(a.rcpt[0].substr(4, a.rcpt[0].find('\n') - 4), c.text) << c.reply << "\n" << a;
    }
}

// What Exim tells calloutd: the attributes of the Postfix policy protocol, one instance per
// message, and nothing for a bounce.
TEST_F(EximE2E, RequestCarriesPolicyAttributesAndOneInstancePerMessage) {
    FakePolicyServer policy;
    ASSERT_NE(policy.port(), 0);
    std::string socket = "inet:127.0.0.1:" + std::to_string(policy.port());
    Session first = session_at(socket, "2s", "alice@example.test", local_recipients(2));
    Session second = session_at(socket, "2s", "alice@example.test", local_recipients(1));
    Session bounce = session_at(socket, "2s", "", local_recipients(1));
    auto requests = policy.requests();
    ASSERT_EQ(requests.size(), 3u) << first << second << bounce;
    const std::string& r = requests[0];
    EXPECT_EQ(attribute(r, "request"), "smtpd_access_policy") << r;
    EXPECT_EQ(attribute(r, "protocol_state"), "RCPT") << r;
    EXPECT_EQ(attribute(r, "protocol_name"), "ESMTP") << r;
    EXPECT_EQ(attribute(r, "sender"), "alice@example.test") << r;
    EXPECT_EQ(attribute(r, "recipient"), kRecipient) << r;
    EXPECT_EQ(attribute(r, "client_address"), kClientIp) << r;
    EXPECT_EQ(attribute(r, "client_name"), "unknown") << r;
    EXPECT_EQ(attribute(r, "helo_name"), "client.example") << r;
    EXPECT_EQ(attribute(r, "sasl_username"), "") << r;
    EXPECT_TRUE(r.ends_with("\n\n")) << r;
    EXPECT_EQ(attribute(requests[1], "recipient"), "user1@local.test") << requests[1];
    // Both RCPTs of the first message share an instance; the next message has its own.
    EXPECT_FALSE(attribute(r, "instance").empty()) << r;
    EXPECT_EQ(attribute(r, "instance"), attribute(requests[1], "instance"));
    EXPECT_NE(attribute(r, "instance"), attribute(requests[2], "instance"));
}

// An authenticated client is accepted before calloutd is asked (the example ACL's first rule).
TEST_F(EximE2E, AuthenticatedClientIsNotVerified) {
    FakePolicyServer policy;
    ASSERT_NE(policy.port(), 0);
    policy.set_reply("action=REJECT 5.1.7 would be rejected");
    // base64 of "\0carol\0secret"
    Session a = session_at("inet:127.0.0.1:" + std::to_string(policy.port()), "2s",
                           "nobody@example.test", local_recipients(1), "AGNhcm9sAHNlY3JldA==");
    EXPECT_EQ(reply_code(a.auth), "235") << a;
    ASSERT_EQ(a.rcpt.size(), 1u) << a;
    EXPECT_EQ(reply_code(a.rcpt[0]), "250") << a;
    EXPECT_TRUE(policy.requests().empty());
    // Relaying is still refused to the unauthenticated, before calloutd is asked.
    Session relay = session_at("inet:127.0.0.1:" + std::to_string(policy.port()), "2s",
                               "nobody@example.test", {"someone@elsewhere.test"});
    ASSERT_EQ(relay.rcpt.size(), 1u) << relay;
    EXPECT_EQ(relay.rcpt[0], "550 relay not permitted") << relay;
    EXPECT_TRUE(policy.requests().empty());
}

// calloutd on a unix socket (CALLOUTD_SOCKET = a path); Exim asks as its own user, not root.
TEST_F(EximE2E, UnixSocketListener) {
    FakeSmtpScript s;
    s.recipients["alice"] = "250 2.1.5 ok";
    FakeSmtpServer target(s, kCatchAllIp);
    ASSERT_TRUE(target.ok()) << target.error();
    CalloutConfig c;
    c.dns_server = dnsmasq_->server();
    c.smtp_port = target.port();
    std::string config = callout_config(c);
    std::string inet = "listen = [\"inet:127.0.0.1:0\"]";
    ASSERT_NE(config.find(inet), std::string::npos);
    config.replace(config.find(inet), inet.size(), "listen = [\"unix:@DIR@/policy.sock\"]");
    daemon_ = std::make_unique<DaemonProcess>("exim-calloutd", config);
    ASSERT_TRUE(daemon_->started()) << daemon_->log();
    namespace fs = std::filesystem;
    fs::permissions(daemon_->dir(), fs::perms::others_exec | fs::perms::group_exec,
                    fs::perm_options::add);

    std::string socket = daemon_->dir() + "/policy.sock";
    Session valid = session_at(socket, "5s", "alice@catchall.test", local_recipients(1));
    ASSERT_EQ(valid.rcpt.size(), 1u) << valid;
    EXPECT_EQ(reply_code(valid.rcpt[0]), "250") << valid;
    Session invalid = session_at(socket, "5s", "nobody@catchall.test", local_recipients(1));
    ASSERT_EQ(invalid.rcpt.size(), 1u) << invalid;
    EXPECT_TRUE(is_reply(invalid.rcpt[0], "550", "5.1.7")) << invalid;
    EXPECT_EQ(decisions("nobody@catchall.test").size(), 1u);
}

}  // namespace
}  // namespace calloutd::test
