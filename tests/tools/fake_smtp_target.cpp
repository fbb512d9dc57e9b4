// A fake SMTP target as a process of its own, so a test can SIGKILL it like a crashed MX and
// start it again on the same address (the chaos test). Serves tests/support's FakeSmtpServer.
//
// Usage: fake_smtp_target --scenario NAME --ip IP [--port P] [--domain D]
// Prints "port=N" once listening; runs until SIGTERM/SIGINT (or SIGKILL). Scenarios:
//   valid    user0..user49@D exist (250), every other address, the random check included,
//            gets "550 5.1.1 no such user": probes end valid or invalid
//   reject   every RCPT gets 550 5.1.1 (a domain whose senders are all forged)
//   tarpit   accepts connections and never says a word
//   huge     a 1 MB multi-line banner
//   garbage  RCPT is answered with NUL bytes and a CR LF injection attempt
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "support/fake_smtp.hpp"

int main(int argc, char** argv) {
    std::string scenario;
    std::string ip = "127.0.0.1";
    std::string domain = "valid.test";
    int port = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string_view a = argv[i];
        if (a == "--scenario") {
            scenario = argv[i + 1];
        } else if (a == "--ip") {
            ip = argv[i + 1];
        } else if (a == "--port") {
            port = std::atoi(argv[i + 1]);
        } else if (a == "--domain") {
            domain = argv[i + 1];
        } else {
            std::fprintf(stderr, "fake_smtp_target: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    using calloutd::test::FakeReply;
    calloutd::test::FakeSmtpScript script;
    script.banner = FakeReply("220 " + domain + " ESMTP fake target");
    if (scenario == "valid") {
        for (int k = 0; k < 50; ++k) {
            script.recipients["user" + std::to_string(k) + "@" + domain] = "250 2.1.5 ok";
        }
    } else if (scenario == "reject") {
    } else if (scenario == "tarpit") {
        script.banner.reset();
    } else if (scenario == "huge") {
        script.huge_banner_bytes = 1 << 20;
    } else if (scenario == "garbage") {
        script.rcpt_default = FakeReply::garbage(std::string("250 o\0k\r\nRCPT TO:<x@y>\r\n", 24));
    } else {
        std::fprintf(stderr, "fake_smtp_target: unknown scenario '%s'\n", scenario.c_str());
        return 2;
    }

    return calloutd::test::serve_until_signal("fake_smtp_target", std::move(script), ip,
                                              static_cast<uint16_t>(port));
}
