// Runs the real calloutd binary for integration tests: own temp dir, config, log; stop by PID.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace calloutd::test {

class DaemonProcess {
  public:
    // Writes `config_toml` (with "@DIR@" replaced by a fresh temp dir) and starts
    // `calloutd run -c DIR/calloutd.toml` (the built daemon unless `binary` names another);
    // waits until it logged "started".
    DaemonProcess(const std::string& tag, const std::string& config_toml,
                  const std::string& binary = "");
    ~DaemonProcess();
    DaemonProcess(const DaemonProcess&) = delete;
    DaemonProcess& operator=(const DaemonProcess&) = delete;

    bool started() const { return started_; }
    pid_t pid() const { return pid_; }
    const std::string& dir() const { return dir_; }
    std::string config_path() const { return dir_ + "/calloutd.toml"; }
    // Bound listeners as logged, in order ("inet:127.0.0.1:41234", "unix:/tmp/...").
    std::vector<std::string> listeners() const;
    uint16_t tcp_port(size_t index = 0) const;

    void write_config(const std::string& config_toml) const;
    void signal(int signum) const;
    // Waits for the process to exit; its exit code, or -1 on timeout (process left running).
    int wait_exit(std::chrono::milliseconds timeout);
    bool running();
    std::string log() const;
    // Waits until the log contains `needle`.
    bool wait_for_log(const std::string& needle, std::chrono::milliseconds timeout) const;

  private:
    std::string dir_;
    pid_t pid_ = -1;
    bool started_ = false;
    bool exited_ = false;
};

}  // namespace calloutd::test
