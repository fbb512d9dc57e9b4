// Scriptable fake SMTP server: one poll() thread, non-blocking sockets, scheduled output.
// Over 500 lines as one concept: one scriptable SMTP server (scripts, faults, STARTTLS).
#include "support/fake_smtp.hpp"

#include "support/paths.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>

namespace calloutd::test {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kMaxCommandLine = 64 * 1024;

std::string upper(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
}

std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

void set_nonblocking(int fd) {
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

// Fills `ss` for ip:port; false if `ip` is not an IP literal.
bool make_addr(const std::string& ip, uint16_t port, sockaddr_storage* ss, socklen_t* len) {
    *ss = {};
    if (ip.find(':') != std::string::npos) {
        auto* a = reinterpret_cast<sockaddr_in6*>(ss);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        *len = sizeof *a;
        return ::inet_pton(AF_INET6, ip.c_str(), &a->sin6_addr) == 1;
    }
    auto* a = reinterpret_cast<sockaddr_in*>(ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    *len = sizeof *a;
    return ::inet_pton(AF_INET, ip.c_str(), &a->sin_addr) == 1;
}

uint16_t local_port(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
    if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
    return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

std::string huge_banner(std::size_t bytes) {
    std::string out;
    const std::string line = "220-" + std::string(70, 'x') + "\r\n";
    while (out.size() < bytes) out += line;
    out += "220 end of banner\r\n";
    return out;
}

}  // namespace

FakeReply FakeReply::garbage(std::string bytes) {
    FakeReply r(std::move(bytes));
    r.raw = true;
    return r;
}

FakeReply FakeReply::cut(std::string text, std::size_t bytes) {
    FakeReply r(std::move(text));
    r.cut_after = bytes;
    return r;
}

FakeReply FakeReply::hangup(std::string text) {
    FakeReply r(std::move(text));
    r.close_after = true;
    return r;
}

FakeReply FakeReply::slow(std::string text, std::chrono::milliseconds delay) {
    FakeReply r(std::move(text));
    r.delay = delay;
    return r;
}

std::string FakeReply::wire() const {
    if (raw) return text;
    std::string out;
    std::size_t start = 0;
    while (start <= text.size()) {
        auto nl = text.find('\n', start);
        if (nl == std::string::npos) nl = text.size();
        out.append(text, start, nl - start);
        out += "\r\n";
        start = nl + 1;
    }
    return out;
}

// Where a connection is with STARTTLS.
enum class TlsPhase {
    off,               // plaintext SMTP
    pending,           // "220 Ready to start TLS" queued; the handshake starts once it is sent
    handshaking,       // SSL_accept in progress
    on,                // SMTP inside TLS
    silent,            // read and discard, never answer (a stalled or garbage-sending server)
    reset_on_input,    // reset the connection when the client says anything (the ClientHello)
    garbage_on_input,  // answer whatever the client says (the ClientHello) with garbage
};

struct SslFree {
    void operator()(SSL* ssl) const { SSL_free(ssl); }
};

struct FakeSmtpServer::Conn {
    int fd = -1;
    std::string in;
    std::string out;  // scheduled bytes; out_off of them already sent
    std::size_t out_off = 0;
    Clock::time_point ready_at{};  // nothing goes out before this
    bool close_when_sent = false;
    bool dead = false;
    TlsPhase tls = TlsPhase::off;
    std::unique_ptr<SSL, SslFree> ssl;
    bool ssl_wants_write = false;  // the TLS layer waits for the socket to take bytes
};

// The server side of the fake's STARTTLS: the test's certificate, optionally capped at an old
// protocol version (which needs security level 0 in OpenSSL 3).
bool FakeSmtpServer::make_tls_context() {
    const FakeTls& t = *script_.tls;
    tls_ctx_.reset(SSL_CTX_new(TLS_server_method()));
    SSL_CTX* ctx = tls_ctx_.get();
    auto fail = [&](const std::string& what) {
        char buf[256] = {};
        ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
        ERR_clear_error();
        error_ = "TLS " + what + ": " + buf;
        return false;
    };
    if (ctx == nullptr) return fail("SSL_CTX_new");
    if (SSL_CTX_use_certificate_chain_file(ctx, t.cert_file.c_str()) != 1)
        return fail("certificate " + t.cert_file);
    if (SSL_CTX_use_PrivateKey_file(ctx, t.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
        return fail("key " + t.key_file);
    if (t.max_version != 0) {
        SSL_CTX_set_security_level(ctx, 0);
        SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0");
        SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
        SSL_CTX_set_max_proto_version(ctx, t.max_version);
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    return true;
}

FakeSmtpServer::FakeSmtpServer(FakeSmtpScript script, std::string ip, uint16_t port)
    : script_(std::move(script)), ip_(std::move(ip)) {
    ignore_sigpipe();
    if (script_.tls && !make_tls_context()) return;
    sockaddr_storage ss;
    socklen_t len = 0;
    if (!make_addr(ip_, port, &ss, &len)) {
        error_ = "not an IP literal: " + ip_;
        return;
    }
    int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error_ = std::string("socket: ") + std::strerror(errno);
        return;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, 4096) != 0 ||
        ::pipe2(wake_, O_NONBLOCK | O_CLOEXEC) != 0) {
        error_ = std::string("bind/listen ") + ip_ + ": " + std::strerror(errno);
        ::close(fd);
        return;
    }
    set_nonblocking(fd);
    port_ = local_port(fd);
    listen_fd_ = fd;
    thread_ = std::thread([this] { run(); });
}

FakeSmtpServer::~FakeSmtpServer() {
    stop();
}

void FakeSmtpServer::stop() {
    if (thread_.joinable()) {
        stopping_ = true;
        char c = 'x';
        [[maybe_unused]] auto n = ::write(wake_[1], &c, 1);
        thread_.join();
    }
    for (int* fd : {&listen_fd_, &wake_[0], &wake_[1]}) {
        if (*fd >= 0) ::close(*fd);
        *fd = -1;
    }
}

std::vector<std::string> FakeSmtpServer::commands() const {
    std::lock_guard lock(mu_);
    return commands_;
}

std::vector<std::string> FakeSmtpServer::tls_server_names() const {
    std::lock_guard lock(mu_);
    return server_names_;
}

std::size_t FakeSmtpServer::count_commands(std::string_view prefix) const {
    const std::string p = upper(std::string(prefix));
    std::lock_guard lock(mu_);
    return static_cast<std::size_t>(
        std::count_if(commands_.begin(), commands_.end(),
                      [&](const std::string& c) { return upper(c.substr(0, p.size())) == p; }));
}

// What the script says to one command line.
FakeReply FakeSmtpServer::answer(const Conn& c, const std::string& line) {
    auto end = line.find_first_of(" :");
    const std::string verb = upper(line.substr(0, end));
    const bool in_tls = c.tls == TlsPhase::on;
    if (in_tls) {
        if (auto it = script_.tls_verbs.find(verb); it != script_.tls_verbs.end())
            return it->second;
    }
    if (verb == "RCPT") {
        auto lt = line.find('<');
        auto gt = line.find('>', lt == std::string::npos ? 0 : lt);
        std::string addr = lt != std::string::npos && gt != std::string::npos
                               ? lower(line.substr(lt + 1, gt - lt - 1))
                               : std::string();
        if (script_.greylist_new_recipients && seen_recipients_.insert(addr).second)
            return script_.greylist_reply;
        if (auto it = script_.recipients.find(addr); it != script_.recipients.end())
            return it->second;
        if (auto it = script_.recipients.find(addr.substr(0, addr.find('@')));
            it != script_.recipients.end())
            return it->second;
        if (auto it = script_.verbs.find(verb); it != script_.verbs.end()) return it->second;
        return script_.accept_all ? FakeReply("250 2.1.5 ok") : script_.rcpt_default;
    }
    if (auto it = script_.verbs.find(verb); it != script_.verbs.end()) return it->second;
    if (verb == "EHLO") {
        if (script_.tls && script_.tls->advertise && !in_tls)
            return "250-fake.test\n250-STARTTLS\n250 8BITMIME";
        return "250-fake.test\n250 8BITMIME";
    }
    if (verb == "STARTTLS" && script_.tls && !in_tls) return "220 2.0.0 Ready to start TLS";
    if (verb == "HELO") return "250 fake.test";
    if (verb == "MAIL") return "250 2.1.0 ok";
    if (verb == "RSET" || verb == "NOOP") return "250 2.0.0 ok";
    if (verb == "DATA") return "354 go ahead";
    if (verb == "QUIT") return FakeReply::hangup("221 2.0.0 bye");
    return "502 5.5.2 command not recognized";
}

void FakeSmtpServer::queue(Conn& c, const FakeReply& r) {
    if (c.close_when_sent) return;
    std::string bytes = r.wire();
    bool close = r.close_after || r.text.rfind("421", 0) == 0;
    if (r.cut_after && *r.cut_after < bytes.size()) {
        bytes.resize(*r.cut_after);
        close = true;
    }
    if (c.out_off == c.out.size()) {
        c.out.clear();
        c.out_off = 0;
        c.ready_at = Clock::now() + script_.reply_delay + r.delay;
    }
    c.out += bytes;
    c.close_when_sent = close;
}

void FakeSmtpServer::on_command(Conn& c, const std::string& line) {
    {
        std::lock_guard lock(mu_);
        commands_.push_back(line);
    }
    FakeReply reply = answer(c, line);
    queue(c, reply);
    const bool starts_tls = script_.tls && c.tls == TlsPhase::off &&
                            upper(line.substr(0, 8)) == "STARTTLS" &&
                            reply.text.rfind("220", 0) == 0;
    if (!starts_tls) return;
    c.in.clear();  // RFC 3207 4.2: plaintext after STARTTLS is discarded, never answered
    switch (script_.tls->fault) {
        case FakeTls::Fault::none:
            c.tls = TlsPhase::pending;
            return;
        case FakeTls::Fault::garbage:
            queue(c, FakeReply::garbage("this is not a TLS record\r\n"));
            c.tls = TlsPhase::silent;
            return;
        case FakeTls::Fault::stall:
            c.tls = TlsPhase::silent;
            return;
        case FakeTls::Fault::reset:
            c.tls = TlsPhase::reset_on_input;
            return;
        case FakeTls::Fault::garbage_reply:
            c.tls = TlsPhase::garbage_on_input;
            return;
    }
}

// The 220 has gone out: the TLS server side takes over the socket.
void FakeSmtpServer::start_tls(Conn& c) {
    c.ssl.reset(SSL_new(tls_ctx_.get()));
    if (!c.ssl || SSL_set_fd(c.ssl.get(), c.fd) != 1) {
        c.dead = true;
        return;
    }
    SSL_set_accept_state(c.ssl.get());
    c.tls = TlsPhase::handshaking;
    step_handshake(c);
}

void FakeSmtpServer::step_handshake(Conn& c) {
    ERR_clear_error();
    c.ssl_wants_write = false;
    int r = SSL_accept(c.ssl.get());
    if (r == 1) {
        ++tls_handshakes_;
        const char* sni = SSL_get_servername(c.ssl.get(), TLSEXT_NAMETYPE_host_name);
        {
            std::lock_guard lock(mu_);
            server_names_.push_back(sni != nullptr ? sni : "");
        }
        c.tls = script_.tls->stall_after_handshake ? TlsPhase::silent : TlsPhase::on;
        return;
    }
    int e = SSL_get_error(c.ssl.get(), r);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ) return;
    if (e == SSL_ERROR_WANT_WRITE) {
        c.ssl_wants_write = true;
        return;
    }
    c.dead = true;  // the client gave up, or sent what no TLS server takes
}

// Input on a connection, by where it is with TLS.
void FakeSmtpServer::on_readable(Conn& c) {
    char buf[8192];
    switch (c.tls) {
        case TlsPhase::handshaking:
            return step_handshake(c);
        case TlsPhase::reset_on_input: {
            linger reset{1, 0};  // close() now sends RST
            ::setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
            c.dead = true;
            return;
        }
        case TlsPhase::on:
            for (;;) {
                ERR_clear_error();
                int n = SSL_read(c.ssl.get(), buf, sizeof buf);
                if (n > 0) {
                    c.in.append(buf, static_cast<std::size_t>(n));
                    continue;
                }
                int e = SSL_get_error(c.ssl.get(), n);
                ERR_clear_error();
                if (e == SSL_ERROR_WANT_WRITE) c.ssl_wants_write = true;
                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) c.dead = true;
                break;
            }
            break;
        case TlsPhase::garbage_on_input:
            queue(c, FakeReply::garbage("HTTP/1.1 400 Bad Request\r\n\r\n"));
            c.tls = TlsPhase::silent;
            [[fallthrough]];
        case TlsPhase::off:
        case TlsPhase::pending:
        case TlsPhase::silent:
            for (;;) {
                ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
                if (n > 0) {
                    // Before TLS: command lines. Waiting for our 220 to go out, or silent:
                    // whatever the client says is dropped.
                    if (c.tls == TlsPhase::off) c.in.append(buf, static_cast<std::size_t>(n));
                    continue;
                }
                if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                    c.dead = true;
                break;
            }
            break;
    }
    std::size_t nl;
    while (!c.close_when_sent && (c.tls == TlsPhase::off || c.tls == TlsPhase::on) &&
           (nl = c.in.find('\n')) != std::string::npos) {
        std::string line = c.in.substr(0, nl);
        c.in.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        on_command(c, line);
    }
    if (c.in.size() > kMaxCommandLine) c.dead = true;
}

// Scheduled output, through TLS once it is on.
void FakeSmtpServer::on_writable(Conn& c) {
    if (c.tls == TlsPhase::handshaking) return step_handshake(c);
    if (c.out_off >= c.out.size() || c.ready_at > Clock::now()) return;
    const bool dribble = script_.dribble.count() > 0;
    std::size_t want = dribble ? 1 : c.out.size() - c.out_off;
    if (c.tls == TlsPhase::on) {
        ERR_clear_error();
        c.ssl_wants_write = false;
        int n = SSL_write(c.ssl.get(), c.out.data() + c.out_off, static_cast<int>(want));
        if (n > 0) {
            c.out_off += static_cast<std::size_t>(n);
            if (dribble) c.ready_at = Clock::now() + script_.dribble;
            return;
        }
        int e = SSL_get_error(c.ssl.get(), n);
        ERR_clear_error();
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            c.ssl_wants_write = e == SSL_ERROR_WANT_WRITE;
            return;
        }
        c.dead = true;
        return;
    }
    ssize_t n = ::send(c.fd, c.out.data() + c.out_off, want, MSG_NOSIGNAL);
    if (n > 0) {
        c.out_off += static_cast<std::size_t>(n);
        if (dribble) c.ready_at = Clock::now() + script_.dribble;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        c.dead = true;
    }
    if (c.tls == TlsPhase::pending && c.out_off == c.out.size() && !c.dead) start_tls(c);
}

void FakeSmtpServer::run() {
    std::vector<Conn> conns;
    std::vector<pollfd> fds;
    while (!stopping_) {
        const auto now = Clock::now();
        int timeout = -1;
        fds.clear();
        fds.push_back({wake_[0], POLLIN, 0});
        fds.push_back({listen_fd_, POLLIN, 0});
        for (const auto& c : conns) {
            short ev = POLLIN;
            if (c.close_when_sent && c.out_off == c.out.size()) timeout = 0;  // hang up now
            if (c.ssl_wants_write) ev |= POLLOUT;
            if (c.out_off < c.out.size()) {
                if (c.ready_at <= now) {
                    ev |= POLLOUT;
                } else {
                    auto ms = std::chrono::ceil<std::chrono::milliseconds>(c.ready_at - now);
                    int wait = static_cast<int>(ms.count());
                    timeout = timeout < 0 ? wait : std::min(timeout, wait);
                }
            }
            fds.push_back({c.fd, ev, 0});
        }
        if (::poll(fds.data(), fds.size(), timeout) < 0 && errno != EINTR) break;
        if (fds[0].revents & POLLIN) break;

        for (std::size_t i = 0; i < conns.size(); ++i) {
            Conn& c = conns[i];
            const short rev = fds[i + 2].revents;
            if (rev & (POLLIN | POLLHUP | POLLERR)) on_readable(c);
            if (!c.dead &&
                (c.ssl_wants_write || (c.out_off < c.out.size() && c.ready_at <= Clock::now())))
                on_writable(c);
            if (c.close_when_sent && c.out_off == c.out.size()) c.dead = true;
        }

        if (fds[1].revents & POLLIN) {
            for (;;) {
                int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) break;
                Conn c;
                c.fd = fd;
                ++accepted_;
                std::size_t cur = ++current_;
                std::size_t max = max_concurrent_.load();
                while (cur > max && !max_concurrent_.compare_exchange_weak(max, cur)) {
                }
                if (script_.huge_banner_bytes > 0)
                    queue(c, FakeReply::garbage(huge_banner(script_.huge_banner_bytes)));
                else if (script_.banner)
                    queue(c, *script_.banner);
                conns.push_back(std::move(c));
            }
        }

        auto dead = std::remove_if(conns.begin(), conns.end(), [this](const Conn& c) {
            if (!c.dead) return false;
            ::close(c.fd);
            --current_;
            return true;
        });
        conns.erase(dead, conns.end());
    }
    for (auto& c : conns) {
        ::close(c.fd);
        --current_;
    }
}

