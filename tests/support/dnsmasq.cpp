// Starts, probes and stops a private dnsmasq; the zones become command-line options.
#include "support/dnsmasq.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "support/paths.hpp"
#include "support/ports.hpp"

namespace calloutd::test {

namespace {

// A port that was free on 127.0.0.1 for both UDP and TCP a moment ago (dnsmasq needs both).
std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string join(const std::vector<std::string>& parts, const char* sep) {
    std::string out;
    for (const auto& p : parts) out += (out.empty() ? "" : sep) + p;
    return out;
}

}  // namespace

Dnsmasq::Dnsmasq(const DnsmasqZones& zones) : zones_(zones), dir_(make_temp_dir("dnsmasq")) {
    std::string why;
    // The free port may be taken between picking and binding; try a few.
    for (int attempt = 0; attempt < 5; ++attempt) {
        if (start_once(zones, why)) return;
    }
    std::string text = log();
    stop();
    std::filesystem::remove_all(dir_);
    throw std::runtime_error("dnsmasq did not start: " + why + "\n" + text);
}

Dnsmasq::~Dnsmasq() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
}

std::string Dnsmasq::server() const {
    return "127.0.0.1:" + std::to_string(port_);
}

std::string Dnsmasq::log() const {
    return read_file(log_path()) + read_file(dir_ + "/dnsmasq.stderr");
}

bool Dnsmasq::start_once(const DnsmasqZones& zones, std::string& why, std::uint16_t port) {
    port_ = port != 0 ? port : pick_restartable_port(true);
    std::vector<std::string> args = {
        "dnsmasq",
        "--conf-file=/dev/null",  // never read /etc/dnsmasq.conf
        "--keep-in-foreground",
        "--no-resolv",  // no upstream: nothing leaves the machine
        "--no-hosts",
        "--no-poll",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        "--port=" + std::to_string(port_),
        "--cache-size=0",
        "--pid-file=",
        "--log-queries",
        "--log-facility=" + log_path(),
    };
    if (geteuid() == 0) {
        args.push_back("--user=root");  // the log file stays writable after dropping privileges
        args.push_back("--group=root");
    }
    for (const auto& d : zones.local_domains) args.push_back("--local=/" + d + "/");
    for (const auto& f : zones.forwards) args.push_back("--server=/" + f.domain + "/" + f.upstream);
    for (const auto& m : zones.mx) {
        args.push_back("--mx-host=" + m.domain + "," + m.host + "," + std::to_string(m.preference));
    }
    for (const auto& h : zones.hosts) {
        args.push_back("--host-record=" + h.name + "," + join(h.addresses, ","));
    }
    for (const auto& t : zones.txt_only) args.push_back("--txt-record=" + t + ",calloutd-test");
    for (const auto& c : zones.cnames) args.push_back("--cname=" + c.alias + "," + c.target);
    args.push_back(std::string("--host-record=") + kDnsCanaryName + ",192.0.2.53");

    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::string stderr_path = dir_ + "/dnsmasq.stderr";
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("Dnsmasq: fork failed");
    if (pid_ == 0) {
        // If the test binary dies without its destructors (a crash, a killed ctest), so does
        // dnsmasq: no orphan keeps the port and the temp dir.
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        int fd = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execvp("dnsmasq", argv.data());
        _exit(127);
    }

    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
        int status = 0;
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            why = "dnsmasq exited during start-up (status " + std::to_string(status) + ")";
            return false;
        }
        if (answers()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    why = "dnsmasq did not answer within 10 s";
    stop();
    return false;
}

// Sends one query for the root's NS and waits briefly for any well-formed reply.
bool Dnsmasq::answers() const {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port_);
    const unsigned char query[] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0,
                                   0,    0,    0,    0,    0, 2, 0, 1};  // ". IN NS", RD
    bool ok = false;
    if (sendto(fd, query, sizeof query, 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr) ==
        static_cast<ssize_t>(sizeof query)) {
        pollfd pfd{fd, POLLIN, 0};
        std::array<unsigned char, 512> buf{};
        ok = poll(&pfd, 1, 100) == 1 && recv(fd, buf.data(), buf.size(), 0) >= 12 &&
             buf[0] == 0x12 && buf[1] == 0x34;
    }
    close(fd);
    return ok;
}

void Dnsmasq::kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
}

void Dnsmasq::restart() {
    stop();
    std::string why;
    // Same port on purpose (calloutd keeps asking it); another process may have taken it for a
    // moment (tests run in parallel), or a loaded machine may be slow to start dnsmasq: retry.
    for (int attempt = 0; attempt < 20; ++attempt) {
        if (start_once(zones_, why, port_)) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    throw std::runtime_error("dnsmasq did not restart on port " + std::to_string(port_) + ": " +
                             why + "\n" + log());
}

void Dnsmasq::stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > deadline) {
            ::kill(pid_, SIGKILL);
            waitpid(pid_, &status, 0);
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = -1;
}

}  // namespace calloutd::test
