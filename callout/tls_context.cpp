// One SSL_CTX for every probe: protocol floor, no verification, no session state, small buffers.
#include "callout/tls_context.hpp"

#include <openssl/err.h>

namespace calloutd {

std::string take_openssl_error(const std::string& fallback) {
    unsigned long e = ERR_get_error();
    std::string text = fallback;
    if (e != 0) {
        if (const char* reason = ERR_reason_error_string(e)) {
            text = reason;
        } else {
            char buf[256];
            ERR_error_string_n(e, buf, sizeof buf);
            text = buf;
        }
    }
    ERR_clear_error();
    return text;
}

std::shared_ptr<TlsContext> TlsContext::create(std::string& error) {
    ERR_clear_error();
    SSL_CTX* raw = SSL_CTX_new(TLS_client_method());
    if (raw == nullptr) {
        error = "SSL_CTX_new: " + take_openssl_error("failed");
        return nullptr;
    }
    auto ctx = std::make_shared<TlsContext>(Key{}, raw);
    if (SSL_CTX_set_min_proto_version(raw, TLS1_2_VERSION) != 1) {
        error = "TLS 1.2 minimum: " + take_openssl_error("failed");
        return nullptr;
    }
    // Nobody authenticates an MX found through unsigned DNS: a failed check would only make the
    // probe fall back to plaintext, which is worse than an unverified session.
    SSL_CTX_set_verify(raw, SSL_VERIFY_NONE, nullptr);
    // Debian's openssl.cnf asks for security level 2, which refuses the 1024-bit DH groups and
    // RSA keys old MX hosts still have; level 1 keeps them encrypted rather than in plaintext.
    SSL_CTX_set_security_level(raw, 1);
    SSL_CTX_set_session_cache_mode(raw, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(raw, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
    SSL_CTX_set_mode(raw, SSL_MODE_RELEASE_BUFFERS);
    return ctx;
}

}  // namespace calloutd