uint16_t unused_port(const std::string& ip) {
    sockaddr_storage ss;
    socklen_t len = 0;
    if (!make_addr(ip, 0, &ss, &len)) return 0;
    int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    uint16_t port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0) port = local_port(fd);
    ::close(fd);
    return port;
}

FakeSmtpFleet::FakeSmtpFleet(const std::vector<std::pair<std::string, FakeSmtpScript>>& scripts) {
    for (int attempt = 0; attempt < 5 && servers_.empty(); ++attempt) {
        uint16_t port = 0;
        bool ok = true;
        for (const auto& [ip, script] : scripts) {
            auto s = std::make_unique<FakeSmtpServer>(script, ip, port);
            if (!s->ok()) {
                ok = false;
                break;
            }
            port = s->port();
            servers_.push_back(std::move(s));
        }
        if (!ok) servers_.clear();
    }
}

FakeSmtpFleet::~FakeSmtpFleet() {
    for (auto& s : servers_) s->stop();
}

int serve_until_signal(const char* name, FakeSmtpScript script, const std::string& ip,
                       uint16_t port,
                       const std::function<void(const FakeSmtpServer&)>& after_stop) {
    // Block the signals before the server thread starts, so only sigwait() sees them.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);

    FakeSmtpServer server(std::move(script), ip, port);
    if (!server.ok()) {
        std::fprintf(stderr, "%s: %s\n", name, server.error().c_str());
        return 1;
    }
    std::printf("port=%u\n", server.port());
    std::fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    server.stop();
    if (after_stop) after_stop(server);
    return 0;
}

}  // namespace calloutd::test
