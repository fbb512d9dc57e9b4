// Blocking control-socket client: connect, one request line, read lines until the final one.
#include "daemon/control_client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace calloutd {

namespace {

class Fd {
  public:
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }

  private:
    int fd_;
};

}  // namespace

std::optional<ControlReply> ask_daemon(const std::string& socket_path,
                                       const ControlRequest& request,
                                       std::chrono::milliseconds timeout, std::string& error) {
    using Clock = std::chrono::steady_clock;
    auto deadline = Clock::now() + timeout;
    sockaddr_un sun{};
    if (socket_path.size() >= sizeof sun.sun_path) {
        error = socket_path + ": path too long for a unix socket";
        return std::nullopt;
    }
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) {
        error = std::string("socket: ") + std::strerror(errno);
        return std::nullopt;
    }
    sun.sun_family = AF_UNIX;
    std::memcpy(sun.sun_path, socket_path.data(), socket_path.size());
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0) {
        error = "cannot connect to the control socket " + socket_path + ": " +
                std::strerror(errno) + " (is calloutd running with this server.control_socket?)";
        return std::nullopt;
    }
    std::string wire = encode_control_request(request);
    size_t sent = 0;
    while (sent < wire.size()) {
        ssize_t n = ::send(fd.get(), wire.data() + sent, wire.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            error = std::string("sending to the control socket: ") + std::strerror(errno);
            return std::nullopt;
        }
        sent += static_cast<size_t>(n);
    }
    ControlLineReader lines;
    ControlReplyReader replies;
    char buf[4096];
    for (;;) {
        std::string line;
        for (;;) {
            auto st = lines.next(line);
            if (st == ControlLineReader::Status::need_more) break;
            if (st == ControlLineReader::Status::too_long) {
                error = "the daemon sent a line that is too long";
                return std::nullopt;
            }
            if (auto reply = replies.line(line)) return reply;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) {
            error = "no reply from the daemon within " + std::to_string(timeout.count()) + " ms";
            return std::nullopt;
        }
        pollfd p{fd.get(), POLLIN, 0};
        int rc = ::poll(&p, 1, static_cast<int>(left.count()));
        if (rc < 0 && errno == EINTR) continue;
        if (rc <= 0) continue;  // the deadline check above ends the wait
        ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            error = "the daemon closed the control connection without a complete reply";
            return std::nullopt;
        }
        lines.append(std::string_view(buf, static_cast<size_t>(n)));
    }
}

}  // namespace calloutd
