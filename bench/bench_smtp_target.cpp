// SMTP target of the cached-path benchmark: every bench sender exists, nothing else does.
//
// Usage: bench_smtp_target [--senders FILE|COUNT] [--domain D] [--ip IP] [--port P]
// Serves tests/support's FakeSmtpServer on IP:P (default 127.0.0.1, port 0 = a free port) and
// prints "port=N" on stdout. RCPT of a listed sender gets 250; any other address, notably
// calloutd's random "calloutd-check-..." local part, gets "550 5.1.1 no such user", so a probe
// ends `valid` rather than `accept_all`. Runs until SIGTERM/SIGINT, then prints its counters
// on stderr.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>

#include "support/fake_smtp.hpp"

namespace {

std::string lower(std::string s) {
    for (auto& ch : s)
        if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
    return s;
}

}  // namespace

int main(int argc, char** argv) {
    std::string senders = "1000";
    std::string domain = "bench.test";
    std::string ip = "127.0.0.1";
    int port = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string_view a = argv[i];
        if (a == "--senders") {
            senders = argv[i + 1];
        } else if (a == "--domain") {
            domain = argv[i + 1];
        } else if (a == "--ip") {
            ip = argv[i + 1];
        } else if (a == "--port") {
            port = std::atoi(argv[i + 1]);
        } else {
            std::fprintf(stderr, "bench_smtp_target: unknown option %s\n", argv[i]);
            return 2;
        }
    }

    calloutd::test::FakeSmtpScript script;
    script.banner = calloutd::test::FakeReply("220 mx.bench.test ESMTP bench target");
    script.accept_all = false;
    script.rcpt_default = "550 5.1.1 no such user";
    // Same list as policy_load's: a count means user0@D .. user{N-1}@D, else a file.
    if (!senders.empty() && senders.find_first_not_of("0123456789") == std::string::npos) {
        long n = std::atol(senders.c_str());
        for (long k = 0; k < n; ++k)
            script.recipients["user" + std::to_string(k) + "@" + lower(domain)] = "250 2.1.5 ok";
    } else {
        std::ifstream in(senders);
        if (!in) {
            std::fprintf(stderr, "bench_smtp_target: cannot read %s\n", senders.c_str());
            return 2;
        }
        for (std::string line; std::getline(in, line);) {
            if (!line.empty() && line.back() == '\r') line.pop_back();
            if (!line.empty() && line[0] != '#') script.recipients[lower(line)] = "250 2.1.5 ok";
        }
    }
    const size_t listed = script.recipients.size();

    return calloutd::test::serve_until_signal(
        "bench_smtp_target", std::move(script), ip, static_cast<uint16_t>(port),
        [listed](const calloutd::test::FakeSmtpServer& server) {
            std::fprintf(
                stderr, "bench_smtp_target: senders=%zu connections=%zu rcpt=%zu random_rcpt=%zu\n",
                listed, server.connections_accepted(), server.count_commands("RCPT TO:"),
                server.count_commands("RCPT TO:<calloutd-check-"));
        });
}
