// Scriptable fake SMTP server: one poll() thread, non-blocking sockets, scheduled output.
#include "support/fake_smtp.hpp"

#include "support/paths.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
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

struct FakeSmtpServer::Conn {
    int fd = -1;
    std::string in;
    std::string out;  // scheduled bytes; out_off of them already sent
    std::size_t out_off = 0;
    Clock::time_point ready_at{};  // nothing goes out before this
    bool close_when_sent = false;
    bool dead = false;
};

FakeSmtpServer::FakeSmtpServer(FakeSmtpScript script, std::string ip, uint16_t port)
    : script_(std::move(script)), ip_(std::move(ip)) {
    ignore_sigpipe();
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

std::size_t FakeSmtpServer::count_commands(std::string_view prefix) const {
    const std::string p = upper(std::string(prefix));
    std::lock_guard lock(mu_);
    return static_cast<std::size_t>(
        std::count_if(commands_.begin(), commands_.end(),
                      [&](const std::string& c) { return upper(c.substr(0, p.size())) == p; }));
}

// What the script says to one command line.
FakeReply FakeSmtpServer::answer(const std::string& line) {
    auto end = line.find_first_of(" :");
    const std::string verb = upper(line.substr(0, end));
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
    if (verb == "EHLO") return "250-fake.test\n250 8BITMIME";
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
    queue(c, answer(line));
}

void FakeSmtpServer::run() {
    std::vector<Conn> conns;
    std::vector<pollfd> fds;
    char buf[8192];
    while (!stopping_) {
        const auto now = Clock::now();
        int timeout = -1;
        fds.clear();
        fds.push_back({wake_[0], POLLIN, 0});
        fds.push_back({listen_fd_, POLLIN, 0});
        for (const auto& c : conns) {
            short ev = POLLIN;
            if (c.close_when_sent && c.out_off == c.out.size()) timeout = 0;  // hang up now
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
            if (rev & (POLLIN | POLLHUP | POLLERR)) {
                for (;;) {
                    ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
                    if (n > 0) {
                        c.in.append(buf, static_cast<std::size_t>(n));
                        continue;
                    }
                    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                        c.dead = true;
                    break;
                }
                std::size_t nl;
                while (!c.close_when_sent && (nl = c.in.find('\n')) != std::string::npos) {
                    std::string line = c.in.substr(0, nl);
                    c.in.erase(0, nl + 1);
                    if (!line.empty() && line.back() == '\r') line.pop_back();
                    on_command(c, line);
                }
                if (c.in.size() > kMaxCommandLine) c.dead = true;
            }
            if (!c.dead && c.out_off < c.out.size() && c.ready_at <= Clock::now()) {
                const bool dribble = script_.dribble.count() > 0;
                std::size_t want = dribble ? 1 : c.out.size() - c.out_off;
                ssize_t n = ::send(c.fd, c.out.data() + c.out_off, want, MSG_NOSIGNAL);
                if (n > 0) {
                    c.out_off += static_cast<std::size_t>(n);
                    if (dribble) c.ready_at = Clock::now() + script_.dribble;
                } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                    c.dead = true;
                }
            }
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

}  // namespace calloutd::test
