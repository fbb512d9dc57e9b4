// Starts, probes and stops a private redis-server; blocking hiredis for set-up commands.
#include "support/redis_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "support/paths.hpp"
#include "support/ports.hpp"

namespace calloutd::test {

namespace {

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

struct ContextFree {
    void operator()(redisContext* c) const { redisFree(c); }
};
struct ReplyFree {
    void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextFree>;
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

}  // namespace

RedisServer::RedisServer(RedisServerOptions options)
    : options_(std::move(options)), dir_(make_temp_dir("redis")) {
    std::string why;
    // The free port may be taken between picking and binding; try a few.
    for (int attempt = 0; attempt < 5; ++attempt) {
        port_ = pick_restartable_port(false);
        if (start_once(why)) return;
    }
    std::string text = log();
    stop();
    std::filesystem::remove_all(dir_);
    throw std::runtime_error("redis-server did not start: " + why + "\n" + text);
}

RedisServer::~RedisServer() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
}

std::string RedisServer::url(int db) const {
    std::string auth = options_.password.empty() ? "" : ":" + options_.password + "@";
    return "redis://" + auth + "127.0.0.1:" + std::to_string(port_) + "/" + std::to_string(db);
}

std::string RedisServer::unix_url(int db) const {
    std::string out = "unix:" + unix_path() + "?db=" + std::to_string(db);
    if (!options_.password.empty()) out += "&password=" + options_.password;
    return out;
}

std::string RedisServer::log() const {
    return read_file(dir_ + "/redis.log") + read_file(dir_ + "/redis.stderr");
}

bool RedisServer::start_once(std::string& why) {
    std::vector<std::string> args = {
        "redis-server",
        "--port",
        std::to_string(port_),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        dir_,
        "--logfile",
        dir_ + "/redis.log",
    };
    if (options_.unix_socket) {
        args.insert(args.end(), {"--unixsocket", unix_path(), "--unixsocketperm", "700"});
    }
    if (!options_.password.empty()) args.insert(args.end(), {"--requirepass", options_.password});
    if (options_.debug_command) args.insert(args.end(), {"--enable-debug-command", "yes"});
    if (options_.replica_of != 0) {
        args.insert(args.end(), {"--replicaof", "127.0.0.1", std::to_string(options_.replica_of)});
    }
    if (!options_.sentinel_master_name.empty()) {
        // A sentinel rewrites its config file (it must be writable), so it is written afresh.
        std::string conf = dir_ + "/sentinel.conf";
        std::ofstream out(conf, std::ios::trunc);
        const std::string& name = options_.sentinel_master_name;
        out << "sentinel monitor " << name << " 127.0.0.1 " << options_.sentinel_master_port
            << " 1\n"
            << "sentinel down-after-milliseconds " << name << " 500\n"
            << "sentinel failover-timeout " << name << " 2000\n";
        out.close();
        args.insert(args.begin() + 1, conf);
        args.insert(args.end(), {"--sentinel"});
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::string stderr_path = dir_ + "/redis.stderr";
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("RedisServer: fork failed");
    if (pid_ == 0) {
        // If the test binary dies without its destructors, so does redis-server.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execvp("redis-server", argv.data());
        _exit(127);
    }
    paused_ = false;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
        int status = 0;
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            why = "redis-server exited during start-up (status " + std::to_string(status) + ")";
            return false;
        }
        if (answers()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    why = "redis-server did not answer PING within 10 s";
    stop();
    return false;
}

bool RedisServer::answers() const {
    RedisReply r = command({"PING"});
    return r.is_status() && r.text() == "PONG";
}

RedisReply RedisServer::command(const std::vector<std::string>& args, int db) const {
    timeval tv{1, 0};
    ContextPtr c(redisConnectWithTimeout("127.0.0.1", port_, tv));
    if (!c || c->err) return RedisReply::error(c ? c->errstr : "out of memory");
    redisSetTimeout(c.get(), tv);
    auto run = [&](const std::vector<std::string>& a) {
        std::vector<const char*> argv;
        std::vector<std::size_t> lens;
        for (const auto& s : a) {
            argv.push_back(s.data());
            lens.push_back(s.size());
        }
        ReplyPtr reply(static_cast<redisReply*>(
            redisCommandArgv(c.get(), static_cast<int>(a.size()), argv.data(), lens.data())));
        if (!reply) return RedisReply::error(c->errstr);
        return RedisReply::from_hiredis(reply.get());
    };
    if (!options_.password.empty()) {
        RedisReply auth = run({"AUTH", options_.password});
        if (auth.is_error()) return auth;
    }
    if (db != 0) {
        RedisReply sel = run({"SELECT", std::to_string(db)});
        if (sel.is_error()) return sel;
    }
    return run(args);
}

void RedisServer::debug_sleep(std::chrono::milliseconds how_long) const {
    timeval tv{1, 0};
    ContextPtr c(redisConnectWithTimeout("127.0.0.1", port_, tv));
    if (!c || c->err) return;
    if (!options_.password.empty()) {
        ReplyPtr auth(
            static_cast<redisReply*>(redisCommand(c.get(), "AUTH %s", options_.password.c_str())));
    }
    // Sent without waiting for its reply, which only comes after the sleep.
    std::string seconds = std::to_string(static_cast<double>(how_long.count()) / 1000.0);
    redisAppendCommand(c.get(), "DEBUG SLEEP %s", seconds.c_str());
    int done = 0;
    while (done == 0) {
        if (redisBufferWrite(c.get(), &done) != REDIS_OK) return;
    }
    // Wait until the server is busy sleeping (a PING from elsewhere times out), so the caller
    // knows the stall has begun when this returns.
    for (int attempt = 0; attempt < 100; ++attempt) {
        timeval short_tv{0, 100000};
        ContextPtr probe(redisConnectWithTimeout("127.0.0.1", port_, short_tv));
        if (!probe || probe->err) break;
        redisSetTimeout(probe.get(), short_tv);
        ReplyPtr pong(static_cast<redisReply*>(redisCommand(probe.get(), "PING")));
        if (!pong) break;  // no answer: asleep
    }
}

void RedisServer::stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    ::kill(pid_, SIGCONT);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > deadline) {
            ::kill(pid_, SIGKILL);
            waitpid(pid_, &status, 0);
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    pid_ = -1;
    paused_ = false;
}

void RedisServer::kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    paused_ = false;
}

void RedisServer::pause() {
    if (pid_ > 0 && !paused_) {
        ::kill(pid_, SIGSTOP);
        paused_ = true;
    }
}

void RedisServer::resume() {
    if (pid_ > 0 && paused_) {
        ::kill(pid_, SIGCONT);
        paused_ = false;
    }
}

void RedisServer::restart() {
    stop();
    std::string why;
    // Same port on purpose (clients reconnect to it); SO_REUSEADDR makes TIME_WAIT harmless,
    // but another process could have taken the port meanwhile, so retry briefly.
    for (int attempt = 0; attempt < 20; ++attempt) {
        if (start_once(why)) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    throw std::runtime_error("redis-server did not restart on port " + std::to_string(port_) +
                             ": " + why + "\n" + log());
}

}  // namespace calloutd::test
