// A self-signed certificate made at test time with the openssl command, for STARTTLS targets.
#pragma once

#include <string>

namespace calloutd::test {

struct TestCertificate {
    std::string cert_file;  // PEM
    std::string key_file;   // PEM, unencrypted
    std::string subject;    // as calloutd prints it (RFC 2253): "CN=mx.example.test"
};

// Writes DIR/NAME.crt and DIR/NAME.key: an ECDSA P-256 key and a certificate for
// CN=`common_name` (subject = issuer), valid for two days. Throws std::runtime_error with
// openssl's output when it fails.
TestCertificate make_self_signed_certificate(const std::string& dir, const std::string& name,
                                             const std::string& common_name);

}  // namespace calloutd::test
