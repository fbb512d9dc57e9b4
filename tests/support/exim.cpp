// Unpacking and driving the real Exim: a fork/exec with a pipe each way and stderr to a file.
#include "support/exim.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "support/command.hpp"
#include "support/paths.hpp"

namespace calloutd::test {

std::string exim_binary(std::string& why) {
    // The cache sits next to the daemon binary, i.e. in the build tree: a clean clone unpacks
    // once per build folder, and `rm -rf build` forgets it.
    auto cache = std::filesystem::path(daemon_binary()).parent_path() / "exim-cache";
    std::string script = source_dir() + "/tests/support/exim-unpack.sh";
    CommandResult r = run_command({"/bin/bash", script, cache.string()}, std::chrono::minutes(3));
    std::string path = r.out.substr(0, r.out.find('\n'));
    if (r.exit_code != 0 || path.empty()) {
        why = "exim-unpack.sh exited " + std::to_string(r.exit_code) +
              (r.timed_out ? " (timed out)" : "") + ": " + r.err;
        return {};
    }
    return path;
}

EximSession::EximSession(const std::string& exim, const std::string& config,
                         const std::vector<std::string>& defines, const std::string& client_ip,
                         const std::string& stderr_path)
    : stderr_path_(stderr_path) {
    std::vector<std::string> argv = {exim, "-C", config};
    for (const auto& d : defines) argv.push_back("-D" + d);
    argv.push_back("-bh");
    argv.push_back(client_ip);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);

    int in_pipe[2];   // test -> exim stdin
    int out_pipe[2];  // exim stdout -> test
    if (pipe2(in_pipe, O_CLOEXEC) != 0) return;
    if (pipe2(out_pipe, O_CLOEXEC) != 0) {
        close(in_pipe[0]);
        close(in_pipe[1]);
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        int err = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (err >= 0) dup2(err, STDERR_FILENO);
        dup2(in_pipe[0], STDIN_FILENO);
        dup2(out_pipe[1], STDOUT_FILENO);
        execv(args[0], args.data());
        _exit(127);
    }
    close(in_pipe[0]);
    close(out_pipe[1]);
    if (pid < 0) {
        close(in_pipe[1]);
        close(out_pipe[0]);
        return;
    }
    pid_ = pid;
    to_exim_ = in_pipe[1];
    from_exim_ = out_pipe[0];
}

EximSession::~EximSession() {
    if (to_exim_ >= 0) close(to_exim_);
    if (from_exim_ >= 0) close(from_exim_);
    if (pid_ > 0) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
    }
}

bool EximSession::read_line(std::string& line, std::chrono::steady_clock::time_point deadline) {
    for (;;) {
        auto nl = buffer_.find('\n');
        if (nl != std::string::npos) {
            line = buffer_.substr(0, nl);
            buffer_.erase(0, nl + 1);
            if (!line.empty() && line.back() == '\r') line.pop_back();
            return true;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0 || from_exim_ < 0) return false;
        pollfd p{from_exim_, POLLIN, 0};
        if (poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
        char buf[4096];
        ssize_t n = read(from_exim_, buf, sizeof buf);
        if (n <= 0) return false;
        buffer_.append(buf, static_cast<size_t>(n));
    }
}

// A reply is lines "NNN-..." ending with "NNN ..."; -bh also prints "**** ..." banners and blank
// lines of its own, which are skipped.
std::string EximSession::read_reply(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string reply;
    std::string line;
    while (read_line(line, deadline)) {
        bool smtp = line.size() >= 4 && std::isdigit(static_cast<unsigned char>(line[0])) &&
                    std::isdigit(static_cast<unsigned char>(line[1])) &&
                    std::isdigit(static_cast<unsigned char>(line[2])) &&
                    (line[3] == ' ' || line[3] == '-');
        if (!smtp) {
            if (line.size() == 3 && std::isdigit(static_cast<unsigned char>(line[0]))) {
                line += ' ';  // "550" alone ends a reply too
            } else {
                continue;
            }
        }
        if (!reply.empty()) reply += '\n';
        reply += line;
        if (line[3] == ' ') return reply;
    }
    return {};
}

std::string EximSession::banner(std::chrono::milliseconds timeout) {
    return read_reply(timeout);
}

std::string EximSession::command(const std::string& line, std::chrono::milliseconds timeout) {
    if (to_exim_ < 0) return {};
    std::string wire = line + "\r\n";
    if (write(to_exim_, wire.data(), wire.size()) != static_cast<ssize_t>(wire.size())) return {};
    return read_reply(timeout);
}

int EximSession::quit(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) return -1;
    // Closing our end right after QUIT spares Exim's wait (about 200 ms) for the client to hang
    // up first.
    if (to_exim_ >= 0) {
        std::string wire = "QUIT\r\n";
        [[maybe_unused]] ssize_t n = write(to_exim_, wire.data(), wire.size());
        close(to_exim_);
        to_exim_ = -1;
    }
    read_reply(timeout);
    auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
        pid_t r = waitpid(pid_, &status, WNOHANG);
        if (r == pid_) {
            pid_ = -1;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
    return -1;
}

std::string EximSession::stderr_text() const {
    std::ifstream in(stderr_path_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

}  // namespace calloutd::test
