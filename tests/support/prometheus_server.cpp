// Runs /usr/bin/prometheus with a generated prometheus.yml in a temp dir.
#include "support/prometheus_server.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "support/http_client.hpp"
#include "support/paths.hpp"

namespace calloutd::test {

PrometheusServer::PrometheusServer(const std::string& target, std::chrono::milliseconds interval)
    : dir_(make_temp_dir("prometheus")), port_(free_loopback_port()) {
    std::string seconds = std::to_string(interval.count()) + "ms";
    std::ofstream(dir_ + "/prometheus.yml") << "global:\n"
                                               "  scrape_interval: "
                                            << seconds << "\n  evaluation_interval: " << seconds
                                            << "\nscrape_configs:\n"
                                               "  - job_name: calloutd\n"
                                               "    static_configs:\n"
                                               "      - targets: [\""
                                            << target << "\"]\n";
    std::string listen = "127.0.0.1:" + std::to_string(port_);
    pid_ = fork();
    if (pid_ == 0) {
        int fd = ::open((dir_ + "/prometheus.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        std::string config = "--config.file=" + dir_ + "/prometheus.yml";
        std::string data = "--storage.tsdb.path=" + dir_ + "/data";
        std::string web = "--web.listen-address=" + listen;
        execl("/usr/bin/prometheus", "prometheus", config.c_str(), data.c_str(), web.c_str(),
              static_cast<char*>(nullptr));
        _exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
        auto r = http_get("127.0.0.1", port_, "/-/ready", std::chrono::seconds(2));
        if (r && r->status == 200) {
            started_ = true;
            break;
        }
        if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
            pid_ = -1;
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

PrometheusServer::~PrometheusServer() {
    if (pid_ > 0) {
        ::kill(pid_, SIGTERM);
        for (int i = 0; i < 100 && waitpid(pid_, nullptr, WNOHANG) != pid_; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            if (i == 99) {
                ::kill(pid_, SIGKILL);
                waitpid(pid_, nullptr, 0);
            }
        }
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
}

std::optional<std::string> PrometheusServer::query(const std::string& expr) const {
    auto r = http_get("127.0.0.1", port_, "/api/v1/query?query=" + url_encode(expr));
    if (!r || r->status != 200) return std::nullopt;
    return r->body;
}

std::string PrometheusServer::log() const {
    std::ifstream in(dir_ + "/prometheus.log");
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

}  // namespace calloutd::test
