// Writes a private Postfix configuration, starts it with "postfix -c DIR start", waits for the
// banner, and stops it by the master PID.
#include "support/postfix_target.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "support/paths.hpp"

namespace calloutd::test {

namespace {

using Clock = std::chrono::steady_clock;

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Postfix will not read a table or main.cf until it is a second old (dict_load_file dozes in
// 300 ms steps, so a file written just now costs ~2 s per start): backdate what we write.
void write_file(const std::string& path, const std::string& text) {
    {
        std::ofstream out(path, std::ios::trunc);
        out << text;
        if (!out) throw std::runtime_error("PostfixTarget: cannot write " + path);
    }
    timespec times[2] = {{time(nullptr) - 10, 0}, {time(nullptr) - 10, 0}};
    utimensat(AT_FDCWD, path.c_str(), times, 0);
}

std::string postfix_binary() {
    return access("/usr/sbin/postfix", X_OK) == 0 ? "/usr/sbin/postfix" : "postfix";
}

// Runs argv to completion with stdout and stderr appended to log_path; returns the exit code.
int run_command(const std::vector<std::string>& args, const std::string& log_path) {
    std::vector<std::string> copy = args;
    std::vector<char*> argv;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execvp(argv[0], argv.data());
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool fill_sockaddr(const std::string& address, std::uint16_t port, sockaddr_storage& ss,
                   socklen_t& len) {
    ss = {};
    auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
    if (inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        len = sizeof *v4;
        return true;
    }
    if (inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        len = sizeof *v6;
        return true;
    }
    return false;
}

std::uint16_t pick_free_port(const std::string& address) {
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (!fill_sockaddr(address, 0, ss, len)) {
        throw std::runtime_error("PostfixTarget: not an IP address: " + address);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    std::uint16_t port = 0;
    if (fd >= 0 && bind(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
        port = ntohs(ss.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                                             : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
    }
    if (fd >= 0) close(fd);
    if (port == 0) throw std::runtime_error("PostfixTarget: no free port on " + address);
    return port;
}

// True once a "220" banner line can be read from address:port.
bool banner_ready(const std::string& address, std::uint16_t port) {
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (!fill_sockaddr(address, port, ss, len)) return false;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    timeval tv{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    bool ok = false;
    if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0) {
        std::string line;
        char c = 0;
        while (line.size() < 512 && recv(fd, &c, 1, 0) == 1 && c != '\n') line.push_back(c);
        ok = line.rfind("220", 0) == 0;
        const char quit[] = "QUIT\r\n";
        send(fd, quit, sizeof quit - 1, MSG_NOSIGNAL);
    }
    close(fd);
    return ok;
}

// A daemonised master is re-parented to PID 1, which in a container may never reap it. As a
// child subreaper this process inherits it instead, and stop() can waitpid() it for certain.
void become_subreaper_once() {
    static const bool done = prctl(PR_SET_CHILD_SUBREAPER, 1) == 0;
    (void)done;
}

// Gone means reaped by us, absent from /proc, or a zombie someone else must reap.
bool process_gone(pid_t pid) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return true;
    if (r == 0) return false;  // our child, still running
    std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    if (stat.empty()) return true;
    auto close_paren = stat.rfind(')');
    return close_paren != std::string::npos && close_paren + 2 < stat.size() &&
           stat[close_paren + 2] == 'Z';
}

// PIDs whose parent is pid, from /proc.
std::vector<pid_t> children_of(pid_t pid) {
    std::vector<pid_t> out;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
        const std::string name = entry.path().filename().string();
        if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
        std::string stat = read_file(entry.path().string() + "/stat");
        auto close_paren = stat.rfind(')');
        if (close_paren == std::string::npos) continue;
        std::istringstream rest(stat.substr(close_paren + 2));
        char state = 0;
        pid_t ppid = 0;
        rest >> state >> ppid;
        if (ppid == pid) out.push_back(static_cast<pid_t>(std::stoi(name)));
    }
    return out;
}

}  // namespace

PostfixTarget::PostfixTarget(PostfixTargetOptions options)
    : options_(std::move(options)), dir_(make_temp_dir("postfix")) {
    if (geteuid() != 0) {
        std::filesystem::remove_all(dir_);
        throw std::runtime_error("PostfixTarget needs root (Postfix's master runs as root)");
    }
    become_subreaper_once();
    if (!options_.tls_security_level.empty()) {
        std::filesystem::create_directories(dir_ + "/etc");
        try {
            certificate_ = make_self_signed_certificate(dir_ + "/etc", "smtpd", options_.hostname);
        } catch (...) {
            std::filesystem::remove_all(dir_);
            throw;
        }
    }
    bool pick_port = options_.port == 0;
    std::string why;
    for (int attempt = 0; attempt < 3; ++attempt) {
        if (pick_port) options_.port = pick_free_port(options_.address);
        if (start_once(why)) return;
        stop();
        if (!pick_port) break;
    }
    std::string log = maillog() + read_file(dir_ + "/postfix-command.log");
    std::filesystem::remove_all(dir_);
    throw std::runtime_error("Postfix target did not start: " + why + "\n" + log);
}

PostfixTarget::~PostfixTarget() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
}

std::string PostfixTarget::maillog() const {
    return read_file(maillog_path());
}

// main.cf, master.cf and the user table. Paths must be readable by the postfix user, and
// data_directory must belong to it; the queue directory stays root's (postfix-script checks).
void PostfixTarget::write_config() const {
    namespace fs = std::filesystem;
    fs::create_directories(dir_ + "/etc");
    fs::create_directories(dir_ + "/spool");
    fs::create_directories(dir_ + "/data");
    chmod(dir_.c_str(), 0755);
    passwd* pw = getpwnam("postfix");
    if (pw == nullptr) throw std::runtime_error("PostfixTarget: no 'postfix' user");
    if (chown((dir_ + "/data").c_str(), pw->pw_uid, pw->pw_gid) != 0) {
        throw std::runtime_error("PostfixTarget: cannot chown data_directory");
    }

    bool v6 = options_.address.find(':') != std::string::npos;
    std::ostringstream main;
    main << "# Private calloutd test target; generated by tests/support/postfix_target.cpp\n"
         << "compatibility_level = 3.6\n"
         << "queue_directory = " << dir_ << "/spool\n"
         << "data_directory = " << dir_ << "/data\n"
         << "mail_owner = postfix\n"
         << "setgid_group = postdrop\n"
         << "myhostname = " << options_.hostname << "\n"
         << "mydomain = " << options_.domain << "\n"
         << "myorigin = $mydomain\n"
         << "mydestination = " << options_.domain << "\n"
         << "inet_interfaces = loopback-only\n"
         << "inet_protocols = " << (v6 ? "all" : "ipv4") << "\n"
         << "mynetworks = " << options_.mynetworks << "\n"
         << "local_recipient_maps = texthash:" << dir_ << "/etc/users\n"
         << "unknown_local_recipient_reject_code = 550\n"
         << "smtpd_relay_restrictions = reject_unauth_destination\n"
         << "local_transport = discard:\n"
         << "default_transport = discard:\n"
         << "alias_maps =\n"
         << "alias_database =\n"
         << "maillog_file_prefixes = " << dir_ << "\n"
         << "maillog_file = " << maillog_path() << "\n"
         << "smtputf8_enable = " << (options_.smtputf8 ? "yes" : "no") << "\n"
         << "biff = no\n"
         << "smtpd_peername_lookup = no\n"
         << "smtpd_banner = $myhostname ESMTP calloutd-test\n";
    if (!options_.tls_security_level.empty()) {
        main << "smtpd_tls_security_level = " << options_.tls_security_level << "\n"
             << "smtpd_tls_cert_file = " << certificate_.cert_file << "\n"
             << "smtpd_tls_key_file = " << certificate_.key_file << "\n"
             << "smtpd_tls_loglevel = 1\n";
    }
    for (const auto& line : options_.extra_main_cf) main << line << "\n";
    write_file(dir_ + "/etc/main.cf", main.str());

    std::string listen = v6 ? "[" + options_.address + "]" : options_.address;
    std::ostringstream master;
    std::string listen_port = listen + ":" + std::to_string(options_.port);
    std::string services = options_.smtpd_services.empty() ? "@LISTEN@ inet n - n - - smtpd\n"
                                                           : options_.smtpd_services;
    for (size_t pos = 0; (pos = services.find("@LISTEN@", pos)) != std::string::npos;) {
        services.replace(pos, 8, listen_port);
        pos += listen_port.size();
    }
    if (!services.ends_with('\n')) services += '\n';
    master << services << "cleanup   unix  n - n - 0 cleanup\n"
           << "qmgr      unix  n - n 300 1 qmgr\n"
           << "rewrite   unix  - - n - - trivial-rewrite\n"
           << "bounce    unix  - - n - 0 bounce\n"
           << "defer     unix  - - n - 0 bounce\n"
           << "trace     unix  - - n - 0 bounce\n"
           << "verify    unix  - - n - 1 verify\n"
           << "flush     unix  n - n 1000? 0 flush\n"
           << "proxymap  unix  - - n - - proxymap\n"
           << "showq     unix  n - n - - showq\n"
           << "error     unix  - - n - - error\n"
           << "retry     unix  - - n - - error\n"
           << "discard   unix  - - n - - discard\n"
           << "anvil     unix  - - n - 1 anvil\n"
           << "scache    unix  - - n - 1 scache\n"
           // maillog_file is written by postlogd; without this service nothing is logged.
           << "postlog   unix-dgram n - n - 1 postlogd\n"
           // smtpd asks tlsmgr for PRNG seeds and its session cache policy.
           << "tlsmgr    unix  - - n 1000? 1 tlsmgr\n";
    write_file(dir_ + "/etc/master.cf", master.str());

    std::string users;
    for (const auto& u : options_.users) users += u + " OK\n";
    write_file(dir_ + "/etc/users", users);
}

bool PostfixTarget::start_once(std::string& why) {
    write_config();
    std::filesystem::remove(dir_ + "/spool/pid/master.pid");
    int rc = run_command({postfix_binary(), "-c", dir_ + "/etc", "start"},
                         dir_ + "/postfix-command.log");
    std::string pid_text = read_file(dir_ + "/spool/pid/master.pid");
    master_pid_ = pid_text.empty() ? -1 : std::atoi(pid_text.c_str());
    if (rc != 0) {
        why = "postfix start exited with " + std::to_string(rc);
        return false;
    }
    if (master_pid_ <= 0) {
        why = "no master.pid after postfix start";
        return false;
    }
    auto deadline = Clock::now() + std::chrono::seconds(15);
    while (Clock::now() < deadline) {
        if (banner_ready(options_.address, options_.port)) return true;
        if (process_gone(master_pid_)) {
            why = "the master exited";
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    why = "no 220 banner on " + options_.address + ":" + std::to_string(options_.port);
    return false;
}

// The master stops its own children (smtpd, qmgr, postlogd ...); we note their PIDs first so
// we can wait for them too and, being their subreaper, reap them rather than leave zombies.
void PostfixTarget::stop() {
    if (master_pid_ <= 0) return;
    std::vector<pid_t> children = children_of(master_pid_);
    run_command({postfix_binary(), "-c", dir_ + "/etc", "stop"}, dir_ + "/postfix-command.log");
    auto wait_gone = [](pid_t pid, std::chrono::seconds limit) {
        auto deadline = Clock::now() + limit;
        while (!process_gone(pid)) {
            if (Clock::now() > deadline) return false;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        return true;
    };
    if (!wait_gone(master_pid_, std::chrono::seconds(10))) {
        kill(master_pid_, SIGKILL);  // its children exit when the master's status pipe closes
        wait_gone(master_pid_, std::chrono::seconds(5));
    }
    for (pid_t child : children) {
        if (!wait_gone(child, std::chrono::seconds(5))) {
            kill(child, SIGKILL);
            wait_gone(child, std::chrono::seconds(2));
        }
    }
    master_pid_ = -1;
}

}  // namespace calloutd::test
