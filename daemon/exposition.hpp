// Prometheus text exposition format 0.0.4: families, samples and histograms as text; no I/O.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace calloutd {

// A histogram with fixed upper bounds ("le", ascending; +Inf is implicit). Counts are kept per
// bucket and made cumulative only when written, so observe() touches one integer.
class Histogram {
  public:
    explicit Histogram(std::span<const double> bounds);
    void observe(double value);

    std::span<const double> bounds() const { return bounds_; }
    // Per bucket, not cumulative; the last one is the +Inf bucket.
    const std::vector<uint64_t>& counts() const { return counts_; }
    double sum() const { return sum_; }
    uint64_t count() const { return count_; }

  private:
    std::span<const double> bounds_;
    std::vector<uint64_t> counts_;
    double sum_ = 0;
    uint64_t count_ = 0;
};

struct Label {
    std::string_view name;
    std::string_view value;
};

// Appends families to `out`. The caller writes every sample of a family right after its
// family() line, as the format requires.
class ExpositionWriter {
  public:
    explicit ExpositionWriter(std::string& out) : out_(out) {}

    // "# HELP name help" and "# TYPE name type" (counter, gauge, histogram).
    void family(std::string_view name, std::string_view type, std::string_view help);
    void sample(std::string_view name, std::initializer_list<Label> labels, uint64_t value);
    void sample(std::string_view name, std::initializer_list<Label> labels, double value);
    // name_bucket{...,le="B"} cumulative for each bound and +Inf, then name_sum and name_count.
    void histogram(std::string_view name, std::initializer_list<Label> labels, const Histogram& h);

  private:
    void begin_sample(std::string_view name, std::string_view suffix,
                      std::initializer_list<Label> labels, std::string_view le = {});
    std::string& out_;
};

// A label value inside its quotes: backslash, double quote and line feed escaped.
void append_label_value(std::string& out, std::string_view value);
// HELP text: backslash and line feed escaped.
void append_help_text(std::string& out, std::string_view text);
// A sample value as Prometheus parses it: "+Inf", "-Inf", "NaN", integers without exponent,
// otherwise the shortest text that reads back as the same double.
void append_value(std::string& out, double value);

}  // namespace calloutd
