// Test zones and daemon configuration for callout tests through the daemon and `calloutd probe`.
#include "support/callout_world.hpp"

namespace calloutd::test {

DnsmasqZones callout_test_zones(const std::string& servfail_upstream) {
    using namespace world;
    DnsmasqZones z;
    z.local_domains = {"test"};
    z.mx = {
        {"pf.test", "mx.pf.test", 10},
        {"catchall.test", "mx.catchall.test", 10},
        {"greylist.test", "mx.greylist.test", 10},
        {"nobounce.test", "mx.nobounce.test", 10},
        {"tarpit.test", "mx.tarpit.test", 10},
        {"refused.test", "mx.refused.test", 10},
        {"backup.test", "mx1.backup.test", 10},
        {"backup.test", "mx2.backup.test", 20},
        {"shared.test", "mx.shared.test", 10},
        {"guarded.test", "mx.guarded.test", 10},
        {"inject.test", "mx.inject.test", 10},
        {"nullmx.test", ".", 0},
    };
    z.hosts = {
        {"mx.pf.test", {kPostfixIp}},          {"mx.catchall.test", {kCatchAllIp}},
        {"mx.greylist.test", {kGreylistIp}},   {"mx.nobounce.test", {kNullSenderIp}},
        {"mx.tarpit.test", {kTarpitIp}},       {"mx.refused.test", {kRefusedIp}},
        {"mx1.backup.test", {kDeadPrimaryIp}}, {"mx2.backup.test", {kBackupIp}},
        {"mx.shared.test", {kSharedIp}},       {"mx.guarded.test", {kLoopbackIp}},
        {"mx.inject.test", {kInjectIp}},
    };
    z.forwards = {{"servfail.test", servfail_upstream}};
    return z;
}

std::string callout_config(const CalloutConfig& c) {
    return "[server]\n"
           "listen = [\"inet:127.0.0.1:0\"]\n"
           "control_socket = \"" +
           c.control_socket +
           "\"\n"
           "reply_timeout = \"" +
           c.reply_timeout + "\"\n" + c.server_extra +
           "\n[log]\n"
           "level = \"" +
           c.log_level +
           "\"\n"
           "[dns]\n"
           "servers = [\"" +
           c.dns_server +
           "\"]\n"
           "timeout = \"1s\"\n"
           "tries = 2\n"
           "canary = \"" +
           c.dns_canary +
           "\"\n"
           "[callout]\n"
           "port = " +
           std::to_string(c.smtp_port) +
           "\n"
           "helo_name = \"probe.calloutd.test\"\n"
           "allow_networks = " +
           (c.allow_loopback ? "[\"127.0.0.0/8\"]" : "[]") +
           "\n"
           "connect_timeout = \"" +
           c.connect_timeout +
           "\"\n"
           "command_timeout = \"" +
           c.command_timeout +
           "\"\n"
           "probe_timeout = \"" +
           c.probe_timeout + "\"\n" + c.sections;
}

}  // namespace calloutd::test
