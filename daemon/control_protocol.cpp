// Control socket protocol: request parsing and reply encoding for both ends of the socket.
#include "daemon/control_protocol.hpp"

#include <array>
#include <utility>

namespace calloutd {

namespace {

struct VerbName {
    ControlVerb verb;
    std::string_view name;
    bool takes_argument;
};

constexpr std::array<VerbName, 4> kVerbs = {{
    {ControlVerb::status, "status", false},
    {ControlVerb::cache_get, "cache-get", true},
    {ControlVerb::cache_del, "cache-del", true},
    {ControlVerb::cache_flush, "cache-flush", true},
}};

void append_clean(std::string& out, std::string_view text) {
    for (char c : text) {
        auto u = static_cast<unsigned char>(c);
        out += (u < 0x20 || u == 0x7f) ? '?' : c;
    }
}

}  // namespace

std::optional<ControlRequest> parse_control_request(std::string_view line, std::string& error) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    for (char c : line) {
        auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) {
            error = "control character in request";
            return std::nullopt;
        }
    }
    auto space = line.find(' ');
    std::string_view verb = line.substr(0, space);
    std::string_view argument =
        space == std::string_view::npos ? std::string_view{} : line.substr(space + 1);
    for (const auto& v : kVerbs) {
        if (v.name != verb) continue;
        if (v.takes_argument &&
            (argument.empty() || argument.find(' ') != std::string_view::npos)) {
            error = std::string(verb) + " takes one argument";
            return std::nullopt;
        }
        if (!v.takes_argument && space != std::string_view::npos) {
            error = std::string(verb) + " takes no argument";
            return std::nullopt;
        }
        return ControlRequest{v.verb, std::string(argument)};
    }
    error = "unknown command (status, cache-get, cache-del, cache-flush)";
    return std::nullopt;
}

std::string encode_control_request(const ControlRequest& request) {
    std::string out;
    for (const auto& v : kVerbs) {
        if (v.verb != request.verb) continue;
        out = std::string(v.name);
        if (v.takes_argument) {
            out += ' ';
            append_clean(out, request.argument);
        }
    }
    out += '\n';
    return out;
}

std::string encode_control_reply(const ControlReply& reply) {
    std::string out;
    for (const auto& d : reply.data) {
        out += "data ";
        // Every line must fit the reader's limit at the other end.
        append_clean(out, std::string_view(d).substr(0, kMaxControlLine - 8));
        out += '\n';
    }
    switch (reply.status) {
        case ControlStatus::ok:
            out += "ok\n";
            break;
        case ControlStatus::none:
            out += "none\n";
            break;
        case ControlStatus::error:
            out += "error ";
            append_clean(out, reply.error.empty() ? std::string_view("failed") : reply.error);
            out += '\n';
            break;
    }
    return out;
}

ControlLineReader::Status ControlLineReader::next(std::string& line) {
    if (failed_) return Status::too_long;
    auto nl = buf_.find('\n', consumed_);
    if (nl == std::string::npos) {
        if (buf_.size() - consumed_ > kMaxControlLine) {
            failed_ = true;
            return Status::too_long;
        }
        buf_.erase(0, consumed_);
        consumed_ = 0;
        return Status::need_more;
    }
    if (nl - consumed_ > kMaxControlLine) {
        failed_ = true;
        return Status::too_long;
    }
    line.assign(buf_, consumed_, nl - consumed_);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    consumed_ = nl + 1;
    return Status::line;
}

std::optional<ControlReply> ControlReplyReader::line(std::string_view line) {
    if (line.starts_with("data ")) {
        pending_.data.emplace_back(line.substr(5));
        return std::nullopt;
    }
    ControlReply done = std::exchange(pending_, ControlReply{});
    if (line == "ok") {
        done.status = ControlStatus::ok;
    } else if (line == "none") {
        done.status = ControlStatus::none;
    } else if (line.starts_with("error ")) {
        done.status = ControlStatus::error;
        done.error = std::string(line.substr(6));
    } else {
        done.status = ControlStatus::error;
        done.error = "unexpected line from the daemon: " + std::string(line.substr(0, 80));
    }
    return done;
}

}  // namespace calloutd
