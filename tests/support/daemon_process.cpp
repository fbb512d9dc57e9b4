// Starts and stops the calloutd binary under test.
#include "support/daemon_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "support/paths.hpp"

namespace calloutd::test {

namespace {

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
    for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) {
        s.replace(pos, from.size(), to);
    }
    return s;
}

}  // namespace

DaemonProcess::DaemonProcess(const std::string& tag, const std::string& config_toml,
                             const std::string& binary_path)
    : dir_(make_temp_dir(tag)) {
    ignore_sigpipe();
    write_config(config_toml);
    std::string log_path = dir_ + "/calloutd.log";
    std::string config = config_path();
    std::string binary = binary_path.empty() ? daemon_binary() : binary_path;
    pid_ = fork();
    if (pid_ == 0) {
        int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, STDERR_FILENO);
            dup2(fd, STDOUT_FILENO);
        }
        execl(binary.c_str(), binary.c_str(), "run", "-c", config.c_str(),
              static_cast<char*>(nullptr));
        _exit(127);
    }
    // Wait until it says it started, or gives up (a bad config exits at once).
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
        if (log().find(" started ") != std::string::npos) {
            started_ = true;
            break;
        }
        siginfo_t info{};
        if (waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
            info.si_pid == pid_) {
            break;  // exited; left unreaped for wait_exit()
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

DaemonProcess::~DaemonProcess() {
    if (pid_ > 0 && !exited_) {
        ::kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
}

void DaemonProcess::write_config(const std::string& config_toml) const {
    std::ofstream(config_path()) << replace_all(config_toml, "@DIR@", dir_);
}

std::vector<std::string> DaemonProcess::listeners() const {
    std::vector<std::string> out;
    std::string text = log();
    std::regex re(R"(listening listen=(\S+))");
    for (std::sregex_iterator it(text.begin(), text.end(), re), end; it != end; ++it) {
        out.push_back((*it)[1]);
    }
    return out;
}

uint16_t DaemonProcess::tcp_port(size_t index) const {
    size_t seen = 0;
    for (const auto& l : listeners()) {
        if (!l.starts_with("inet:")) continue;
        if (seen++ == index) return static_cast<uint16_t>(std::stoi(l.substr(l.rfind(':') + 1)));
    }
    return 0;
}

void DaemonProcess::signal(int signum) const {
    ::kill(pid_, signum);
}

int DaemonProcess::wait_exit(std::chrono::milliseconds timeout) {
    if (exited_) return -1;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        int status = 0;
        pid_t r = waitpid(pid_, &status, WNOHANG);
        if (r == pid_) {
            exited_ = true;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -1;
}

bool DaemonProcess::running() {
    if (exited_) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) exited_ = true;
    return !exited_;
}

std::string DaemonProcess::log() const {
    std::ifstream in(dir_ + "/calloutd.log");
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

bool DaemonProcess::wait_for_log(const std::string& needle,
                                 std::chrono::milliseconds timeout) const {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (log().find(needle) != std::string::npos) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
}

}  // namespace calloutd::test
