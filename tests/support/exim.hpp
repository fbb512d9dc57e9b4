// The real Exim for end-to-end tests: unpacked from Debian's archive on first use, driven one
// SMTP session at a time in host-checking mode (`exim -C CONFIG -bh IP`), which runs the ACLs
// exactly as for a remote client but never delivers.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace calloutd::test {

// Path of a wrapper that runs the unpacked Exim ("" with the reason in `why` on failure).
// Unpacks once into the build tree (tests/support/exim-unpack.sh); later calls are cheap.
std::string exim_binary(std::string& why);

// One SMTP session of `exim -C config -D... -bh client_ip`, command by command. Exim's debug
// output (every ACL step, readsocket's result) goes to stderr_path() for failure messages.
class EximSession {
  public:
    EximSession(const std::string& exim, const std::string& config,
                const std::vector<std::string>& defines, const std::string& client_ip,
                const std::string& stderr_path);
    ~EximSession();  // kills Exim by PID if it is still running
    EximSession(const EximSession&) = delete;
    EximSession& operator=(const EximSession&) = delete;

    bool started() const { return pid_ > 0; }
    // The 220 greeting (or whatever Exim said first).
    std::string banner(std::chrono::milliseconds timeout = std::chrono::seconds(10));
    // Sends `line` + CRLF and returns the complete reply, lines joined by '\n' without CRLF
    // ("" on timeout or end of output).
    std::string command(const std::string& line,
                        std::chrono::milliseconds timeout = std::chrono::seconds(10));
    // QUIT, then waits for Exim to exit; its exit code (-1 if it had to be killed).
    int quit(std::chrono::milliseconds timeout = std::chrono::seconds(5));
    std::string stderr_text() const;

  private:
    std::string read_reply(std::chrono::milliseconds timeout);
    bool read_line(std::string& line, std::chrono::steady_clock::time_point deadline);

    pid_t pid_ = -1;
    int to_exim_ = -1;
    int from_exim_ = -1;
    std::string buffer_;
    std::string stderr_path_;
};

// The three-digit code of a reply ("250").
inline std::string reply_code(const std::string& reply) {
    return reply.size() >= 3 ? reply.substr(0, 3) : reply;
}

}  // namespace calloutd::test
