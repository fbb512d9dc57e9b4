// A UDP DNS server thread that answers SERVFAIL or REFUSED to everything, or nothing at all.
#include "support/fake_dns.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <stdexcept>
#include <vector>

namespace calloutd::test {

namespace {

constexpr std::size_t kHeaderSize = 12;

// Length of the header plus the first question, or 0 if the packet is malformed.
std::size_t question_end(const unsigned char* p, std::size_t n) {
    std::size_t i = kHeaderSize;
    while (i < n && p[i] != 0) {
        if ((p[i] & 0xc0) != 0) return 0;  // no compression in a query's question
        i += 1 + p[i];
    }
    i += 1 + 4;  // root label, QTYPE, QCLASS
    return i <= n ? i : 0;
}

}  // namespace

FakeDnsServer::FakeDnsServer(Mode mode) : mode_(mode) {
    fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error("FakeDnsServer: socket failed");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        close(fd_);
        throw std::runtime_error("FakeDnsServer: bind failed");
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
}

FakeDnsServer::~FakeDnsServer() {
    stop_ = true;
    thread_.join();
    close(fd_);
}

std::string FakeDnsServer::server() const {
    return "127.0.0.1:" + std::to_string(port_);
}

std::string FakeDnsServer::dnsmasq_upstream() const {
    return "127.0.0.1#" + std::to_string(port_);
}

void FakeDnsServer::serve() {
    std::array<unsigned char, 4096> buf{};
    while (!stop_) {
        pollfd pfd{fd_, POLLIN, 0};
        if (poll(&pfd, 1, 20) <= 0) continue;  // short timeout so the destructor is prompt
        sockaddr_storage peer{};
        socklen_t peer_len = sizeof peer;
        ssize_t n =
            recvfrom(fd_, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&peer), &peer_len);
        if (n < static_cast<ssize_t>(kHeaderSize)) continue;
        ++queries_;
        if (mode_ == Mode::silent) continue;
        std::size_t end = question_end(buf.data(), static_cast<std::size_t>(n));
        if (end == 0) continue;
        std::vector<unsigned char> reply(buf.begin(), buf.begin() + static_cast<long>(end));
        int rcode = mode_ == Mode::servfail ? 2 : mode_ == Mode::nxdomain ? 3 : 5;
        reply[2] = static_cast<unsigned char>(0x80 | (buf[2] & 0x79));  // QR, opcode, RD
        reply[3] = static_cast<unsigned char>(0x80 | rcode);            // RA, RCODE
        reply[4] = 0;
        reply[5] = 1;  // QDCOUNT 1, AN/NS/AR 0
        for (std::size_t i = 6; i < kHeaderSize; ++i) reply[i] = 0;
        sendto(fd_, reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&peer), peer_len);
    }
}

}  // namespace calloutd::test
