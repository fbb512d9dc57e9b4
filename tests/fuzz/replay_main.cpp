// fuzz_replay TARGET PATH...: runs every file under PATH (a file or a directory, recursively)
// once through the target's fuzz function, without libFuzzer. A failed check aborts.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>

#include "fuzz/fuzz_target.hpp"

namespace calloutd::fuzz {

namespace {
std::map<std::string, TargetFn, std::less<>>& registry() {
    static std::map<std::string, TargetFn, std::less<>> targets;
    return targets;
}
}  // namespace

Registration::Registration(const char* name, TargetFn fn) {
    registry()[name] = fn;
}

TargetFn find_target(std::string_view name) {
    auto it = registry().find(name);
    return it == registry().end() ? nullptr : it->second;
}

std::vector<std::string> target_names() {
    std::vector<std::string> out;
    for (const auto& [name, fn] : registry()) out.push_back(name);
    return out;
}

}  // namespace calloutd::fuzz

int main(int argc, char** argv) {
    namespace fs = std::filesystem;
    using namespace calloutd::fuzz;
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s TARGET PATH...\ntargets:", argv[0]);
        for (const auto& n : target_names()) std::fprintf(stderr, " %s", n.c_str());
        std::fprintf(stderr, "\n");
        return 2;
    }
    TargetFn fn = find_target(argv[1]);
    if (fn == nullptr) {
        std::fprintf(stderr, "unknown target %s\n", argv[1]);
        return 2;
    }
    std::vector<fs::path> files;
    for (int i = 2; i < argc; ++i) {
        fs::path p(argv[i]);
        if (fs::is_directory(p)) {
            for (const auto& e : fs::recursive_directory_iterator(p)) {
                if (e.is_regular_file()) files.push_back(e.path());
            }
        } else {
            files.push_back(p);
        }
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) {
        std::fprintf(stderr, "no corpus files under the given paths\n");
        return 1;
    }
    for (const auto& f : files) {
        std::ifstream in(f, std::ios::binary);
        if (!in) {
            std::fprintf(stderr, "cannot read %s\n", f.c_str());
            return 1;
        }
        std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        // Named before the run, so a failed check's output says which file it was.
        std::fprintf(stderr, "%s\n", f.c_str());
        fn(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    }
    std::printf("%s: %zu corpus files passed\n", argv[1], files.size());
    return 0;
}
