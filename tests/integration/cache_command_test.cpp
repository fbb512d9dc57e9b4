// `calloutd cache get|del|flush TARGET -c FILE` against a real redis-server holding verdicts that
// a running calloutd stored there (dnsmasq zones, fake SMTP targets).
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "storage/redis_schema.hpp"
#include "support/callout_world.hpp"
#include "support/command.hpp"
#include "support/daemon_process.hpp"
#include "support/dnsmasq.hpp"
#include "support/fake_smtp.hpp"
#include "support/paths.hpp"
#include "support/policy_client.hpp"
#include "support/redis_server.hpp"

namespace calloutd::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kCmdIp = "127.0.0.75";    // cmd.test: knows alice only
constexpr const char* kCatchIp = "127.0.0.76";  // catch.test: accepts every address

DnsmasqZones zones() {
    DnsmasqZones z;
    z.local_domains = {"test"};
    z.mx = {{"cmd.test", "mx.cmd.test", 10}, {"catch.test", "mx.catch.test", 10}};
    z.hosts = {{"mx.cmd.test", {kCmdIp}}, {"mx.catch.test", {kCatchIp}}};
    return z;
}

class CacheCommand : public ::testing::Test {
  protected:
    void SetUp() override {
        dnsmasq_ = std::make_unique<Dnsmasq>(zones());
        FakeSmtpScript knows_alice;
        knows_alice.recipients["alice"] = "250 2.1.5 ok";
        FakeSmtpScript catch_all;
        catch_all.accept_all = true;
        cmd_ = std::make_unique<FakeSmtpServer>(knows_alice, kCmdIp);
        ASSERT_TRUE(cmd_->ok()) << cmd_->error();
        catch_ = std::make_unique<FakeSmtpServer>(catch_all, kCatchIp, cmd_->port());
        ASSERT_TRUE(catch_->ok()) << catch_->error();
        CalloutConfig c;
        c.dns_server = dnsmasq_->server();  // never the system resolver
        c.smtp_port = cmd_->port();
        c.log_level = "info";
        c.sections = "[redis]\nurl = \"" + redis_.url() + "\"\n";
        daemon_ = std::make_unique<DaemonProcess>("cache-cmd", callout_config(c));
        ASSERT_TRUE(daemon_->started()) << daemon_->log();
        ASSERT_TRUE(daemon_->wait_for_log("redis link=commands state=up", 5s)) << daemon_->log();
    }
    void TearDown() override {
        if (HasFailure() && daemon_) std::cerr << "--- calloutd log ---\n" << daemon_->log();
        if (daemon_ && daemon_->running()) {
            daemon_->signal(SIGTERM);
            daemon_->wait_exit(10s);
        }
        if (cmd_) cmd_->stop();
        if (catch_) catch_->stop();
    }

    std::optional<std::string> ask(const std::string& sender) {
        PolicyClient c = PolicyClient::inet("127.0.0.1", daemon_->tcp_port());
        std::string id = "Q" + std::to_string(++requests_);
        c.send(policy_request(sender, "198.51.100.7", id, id));
        return c.read_action(5s);
    }
    CommandResult cache(const std::string& action, const std::string& target,
                        const std::string& config = "") {
        auto r = run_command({daemon_binary(), "cache", action, target, "-c",
                              config.empty() ? daemon_->config_path() : config},
                             15s);
        EXPECT_FALSE(r.timed_out) << action << " " << target;
        return r;
    }
    long long exists(const std::string& key) {
        return redis_.command({"EXISTS", key}).as_integer();
    }

    RedisServer redis_;
    std::unique_ptr<Dnsmasq> dnsmasq_;
    std::unique_ptr<FakeSmtpServer> cmd_;
    std::unique_ptr<FakeSmtpServer> catch_;
    std::unique_ptr<DaemonProcess> daemon_;
    int requests_ = 0;
};

TEST_F(CacheCommand, GetPrintsTheAddressVerdictAndTheDomainFact) {
    ASSERT_EQ(ask("alice@cmd.test"), "DUNNO");
    ASSERT_EQ(ask("anyone@catch.test"), "DUNNO");

    auto r = cache("get", "alice@CMD.Test");  // the domain is normalised as in requests
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("address alice@cmd.test: class=valid reason="), std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find(" probed_at=20"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(" ttl="), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(" reply=\"250 2.1.5 ok\""), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("domain cmd.test: not cached"), std::string::npos) << r.out;
    std::cout << "[ output   ] " << r.out;

    r = cache("get", "catch.test");
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("domain catch.test: class=accept_all"), std::string::npos) << r.out;
    r = cache("get", "somebody@catch.test");  // answered by the domain fact
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("address somebody@catch.test: not cached"), std::string::npos) << r.out;

    r = cache("get", "nobody@cmd.test");
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_NE(r.out.find("address nobody@cmd.test: not cached"), std::string::npos) << r.out;
}

