#include "support/ports.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <stdexcept>

namespace calloutd::test {
namespace {

bool free_on_loopback(int type, std::uint16_t port) {
    int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    close(fd);
    return ok;
}

}  // namespace

std::uint16_t pick_restartable_port(bool udp) {
    int low = 32768;
    std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
    range >> low;
    const int first = 10000;
    const int last = low > first + 1000 ? low - 1 : 32767;
    std::mt19937 rng(std::random_device{}());
    std::uniform_int_distribution<int> pick(first, last);
    for (int attempt = 0; attempt < 200; ++attempt) {
        auto port = static_cast<std::uint16_t>(pick(rng));
        if (free_on_loopback(SOCK_STREAM, port) && (!udp || free_on_loopback(SOCK_DGRAM, port)))
            return port;
    }
    throw std::runtime_error("no free port below the ephemeral range on 127.0.0.1");
}

}  // namespace calloutd::test
