// Client TLS over memory BIOs: handshake steps, record I/O, session facts for the transcript.
#include "callout/tls_session.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include <algorithm>

#include "callout/tls_context.hpp"

namespace calloutd {

namespace {

// A certificate name is the peer's text: bounded, and printable ASCII only (RFC 2253 output
// already escapes control and non-ASCII bytes; this is the belt to those braces).
constexpr std::size_t kMaxNameText = 256;

std::string name_text(const X509_NAME* name) {
    if (name == nullptr) return {};
    BIO* bio = BIO_new(BIO_s_mem());
    if (bio == nullptr) return {};
    std::string text;
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0) {
        char* data = nullptr;
        long len = BIO_get_mem_data(bio, &data);
        if (len > 0 && data != nullptr) text.assign(data, static_cast<std::size_t>(len));
    }
    BIO_free(bio);
    if (text.size() > kMaxNameText) text.resize(kMaxNameText);
    std::replace_if(
        text.begin(), text.end(),
        [](char ch) {
            auto c = static_cast<unsigned char>(ch);
            return c < 0x20 || c >= 0x7f;
        },
        '?');
    return text;
}

}  // namespace

bool is_sni_host_name(std::string_view name) {
    if (name.empty() || name.size() > 253) return false;
    bool has_letter = false;
    for (char c : name) {
        const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!letter && !(c >= '0' && c <= '9') && c != '-' && c != '.' && c != '_') return false;
        has_letter = has_letter || letter;
    }
    // All digits and dots is an IPv4 literal; IPv6 literals already failed on ':'.
    return has_letter && name.front() != '.';
}

std::unique_ptr<TlsSession> TlsSession::create(SSL_CTX* ctx, std::string_view server_name,
                                               std::string& error) {
    ERR_clear_error();
    std::unique_ptr<SSL, Free> ssl(SSL_new(ctx));
    if (!ssl) {
        error = "SSL_new: " + take_openssl_error("failed");
        return nullptr;
    }
    BIO* in = BIO_new(BIO_s_mem());
    BIO* out = BIO_new(BIO_s_mem());
    if (in == nullptr || out == nullptr) {
        BIO_free(in);
        BIO_free(out);
        error = "BIO_new: " + take_openssl_error("failed");
        return nullptr;
    }
    // An empty memory BIO means "no data yet", not end of stream.
    BIO_set_mem_eof_return(in, -1);
    BIO_set_mem_eof_return(out, -1);
    SSL_set_bio(ssl.get(), in, out);  // from here on the SSL object owns both BIOs
    SSL_set_connect_state(ssl.get());
    std::string name(server_name);
    if (!name.empty() && name.back() == '.') name.pop_back();
    if (is_sni_host_name(name) && SSL_set_tlsext_host_name(ssl.get(), name.c_str()) != 1) {
        error = "SNI: " + take_openssl_error("failed");
        return nullptr;
    }
    return std::make_unique<TlsSession>(Key{}, ssl.release(), in, out);
}

void TlsSession::feed(std::string_view ciphertext) {
    std::size_t done = 0;
    while (done < ciphertext.size()) {
        const int n =
            BIO_write(in_, ciphertext.data() + done,
                      static_cast<int>(std::min<std::size_t>(ciphertext.size() - done, 1 << 20)));
        if (n <= 0) break;  // only on allocation failure; the handshake or read then fails
        done += static_cast<std::size_t>(n);
    }
}

TlsSession::Status TlsSession::fail(int ret) {
    const int e = SSL_get_error(ssl_.get(), ret);
    switch (e) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:  // memory BIOs take any amount: not expected, harmless
            ERR_clear_error();
            return Status::more;
        case SSL_ERROR_ZERO_RETURN:
            ERR_clear_error();
            error_ = "peer closed the TLS session";
            return Status::closed;
        case SSL_ERROR_SSL:
            error_ = take_openssl_error("TLS protocol error");
            return Status::failed;
        default:
            error_ = take_openssl_error("TLS error " + std::to_string(e));
            return Status::failed;
    }
}

TlsSession::Status TlsSession::handshake() {
    ERR_clear_error();
    const int r = SSL_do_handshake(ssl_.get());
    if (r == 1) return Status::ok;
    Status s = fail(r);
    // A close_notify before the handshake completed is a failed handshake.
    return s == Status::closed ? Status::failed : s;
}

TlsSession::Status TlsSession::read(std::string& out) {
    char buf[4096];
    while (true) {
        ERR_clear_error();
        const int n = SSL_read(ssl_.get(), buf, sizeof buf);
        if (n > 0) {
            out.append(buf, static_cast<std::size_t>(n));
            continue;
        }
        Status s = fail(n);
        return s == Status::more ? Status::ok : s;
    }
}

bool TlsSession::write(std::string_view plaintext) {
    if (plaintext.empty()) return true;
    ERR_clear_error();
    const int n = SSL_write(ssl_.get(), plaintext.data(), static_cast<int>(plaintext.size()));
    if (n == static_cast<int>(plaintext.size())) return true;
    if (fail(n) != Status::failed) error_ = "TLS write incomplete";
    return false;
}

std::string TlsSession::take_output() {
    std::string out;
    const std::size_t pending = BIO_ctrl_pending(out_);
    if (pending == 0) return out;
    out.resize(pending);
    const int n = BIO_read(out_, out.data(), static_cast<int>(pending));
    out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return out;
}

TlsSessionInfo TlsSession::info() const {
    TlsSessionInfo i;
    i.version = SSL_get_version(ssl_.get());
    if (const char* cipher = SSL_get_cipher_name(ssl_.get())) i.cipher = cipher;
    if (X509* cert = SSL_get0_peer_certificate(ssl_.get())) {
        i.peer_subject = name_text(X509_get_subject_name(cert));
        i.peer_issuer = name_text(X509_get_issuer_name(cert));
    }
    return i;
}

}  // namespace calloutd
