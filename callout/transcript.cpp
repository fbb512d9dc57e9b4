// The wording table of probe stages and events: one place for the words a transcript, a
// describe() line and a verdict reason use.
#include "callout/transcript.hpp"

#include <cstddef>
#include <iterator>

namespace calloutd {

namespace {

struct StageWords {
    SmtpStage stage;
    std::string_view name;   // "RCPT"
    std::string_view doing;  // "waiting for RCPT reply"
};

constexpr StageWords kStageWords[] = {
    {SmtpStage::connect, "connect", "connecting"},
    {SmtpStage::banner, "banner", "waiting for banner"},
    {SmtpStage::ehlo, "EHLO", "waiting for EHLO reply"},
    {SmtpStage::helo, "HELO", "waiting for HELO reply"},
    {SmtpStage::starttls, "STARTTLS", "waiting for STARTTLS reply"},
    {SmtpStage::tls_handshake, "TLS handshake", "doing the TLS handshake"},
    {SmtpStage::mail_from, "MAIL FROM", "waiting for MAIL FROM reply"},
    {SmtpStage::random_rcpt, "random RCPT", "waiting for random RCPT reply"},
    {SmtpStage::rset, "RSET", "waiting for RSET reply"},
    {SmtpStage::mail_from_again, "MAIL FROM", "waiting for MAIL FROM reply"},
    {SmtpStage::rcpt, "RCPT", "waiting for RCPT reply"},
    {SmtpStage::quit, "QUIT", "waiting for QUIT reply"},
};

struct EventWords {
    StageEvent event;
    std::string_view phrase;  // "probe deadline reached"
};

constexpr EventWords kEventWords[] = {
    {StageEvent::reply, "reply"},
    {StageEvent::timeout, "timeout"},
    {StageEvent::deadline, "probe deadline reached"},
    {StageEvent::closed, "connection closed"},
    {StageEvent::connect_failed, "connect failed"},
    {StageEvent::io_error, "I/O error"},
    {StageEvent::protocol_error, "protocol error"},
    {StageEvent::tls_unavailable, "STARTTLS not offered"},
    {StageEvent::smtputf8_unsupported, "SMTPUTF8 not offered"},
};

template <class Row, std::size_t N, class Member>
constexpr bool in_declaration_order(const Row (&rows)[N], Member key) {
    for (std::size_t i = 0; i < N; ++i)
        if (static_cast<std::size_t>(rows[i].*key) != i) return false;
    return true;
}
static_assert(in_declaration_order(kStageWords, &StageWords::stage) &&
                  std::size(kStageWords) == static_cast<std::size_t>(SmtpStage::quit) + 1,
              "kStageWords must list every SmtpStage in declaration order");
static_assert(in_declaration_order(kEventWords, &EventWords::event) &&
                  std::size(kEventWords) ==
                      static_cast<std::size_t>(StageEvent::smtputf8_unsupported) + 1,
              "kEventWords must list every StageEvent in declaration order");

}  // namespace

std::string_view stage_name(SmtpStage s) {
    return kStageWords[static_cast<std::size_t>(s)].name;
}

std::string_view stage_doing(SmtpStage s) {
    return kStageWords[static_cast<std::size_t>(s)].doing;
}

std::string_view event_phrase(StageEvent e) {
    return kEventWords[static_cast<std::size_t>(e)].phrase;
}

std::string event_in_stage(StageEvent e, SmtpStage s) {
    if (e == StageEvent::connect_failed) return std::string(event_phrase(e));
    return std::string(event_phrase(e)) + " while " + std::string(stage_doing(s));
}

std::string SmtpReply::text() const {
    std::string out;
    for (const auto& l : lines) {
        if (!out.empty()) out += ' ';
        out += l;
    }
    return out;
}

}  // namespace calloutd
