// The client TLS configuration every STARTTLS of one calloutd configuration shares: one SSL_CTX.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>

namespace calloutd {

// Opportunistic, unauthenticated TLS as Postfix's smtp_tls_security_level = may/encrypt use it:
// TLS 1.2 at least, certificates not verified (no trust store is even loaded), no session cache
// or tickets (every probe is a new server), and SSL_MODE_RELEASE_BUFFERS so that an idle
// session holds no record buffers: thousands of probes in flight stay small.
class TlsContext {
    struct Key {};  // only create() may construct

  public:
    // nullptr with `error` set when OpenSSL cannot make or configure the context.
    static std::shared_ptr<TlsContext> create(std::string& error);
    TlsContext(Key, SSL_CTX* ctx) : ctx_(ctx) {}

    SSL_CTX* get() const { return ctx_.get(); }

  private:
    struct Free {
        void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
    };
    std::unique_ptr<SSL_CTX, Free> ctx_;
};

// The reason of the oldest error on OpenSSL's (thread-local) error queue, which is then
// emptied: "wrong version number", "unsupported protocol". `fallback` when the queue is empty.
std::string take_openssl_error(const std::string& fallback);

}  // namespace calloutd
