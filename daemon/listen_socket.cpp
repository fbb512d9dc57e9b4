// Binding listeners for the metrics and control sockets: TCP with the real port, unix with mode.
#include "daemon/listen_socket.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace calloutd {

namespace {

constexpr int kBacklog = 128;

}  // namespace

bool socket_is_live(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
    bool live = ::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0;
    ::close(fd);
    return live;
}

std::string unix_bind_error(const std::string& path, int rc) {
    // libuv reports a missing directory as EACCES ("for compatibility with Windows").
    if (rc == UV_EACCES) {
        auto slash = path.rfind('/');
        std::string dir = slash == 0 ? "/" : path.substr(0, slash);
        struct stat st {};
        if (slash != std::string::npos && ::stat(dir.c_str(), &st) != 0 && errno == ENOENT)
            return path + ": directory " + dir + " does not exist";
    }
    return path + ": " + uv_strerror(rc);
}

void init_stream_handle(uv_loop_t* loop, bool is_unix, StreamHandle& h) {
    if (is_unix) {
        uv_pipe_init(loop, &h.pipe, 0);
    } else {
        uv_tcp_init(loop, &h.tcp);
    }
}

bool ListenSocket::listen(uv_loop_t* loop, const ListenAddress& address, int unix_mode, void* data,
                          uv_connection_cb on_connection, std::string& error) {
    address_ = address;
    int rc = 0;
    if (is_unix()) {
        const std::string& path = address.path;
        struct stat st {};
        if (::lstat(path.c_str(), &st) == 0) {
            if (!S_ISSOCK(st.st_mode)) {
                error = path + ": exists and is not a socket";
                return false;
            }
            if (socket_is_live(path)) {
                error = path + ": another process is listening on this socket";
                return false;
            }
            ::unlink(path.c_str());  // left behind by a process that did not exit cleanly
        }
        uv_pipe_init(loop, &handle_.pipe, 0);
        open_ = true;
        handle_.pipe.data = data;
        rc = uv_pipe_bind(&handle_.pipe, path.c_str());
        if (rc == 0 && ::chmod(path.c_str(), static_cast<mode_t>(unix_mode)) != 0) rc = -errno;
        if (rc == 0) rc = uv_listen(stream(), kBacklog, on_connection);
        if (rc != 0) {
            error = unix_bind_error(path, rc);
            close();
            return false;
        }
        bound_ = "unix:" + path;
        return true;
    }
    uv_tcp_init(loop, &handle_.tcp);
    open_ = true;
    handle_.tcp.data = data;
    sockaddr_storage ss{};
    bool v6 = address.host.find(':') != std::string::npos;
    rc = v6 ? uv_ip6_addr(address.host.c_str(), address.port, reinterpret_cast<sockaddr_in6*>(&ss))
            : uv_ip4_addr(address.host.c_str(), address.port, reinterpret_cast<sockaddr_in*>(&ss));
    if (rc == 0) {
        rc = uv_tcp_bind(&handle_.tcp, reinterpret_cast<sockaddr*>(&ss), v6 ? UV_TCP_IPV6ONLY : 0);
    }
    if (rc == 0) rc = uv_listen(stream(), kBacklog, on_connection);
    if (rc != 0) {
        error = address.text + ": " + uv_strerror(rc);
        close();
        return false;
    }
    sockaddr_storage bound{};
    int len = sizeof bound;
    uv_tcp_getsockname(&handle_.tcp, reinterpret_cast<sockaddr*>(&bound), &len);
    int port =
        ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    bound_ = v6 ? "inet:[" + address.host + "]:" + std::to_string(port)
                : "inet:" + address.host + ":" + std::to_string(port);
    return true;
}

void ListenSocket::close() {
    if (!open_) return;
    open_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&handle_), nullptr);
    if (is_unix() && !bound_.empty()) ::unlink(address_.path.c_str());
}

}  // namespace calloutd
