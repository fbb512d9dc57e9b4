// The client end of the control socket, for `calloutd status` and `calloutd cache`: blocking.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "daemon/control_protocol.hpp"

namespace calloutd {

// Sends one request to the daemon listening on `socket_path` and waits for its reply; nullopt
// with the reason in `error` when the socket cannot be reached or no reply comes in time.
std::optional<ControlReply> ask_daemon(const std::string& socket_path,
                                       const ControlRequest& request,
                                       std::chrono::milliseconds timeout, std::string& error);

}  // namespace calloutd