TEST_F(CacheCommand, DelRemovesAWrongVerdictSoTheNextRequestProbesAgain) {
    ASSERT_TRUE(ask("ghost@cmd.test")->starts_with("REJECT 5.1.7"));
    // The daemon hears its own "stored" message and drops its near copy; only a read after that
    // puts the verdict into the near-cache for redis.near_cache_ttl.
    std::this_thread::sleep_for(100ms);
    ASSERT_TRUE(ask("ghost@cmd.test")->starts_with("REJECT 5.1.7"));  // now in the near-cache
    ASSERT_EQ(cmd_->connections_accepted(), 1u);

    auto r = cache("del", "ghost@cmd.test");
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("address ghost@cmd.test: deleted"), std::string::npos) << r.out;
    // The daemon's local copy (what it answers from while Redis is down) goes too, through its
    // control socket.
    EXPECT_NE(r.out.find("daemon: address ghost@cmd.test: deleted"), std::string::npos) << r.out;
    EXPECT_EQ(exists(redis_schema::address_key("cmd.test", "ghost@cmd.test")), 0);
    // The deletion is announced, so the daemon drops its near-cache entry at once.
    std::this_thread::sleep_for(100ms);
    ASSERT_TRUE(ask("ghost@cmd.test")->starts_with("REJECT 5.1.7"));
    EXPECT_EQ(cmd_->connections_accepted(), 2u) << "the deleted verdict was still served";

    r = cache("del", "never@cmd.test");
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_NE(r.out.find("not cached"), std::string::npos) << r.out;

    ASSERT_EQ(ask("x@catch.test"), "DUNNO");
    r = cache("del", "catch.test");
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(exists(redis_schema::domain_fact_key("catch.test")), 0);
}

TEST_F(CacheCommand, FlushDeletesEveryVerdictOfADomainAndNothingElse) {
    ASSERT_EQ(ask("alice@cmd.test"), "DUNNO");
    ASSERT_TRUE(ask("ghost@cmd.test")->starts_with("REJECT"));
    ASSERT_EQ(ask("x@catch.test"), "DUNNO");
    // Enough keys for several SCAN pages, and neighbours that must survive.
    std::vector<std::string> mset = {"MSET"};
    for (int i = 0; i < 2500; ++i) {
        std::string a = "bulk" + std::to_string(i) + "@cmd.test";
        mset.push_back(redis_schema::address_key("cmd.test", a));
        mset.push_back("v1|invalid|0||x|");
    }
    const std::string neighbour =
        redis_schema::address_key("cmd.test.example", "a@cmd.test.example");
    mset.push_back(neighbour);
    mset.push_back("v1|invalid|0||x|");
    ASSERT_EQ(redis_.command(mset).text(), "OK");

    auto r = cache("flush", "cmd.test");
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("domain cmd.test: deleted 2502 address verdict(s), no domain fact"),
              std::string::npos)
        << r.out;
    EXPECT_EQ(exists(redis_schema::address_key("cmd.test", "alice@cmd.test")), 0);
    EXPECT_EQ(exists(neighbour), 1);
    EXPECT_EQ(exists(redis_schema::domain_fact_key("catch.test")), 1);

    r = cache("flush", "cmd.test");
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    r = cache("flush", "catch.test");
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("deleted 0 address verdict(s) and the domain fact"), std::string::npos)
        << r.out;
    r = cache("flush", "alice@cmd.test");
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
}

TEST_F(CacheCommand, ErrorsHaveTheirOwnExitCodes) {
    auto r = cache("get", "bad domain!");
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;

    std::string dir = make_temp_dir("cache-cmd-memory");
    CalloutConfig c;
    c.dns_server = dnsmasq_->server();
    c.smtp_port = cmd_->port();
    // Memory mode goes to the daemon's control socket; nobody listens on this one.
    std::string memory = callout_config(c);
    memory.replace(memory.find("@DIR@"), 5, dir);
    std::ofstream(dir + "/memory.toml") << memory;
    r = cache("get", "alice@cmd.test", dir + "/memory.toml");
    EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
    EXPECT_NE(r.err.find("cannot connect to the control socket"), std::string::npos) << r.err;
    // Neither Redis nor a control socket: nothing to ask.
    std::ofstream(dir + "/nothing.toml") << "[server]\ncontrol_socket = \"\"\n";
    r = cache("get", "alice@cmd.test", dir + "/nothing.toml");
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    EXPECT_NE(r.err.find("redis.url"), std::string::npos) << r.err;
    std::ofstream(dir + "/broken.toml") << "[redis]\nurl = 5\n";
    r = cache("get", "alice@cmd.test", dir + "/broken.toml");
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    std::filesystem::remove_all(dir);

    redis_.stop();
    auto start = std::chrono::steady_clock::now();
    r = cache("get", "alice@cmd.test");
    EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
    EXPECT_NE(r.err.find("redis: "), std::string::npos) << r.err;
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

}  // namespace
}  // namespace calloutd::test
