// One fuzz target per entry point, built two ways: as a libFuzzer binary (CALLOUTD_LIBFUZZER,
// clang with -fsanitize=fuzzer) and into `fuzz_replay`, which feeds corpus files through the
// same function in the normal build so every corpus file is a regression test.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace calloutd::fuzz {

using TargetFn = int (*)(const std::uint8_t*, std::size_t);

// Registered by CALLOUTD_FUZZ_TARGET in the replay build; `fuzz_replay NAME DIR` looks it up.
struct Registration {
    Registration(const char* name, TargetFn fn);
};
TargetFn find_target(std::string_view name);
std::vector<std::string> target_names();

// A property of the code under test does not hold: print it and abort, which libFuzzer
// reports as a crash (with the input saved) and the replay test as a failure.
[[noreturn]] inline void check_failed(const char* file, int line, const char* what,
                                      const std::string& detail) {
    std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n%s\n", file, line, what, detail.c_str());
    std::abort();
}

// Splits `data` into chunks whose sizes come from a generator seeded by the data itself, so a
// run is reproducible from the input alone and every input is also tried in odd chunkings.
inline std::vector<std::string_view> random_chunks(std::string_view data, std::uint64_t salt = 0) {
    std::uint64_t state = 1469598103934665603ull ^ salt;  // FNV-1a of the input as the seed
    for (unsigned char c : data) state = (state ^ c) * 1099511628211ull;
    std::vector<std::string_view> out;
    while (!data.empty()) {
        state += 0x9e3779b97f4a7c15ull;  // splitmix64
        std::uint64_t z = state;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        // Mostly short chunks (splits land inside tokens), sometimes long ones.
        std::size_t len = (z & 3) == 0 ? 1 + (z >> 8) % 512 : 1 + (z >> 8) % 7;
        len = len < data.size() ? len : data.size();
        out.push_back(data.substr(0, len));
        data.remove_prefix(len);
    }
    return out;
}

inline std::vector<std::string_view> byte_chunks(std::string_view data) {
    std::vector<std::string_view> out;
    for (std::size_t i = 0; i < data.size(); ++i) out.push_back(data.substr(i, 1));
    return out;
}

}  // namespace calloutd::fuzz

#define FUZZ_CHECK(cond, detail)                                                        \
    do {                                                                                \
        if (!(cond)) ::calloutd::fuzz::check_failed(__FILE__, __LINE__, #cond, detail); \
    } while (0)

#ifdef CALLOUTD_LIBFUZZER
#define CALLOUTD_FUZZ_REGISTER(name)                                                    \
    extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) { \
        return calloutd_fuzz_##name(data, size);                                        \
    }
#else
#define CALLOUTD_FUZZ_REGISTER(name)                                            \
    static const ::calloutd::fuzz::Registration calloutd_fuzz_reg_##name(#name, \
                                                                         calloutd_fuzz_##name);
#endif

// CALLOUTD_FUZZ_TARGET(policy_request) { ...data, size... return 0; }
#define CALLOUTD_FUZZ_TARGET(name)                                               \
    static int calloutd_fuzz_##name(const std::uint8_t* data, std::size_t size); \
    CALLOUTD_FUZZ_REGISTER(name)                                                 \
    static int calloutd_fuzz_##name(const std::uint8_t* data, std::size_t size)
