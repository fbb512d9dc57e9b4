// placeholder so the unit test binary exists before the first test lands
#include "callout/verdict.hpp"
#include <gtest/gtest.h>
namespace calloutd {
TEST(Verdict, NamesRoundTrip) {
    for (auto c : kAllVerdictClasses) EXPECT_EQ(verdict_class_from_string(to_string(c)), c);
    EXPECT_FALSE(verdict_class_from_string("bogus"));
}
}  // namespace calloutd
