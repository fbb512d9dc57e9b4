// Prometheus text format: escaping, value formatting, cumulative histogram buckets.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "daemon/exposition.hpp"

namespace calloutd {
namespace {

TEST(Exposition, LabelValuesEscapeBackslashQuoteAndNewline) {
    struct Case {
        std::string in;
        std::string out;
    };
    const Case cases[] = {
        {"plain", "plain"},
        {"a\"b", "a\\\"b"},
        {"back\\slash", "back\\\\slash"},
        {"two\nlines", "two\\nlines"},
        {"\\\"\n", "\\\\\\\"\\n"},
        {"tab\tstays", "tab\tstays"},
        {"", ""},
        {"ümlaut", "ümlaut"},
    };
    for (const auto& c : cases) {
        std::string out;
        append_label_value(out, c.in);
        EXPECT_EQ(out, c.out) << c.in;
    }
}

TEST(Exposition, HelpEscapesBackslashAndNewlineButNotQuotes) {
    std::string out;
    append_help_text(out, "say \"hi\"\\\nbye");
    EXPECT_EQ(out, "say \"hi\"\\\\\\nbye");
}

TEST(Exposition, ValuesAsPrometheusReadsThem) {
    struct Case {
        double in;
        std::string out;
    };
    const Case cases[] = {
        {0, "0"},
        {1, "1"},
        {-3, "-3"},
        {123456789, "123456789"},
        {0.5, "0.5"},
        {0.001, "0.001"},
        {2.5e-05, "2.5e-05"},
        {1.7e300, "1.7e+300"},
        {std::numeric_limits<double>::infinity(), "+Inf"},
        {-std::numeric_limits<double>::infinity(), "-Inf"},
        {std::nan(""), "NaN"},
    };
    for (const auto& c : cases) {
        std::string out;
        append_value(out, c.in);
        EXPECT_EQ(out, c.out) << c.in;
    }
}

TEST(Exposition, FamilyAndSamples) {
    std::string out;
    ExpositionWriter w(out);
    w.family("x_total", "counter", "Things.\nMore");
    w.sample("x_total", {}, uint64_t{7});
    w.sample("x_total", {{"a", "1"}, {"b", "q\"x"}}, uint64_t{18446744073709551615u});
    w.sample("x_ratio", {{"k", "v"}}, 0.25);
    EXPECT_EQ(out,
              "# HELP x_total Things.\\nMore\n"
              "# TYPE x_total counter\n"
              "x_total 7\n"
              "x_total{a=\"1\",b=\"q\\\"x\"} 18446744073709551615\n"
              "x_ratio{k=\"v\"} 0.25\n");
}

TEST(Exposition, HistogramBucketsAreCumulativeWithInfSumAndCount) {
    static constexpr double kBounds[] = {0.1, 1, 10};
    Histogram h(kBounds);
    for (double v : {0.05, 0.1, 0.5, 1.0, 5.0, 50.0, 100.0}) h.observe(v);
    EXPECT_EQ(h.count(), 7u);
    EXPECT_EQ(h.counts(), (std::vector<uint64_t>{2, 2, 1, 2}));  // le is inclusive
    std::string out;
    ExpositionWriter w(out);
    w.histogram("d_seconds", {{"class", "valid"}}, h);
    EXPECT_EQ(out,
              "d_seconds_bucket{class=\"valid\",le=\"0.1\"} 2\n"
              "d_seconds_bucket{class=\"valid\",le=\"1\"} 4\n"
              "d_seconds_bucket{class=\"valid\",le=\"10\"} 5\n"
              "d_seconds_bucket{class=\"valid\",le=\"+Inf\"} 7\n"
              "d_seconds_sum{class=\"valid\"} 156.65\n"
              "d_seconds_count{class=\"valid\"} 7\n");
}

TEST(Exposition, EmptyHistogramWithoutLabels) {
    static constexpr double kBounds[] = {1};
    Histogram h(kBounds);
    std::string out;
    ExpositionWriter w(out);
    w.histogram("e", {}, h);
    EXPECT_EQ(out,
              "e_bucket{le=\"1\"} 0\n"
              "e_bucket{le=\"+Inf\"} 0\n"
              "e_sum 0\n"
              "e_count 0\n");
}

}  // namespace
}  // namespace calloutd
