// panic(): the end of an impossible state (a programming error, never bad input): one line on
// stderr naming the function and what went wrong, then abort() for a core dump.
#pragma once

#include <string_view>

namespace calloutd {

// Prints "calloutd: impossible state in WHERE: WHAT" and aborts. Call with __func__ (or
// "Class::method") as where. Bad input and failing dependencies never come here: they are
// answered, logged and counted.
[[noreturn]] void panic(std::string_view where, std::string_view what);

}  // namespace calloutd
