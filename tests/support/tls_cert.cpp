// `openssl req -x509` into a test's private directory.
#include "support/tls_cert.hpp"

#include <stdexcept>

#include "support/command.hpp"

namespace calloutd::test {

TestCertificate make_self_signed_certificate(const std::string& dir, const std::string& name,
                                             const std::string& common_name) {
    using namespace std::chrono_literals;
    TestCertificate c;
    c.cert_file = dir + "/" + name + ".crt";
    c.key_file = dir + "/" + name + ".key";
    c.subject = "CN=" + common_name;
    // P-256 keeps a thousand handshakes cheap; -nodes leaves the key unencrypted for smtpd.
    auto r = run_command({"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                          "/CN=" + common_name, "-keyout", c.key_file, "-out", c.cert_file},
                         30s);
    if (r.exit_code != 0) {
        throw std::runtime_error("openssl req failed (exit " + std::to_string(r.exit_code) +
                                 "): " + r.out + r.err);
    }
    return c;
}

}  // namespace calloutd::test
