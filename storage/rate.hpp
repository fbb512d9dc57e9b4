// A rate budget: at most `count` events per sliding `period`.
#pragma once

#include <chrono>
#include <cstdint>

namespace calloutd {

struct Rate {
    uint32_t count = 0;  // 0 with unlimited == true means no limit
    std::chrono::milliseconds period{0};
    bool unlimited = false;
    friend bool operator==(const Rate&, const Rate&) = default;
};

}  // namespace calloutd
