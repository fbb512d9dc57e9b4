// A private, real Postfix instance as the SMTP server a probe talks to (needs root and postfix).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "support/tls_cert.hpp"

namespace calloutd::test {

struct PostfixTargetOptions {
    std::string address = "127.0.0.21";  // any loopback address; the smtpd line binds it
    std::uint16_t port = 0;              // 0 = a free port on address
    std::string domain = "target.test";  // mydestination
    std::string hostname = "mx.target.test";
    std::vector<std::string> users = {"alice", "bob"};  // local parts that exist
    std::string mynetworks = "127.0.0.0/8";
    std::vector<std::string> extra_main_cf;  // "name = value" lines appended to main.cf
    // master.cf entries for the smtpd services, "@LISTEN@" replaced by address:port (the banner
    // is awaited there). Empty: one non-chrooted smtpd on address:port.
    std::string smtpd_services;
    // smtpd_tls_security_level: "" (no TLS), "may" or "encrypt"; with TLS a self-signed
    // certificate for `hostname` is made at start (tls_certificate()) and smtpd_tls_loglevel = 1
    // logs every TLS session to the maillog.
    std::string tls_security_level;
    bool smtputf8 = false;  // smtputf8_enable
};

// Recipients at `domain` in `users` get "250 2.1.5 Ok"; any other local part gets
// "550 5.1.1 <x@domain>: Recipient address rejected: User unknown in local recipient table";
// other domains get "554 5.7.1 ... Relay access denied". Accepted mail is discarded.
// Everything (config, queue, data, maillog) lives in one temp dir; several may run at once.
class PostfixTarget {
  public:
    // Starts the instance and waits for its 220 banner; throws std::runtime_error with the
    // maillog if it does not come up.
    explicit PostfixTarget(PostfixTargetOptions options = {});
    ~PostfixTarget();
    PostfixTarget(const PostfixTarget&) = delete;
    PostfixTarget& operator=(const PostfixTarget&) = delete;

    const std::string& address() const { return options_.address; }
    std::uint16_t port() const { return options_.port; }
    const std::string& domain() const { return options_.domain; }
    const std::string& dir() const { return dir_; }
    pid_t master_pid() const { return master_pid_; }
    std::string maillog_path() const { return dir_ + "/maillog"; }
    std::string maillog() const;
    // The certificate smtpd presents (empty paths without TLS).
    const TestCertificate& tls_certificate() const { return certificate_; }
    // "postfix -c DIR stop", then waits for the master to be gone (SIGKILL after 10 s).
    void stop();

  private:
    void write_config() const;
    bool start_once(std::string& why);

    PostfixTargetOptions options_;
    std::string dir_;
    TestCertificate certificate_;
    pid_t master_pid_ = -1;
};

}  // namespace calloutd::test
