// A blocking policy-protocol client for tests: connect, send requests, read replies.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace calloutd::test {

class PolicyClient {
  public:
    static PolicyClient inet(const std::string& ip, uint16_t port);
    static PolicyClient unix_socket(const std::string& path);
    PolicyClient(PolicyClient&& other) noexcept;
    PolicyClient& operator=(PolicyClient&&) = delete;
    ~PolicyClient();

    bool connected() const { return fd_ >= 0; }
    int fd() const { return fd_; }
    bool send(const std::string& bytes);
    // Half-close: no more requests from us (Exim ${readsocket} does this).
    void shutdown_write();
    // The next reply's action (text after "action="), or nullopt on EOF/timeout/garbage.
    std::optional<std::string> read_action(
        std::chrono::milliseconds timeout = std::chrono::seconds(5));
    // True when the server closed the connection (EOF) within the timeout; unread replies
    // are discarded.
    bool wait_closed(std::chrono::milliseconds timeout = std::chrono::seconds(5));
    // What the server sends after the replies read so far, until it closes ("" when it closed
    // right after them); nullopt if it does not close within the timeout.
    std::optional<std::string> rest_until_closed(std::chrono::milliseconds timeout);
    // Bytes received beyond the replies read so far, after waiting `timeout` for more ("" when
    // the server sent nothing else; the connection stays usable).
    std::string unread(std::chrono::milliseconds timeout);

  private:
    explicit PolicyClient(int fd) : fd_(fd) {}
    int fd_ = -1;
    std::string buffer_;
};

// A request as Postfix sends it, for protocol_state RCPT.
std::string policy_request(const std::string& sender, const std::string& client = "198.51.100.7",
                           const std::string& instance = "", const std::string& queue_id = "");

}  // namespace calloutd::test
