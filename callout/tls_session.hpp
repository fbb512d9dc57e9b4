// One client TLS session over memory BIOs, for STARTTLS inside the probe state machine.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <string_view>

#include "callout/transcript.hpp"

namespace calloutd {

// The SSL object never sees a socket: the probe feeds it the ciphertext it read from its libuv
// stream and writes out whatever take_output() returns, so the handshake and every read are
// non-blocking by construction and the probe's own stage timers bound them. Owns the SSL object
// and both BIOs; destroying the session (any path: cancel, deadline, reset) frees them all.
class TlsSession {
    struct Key {};  // only create() may construct

  public:
    enum class Status {
        ok,      // handshake: complete; read: everything available was read
        more,    // handshake: needs more bytes from the peer
        closed,  // the peer sent close_notify
        failed,  // a TLS error; error() says which
    };

    // `server_name` is sent as SNI when it is a host name (not an IP literal); nullptr with
    // `error` set when OpenSSL cannot make the session.
    static std::unique_ptr<TlsSession> create(SSL_CTX* ctx, std::string_view server_name,
                                              std::string& error);
    TlsSession(Key, SSL* ssl, BIO* in, BIO* out) : ssl_(ssl), in_(in), out_(out) {}
    TlsSession(const TlsSession&) = delete;
    TlsSession& operator=(const TlsSession&) = delete;

    // Ciphertext read from the peer.
    void feed(std::string_view ciphertext);
    // Advances the client handshake with what has been fed: ok, more or failed.
    Status handshake();
    // Appends the plaintext that can be decrypted now to `out`: ok, closed or failed (a
    // failure or close after some plaintext still appends that plaintext).
    Status read(std::string& out);
    // Encrypts `plaintext` into the outgoing buffer; false on a TLS error.
    bool write(std::string_view plaintext);
    // Ciphertext to send to the peer now (handshake messages, records, alerts); may be empty.
    std::string take_output();

    // Why the last call failed: "wrong version number", "unexpected eof while reading" ...
    const std::string& error() const { return error_; }
    // Protocol, cipher and the peer certificate's names, once the handshake is complete.
    TlsSessionInfo info() const;

  private:
    struct Free {
        void operator()(SSL* ssl) const { SSL_free(ssl); }
    };
    Status fail(int ret);

    std::unique_ptr<SSL, Free> ssl_;  // owns in_ and out_ (SSL_set_bio)
    BIO* in_;
    BIO* out_;
    std::string error_;
};

// True when `name` may go into SNI: a DNS host name in ASCII (RFC 6066 3 forbids IP literals).
bool is_sni_host_name(std::string_view name);

}  // namespace calloutd
