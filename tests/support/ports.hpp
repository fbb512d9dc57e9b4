// Ports for servers that tests kill and restart on the same port (dnsmasq, redis-server).
#pragma once

#include <cstdint>

namespace calloutd::test {

// A port free on 127.0.0.1 for TCP (and UDP when `udp` is set), chosen at random *below* the
// kernel's ephemeral range (net.ipv4.ip_local_port_range). A port the kernel hands out itself
// may be given to some other test's client socket while the server is down (a test holding
// 10,000 connections takes a third of the ephemeral range), and then the restart fails.
std::uint16_t pick_restartable_port(bool udp);

}  // namespace calloutd::test
