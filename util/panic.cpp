// panic(): print-and-abort for impossible states (see panic.hpp).
#include "util/panic.hpp"

#include <cstdio>
#include <cstdlib>

namespace calloutd {

void panic(std::string_view where, std::string_view what) {
    std::fprintf(stderr, "calloutd: impossible state in %.*s: %.*s\n",
                 static_cast<int>(where.size()), where.data(), static_cast<int>(what.size()),
                 what.data());
    std::fflush(stderr);
    std::abort();
}

}  // namespace calloutd
