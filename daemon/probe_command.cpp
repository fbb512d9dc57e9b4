// One-shot probe for admins: what calloutd would see and decide for one address.
#include "daemon/probe_command.hpp"

#include <uv.h>

#include "callout/callout.hpp"
#include "daemon/components.hpp"

namespace calloutd {

namespace {

void print_report(std::FILE* out, const CalloutReport& r) {
    std::fprintf(out, "dns: %s (%s)\n", std::string(to_string(r.mx.status)).c_str(),
                 r.mx.reason.c_str());
    for (const auto& host : r.mx.hosts) {
        std::fprintf(out, "mx: %u %s%s", host.preference, host.name.c_str(),
                     host.implicit ? " (implicit: no MX record)" : "");
        for (const auto& a : host.addresses) std::fprintf(out, " %s", a.c_str());
        std::fprintf(out, "\n");
    }
    for (const auto& [addr, why] : r.refused) {
        std::fprintf(out, "refused: %s not probed: %s\n", addr.c_str(), why.c_str());
    }
    for (const auto& a : r.attempts) {
        std::fprintf(out, "--- %s [%s]%s\n", a.mx_host.c_str(), a.address.c_str(),
                     a.plaintext_retry ? " (plaintext retry: the TLS handshake failed)" : "");
        for (const auto& w : a.wire) {
            // Notes ("--- TLS TLSv1.3 TLS_AES_256_GCM_SHA384") say what happened to the
            // connection; every line after a TLS note went through that session.
            std::fprintf(out, "%6lldms %s %s\n", static_cast<long long>(w.at.count()),
                         w.note   ? "---"
                         : w.sent ? ">>>"
                                  : "<<<",
                         w.text.c_str());
        }
        std::fprintf(out, "--- %s\n", describe(a).c_str());
    }
}

}  // namespace

int run_probe_command(const Config& config, const std::string& address, std::FILE* out) {
    AddressParse parsed = parse_sender(address);
    if (!parsed) {
        std::fprintf(out, "class=skipped reason=%s (not probed)\n", parsed.refusal.c_str());
        return 2;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    int exit_code = 2;
    {
        std::string error;
        auto callout = Callout::create(&loop, callout_options(config, {}), error);
        if (!callout) {
            std::fprintf(out, "error: %s\n", error.c_str());
        } else {
            std::fprintf(out, "probing %s (domain %s)\n", parsed.address->address().c_str(),
                         parsed.address->domain.c_str());
            callout->start(*parsed.address, [&](CalloutReport r) {
                print_report(out, r);
                const bool tls = !r.attempts.empty() && r.attempts.back().tls;
                std::fprintf(out, "class=%s reason=\"%s\" scope=%s tls=%s ms=%lld\n",
                             std::string(to_string(r.verdict.cls)).c_str(),
                             r.verdict.reason.c_str(),
                             std::string(to_string(r.verdict.scope)).c_str(),
                             tls ? r.attempts.back().tls->version.c_str() : "none",
                             static_cast<long long>(r.elapsed.count()));
                if (r.verdict.cls == VerdictClass::valid) exit_code = 0;
                if (r.verdict.cls == VerdictClass::invalid ||
                    r.verdict.cls == VerdictClass::no_mail_domain) {
                    exit_code = 1;
                }
            });
            uv_run(&loop, UV_RUN_DEFAULT);
        }
    }
    // The resolver's handles close on destruction; let the loop release them.
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return exit_code;
}

}  // namespace calloutd
