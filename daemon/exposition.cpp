// Prometheus text format writer: escaping, value formatting, cumulative histogram buckets.
#include "daemon/exposition.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace calloutd {

Histogram::Histogram(std::span<const double> bounds)
    : bounds_(bounds), counts_(bounds.size() + 1, 0) {}

void Histogram::observe(double value) {
    // "le" is inclusive: a value equal to a bound belongs to that bound's bucket.
    auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);
    ++counts_[static_cast<size_t>(it - bounds_.begin())];
    sum_ += value;
    ++count_;
}

void append_label_value(std::string& out, std::string_view value) {
    for (char c : value) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '"') {
            out += "\\\"";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
}

void append_help_text(std::string& out, std::string_view text) {
    for (char c : text) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
}

void append_value(std::string& out, double value) {
    if (std::isnan(value)) {
        out += "NaN";
        return;
    }
    if (std::isinf(value)) {
        out += value > 0 ? "+Inf" : "-Inf";
        return;
    }
    char buf[64];
    // Whole numbers below 2^53 are written as integers ("3", not "3e+00").
    if (value == std::trunc(value) && std::fabs(value) < 9007199254740992.0) {
        auto [end, ec] = std::to_chars(buf, buf + sizeof buf, static_cast<int64_t>(value));
        out.append(buf, end);
        return;
    }
    // Shortest round-trip text, fixed notation where that is short ("0.0001", not "1e-04").
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::general);
    out.append(buf, end);
}

void ExpositionWriter::family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    append_help_text(out_, help);
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
}

void ExpositionWriter::begin_sample(std::string_view name, std::string_view suffix,
                                    std::initializer_list<Label> labels, std::string_view le) {
    out_ += name;
    out_ += suffix;
    if (labels.size() == 0 && le.empty()) {
        out_ += ' ';
        return;
    }
    out_ += '{';
    bool first = true;
    auto add = [&](std::string_view n, std::string_view v) {
        if (!first) out_ += ',';
        first = false;
        out_ += n;
        out_ += "=\"";
        append_label_value(out_, v);
        out_ += '"';
    };
    for (const auto& l : labels) add(l.name, l.value);
    if (!le.empty()) add("le", le);
    out_ += "} ";
}

void ExpositionWriter::sample(std::string_view name, std::initializer_list<Label> labels,
                              uint64_t value) {
    begin_sample(name, "", labels);
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
    out_.append(buf, end);
    out_ += '\n';
}

void ExpositionWriter::sample(std::string_view name, std::initializer_list<Label> labels,
                              double value) {
    begin_sample(name, "", labels);
    append_value(out_, value);
    out_ += '\n';
}

void ExpositionWriter::histogram(std::string_view name, std::initializer_list<Label> labels,
                                 const Histogram& h) {
    uint64_t cumulative = 0;
    std::string le;
    for (size_t i = 0; i <= h.bounds().size(); ++i) {
        cumulative += h.counts()[i];
        le.clear();
        if (i < h.bounds().size()) {
            append_value(le, h.bounds()[i]);
        } else {
            le = "+Inf";
        }
        begin_sample(name, "_bucket", labels, le);
        char buf[24];
        auto [end, ec] = std::to_chars(buf, buf + sizeof buf, cumulative);
        out_.append(buf, end);
        out_ += '\n';
    }
    begin_sample(name, "_sum", labels);
    append_value(out_, h.sum());
    out_ += '\n';
    begin_sample(name, "_count", labels);
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, h.count());
    out_.append(buf, end);
    out_ += '\n';
}

}  // namespace calloutd
