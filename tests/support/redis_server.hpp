// A private redis-server on 127.0.0.1:<free port> (and optionally a unix socket), for tests
// against a real Redis: start, stop, crash, pause (SIGSTOP) and restart on the same port.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "storage/redis_client.hpp"

namespace calloutd::test {

struct RedisServerOptions {
    std::string password;          // --requirepass; empty = none
    bool unix_socket = false;      // also listen on <dir>/redis.sock
    std::uint16_t replica_of = 0;  // --replicaof 127.0.0.1 PORT; 0 = a master
    // Non-empty: run as a sentinel (redis-server CONF --sentinel) monitoring this master name
    // at 127.0.0.1:sentinel_master_port, quorum 1, down after 500 ms, failover timeout 2 s.
    std::string sentinel_master_name = {};
    std::uint16_t sentinel_master_port = 0;
    // --enable-debug-command yes, for debug_sleep() (Redis 7 refuses DEBUG by default).
    bool debug_command = false;
};

// Started in the constructor (throws std::runtime_error with the log if PING does not work
// within 10 s), stopped by PID in the destructor. No persistence: --save "" --appendonly no.
class RedisServer {
  public:
    explicit RedisServer(RedisServerOptions options = {});
    ~RedisServer();
    RedisServer(const RedisServer&) = delete;
    RedisServer& operator=(const RedisServer&) = delete;

    std::uint16_t port() const { return port_; }
    pid_t pid() const { return pid_; }
    bool running() const { return pid_ > 0; }
    // redis://[:PASSWORD@]127.0.0.1:PORT/DB, and unix:PATH[?db=N&password=P].
    std::string url(int db = 0) const;
    std::string unix_url(int db = 0) const;
    std::string unix_path() const { return dir_ + "/redis.sock"; }
    std::string log() const;

    // Idempotent: SIGTERM (and SIGCONT, in case it is paused), SIGKILL after 5 s, waitpid.
    void stop();
    // SIGKILL at once, like a crash: clients see their connections reset.
    void kill();
    // SIGSTOP / SIGCONT: connections stay open, nothing is answered (a hung Redis).
    void pause();
    void resume();
    // Starts again on the same port and socket path (an empty data set: nothing persists).
    void restart();
    // DEBUG SLEEP: the server stays reachable (connections are accepted, commands queue) but
    // answers nothing for `how_long`. Returns once the command is on its way; needs
    // RedisServerOptions::debug_command.
    void debug_sleep(std::chrono::milliseconds how_long) const;

    // A blocking command over its own short-lived connection (test set-up and inspection);
    // a connection or protocol failure is returned as an error reply.
    RedisReply command(const std::vector<std::string>& args, int db = 0) const;

  private:
    bool start_once(std::string& why);
    bool answers() const;

    RedisServerOptions options_;
    std::string dir_;
    std::uint16_t port_ = 0;
    pid_t pid_ = -1;
    bool paused_ = false;
};

}  // namespace calloutd::test
