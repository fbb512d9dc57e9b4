// The Postfix target harness: a real Postfix answers 250 for known users and 550 5.1.1 otherwise.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <iostream>
#include <string>

#include "support/postfix_target.hpp"

namespace calloutd::test {
namespace {

// A blocking SMTP client just big enough for a dialogue: one reply (all its lines) per call.
class RawSmtp {
  public:
    RawSmtp(const std::string& address, std::uint16_t port) {
        fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        timeval tv{5, 0};
        setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(port);
        inet_pton(AF_INET, address.c_str(), &sa.sin_addr);
        connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
    }
    ~RawSmtp() { close(fd_); }
    bool connected() const { return connected_; }

    // Sends a command (none for the banner) and returns the last line of the reply.
    std::string command(const std::string& line = {}) {
        if (!line.empty()) {
            std::string out = line + "\r\n";
            send(fd_, out.data(), out.size(), MSG_NOSIGNAL);
        }
        std::string reply_line;
        while (true) {
            reply_line = read_line();
            if (reply_line.size() < 4 || reply_line[3] != '-') return reply_line;
        }
    }

  private:
    std::string read_line() {
        std::string line;
        char c = 0;
        while (recv(fd_, &c, 1, 0) == 1) {
            if (c == '\n') break;
            if (c != '\r') line.push_back(c);
        }
        return line;
    }
    int fd_ = -1;
    bool connected_ = false;
};

class PostfixTargetTest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (geteuid() != 0) GTEST_SKIP() << "a private Postfix instance needs root";
    }
};

TEST_F(PostfixTargetTest, KnownUserAcceptedUnknownUserRejectedWith511) {
    PostfixTarget target;
    EXPECT_EQ(target.address(), "127.0.0.21");
    ASSERT_GT(target.port(), 0);
    ASSERT_GT(target.master_pid(), 0);
    {
        RawSmtp smtp(target.address(), target.port());
        ASSERT_TRUE(smtp.connected());
        EXPECT_EQ(smtp.command(), "220 mx.target.test ESMTP calloutd-test");
        EXPECT_EQ(smtp.command("EHLO probe.calloutd.test").substr(0, 3), "250");
        EXPECT_EQ(smtp.command("MAIL FROM:<>"), "250 2.1.0 Ok");
        EXPECT_EQ(smtp.command("RCPT TO:<alice@target.test>"), "250 2.1.5 Ok");
        EXPECT_EQ(smtp.command("RCPT TO:<nobody@target.test>"),
                  "550 5.1.1 <nobody@target.test>: Recipient address rejected: User unknown in "
                  "local recipient table");
        EXPECT_EQ(smtp.command("RCPT TO:<bob@target.test>"), "250 2.1.5 Ok");
        EXPECT_EQ(smtp.command("RCPT TO:<alice@elsewhere.test>").substr(0, 9), "554 5.7.1");
        EXPECT_EQ(smtp.command("QUIT").substr(0, 3), "221");
    }
    pid_t master = target.master_pid();
    target.stop();
    EXPECT_NE(kill(master, 0), 0) << "master " << master << " still exists after stop()";
    RawSmtp after(target.address(), target.port());
    EXPECT_FALSE(after.connected()) << "the port still answers after stop()";
    if (HasFailure()) std::cerr << target.maillog();
}

TEST_F(PostfixTargetTest, SeveralInstancesRunAtOnce) {
    PostfixTargetOptions a_opts;
    a_opts.address = "127.0.0.21";
    a_opts.domain = "one.test";
    a_opts.hostname = "mx.one.test";
    a_opts.users = {"carol"};
    PostfixTargetOptions b_opts;
    b_opts.address = "127.0.0.22";
    b_opts.domain = "two.test";
    b_opts.hostname = "mx.two.test";
    b_opts.users = {"dave"};
    PostfixTarget a(a_opts);
    PostfixTarget b(b_opts);
    EXPECT_NE(a.master_pid(), b.master_pid());
    EXPECT_NE(a.dir(), b.dir());

    RawSmtp sa(a.address(), a.port());
    RawSmtp sb(b.address(), b.port());
    EXPECT_EQ(sa.command(), "220 mx.one.test ESMTP calloutd-test");
    EXPECT_EQ(sb.command(), "220 mx.two.test ESMTP calloutd-test");
    sa.command("HELO probe.calloutd.test");
    sb.command("HELO probe.calloutd.test");
    sa.command("MAIL FROM:<>");
    sb.command("MAIL FROM:<>");
    EXPECT_EQ(sa.command("RCPT TO:<carol@one.test>"), "250 2.1.5 Ok");
    EXPECT_EQ(sa.command("RCPT TO:<dave@one.test>").substr(0, 9), "550 5.1.1");
    EXPECT_EQ(sb.command("RCPT TO:<dave@two.test>"), "250 2.1.5 Ok");
    EXPECT_EQ(sb.command("RCPT TO:<carol@two.test>").substr(0, 9), "550 5.1.1");
    sa.command("QUIT");
    sb.command("QUIT");
    if (HasFailure()) std::cerr << a.maillog() << b.maillog();
}

}  // namespace
}  // namespace calloutd::test
