# calloutd: the two set-up commands are `make run` and `make test`; the rest are helpers.
# Build flags live in CMakePresets.json (release, debug, asan, fuzz); the directories below are the
# presets' binaryDir. A compiler launcher comes from the environment, e.g.
# CMAKE_CXX_COMPILER_LAUNCHER=ccache make test.
BUILD      := build
ASAN_BUILD := build-asan
FUZZ_BUILD := build-fuzz
# make fuzz: seconds per target, and how many targets run at once.
FUZZ_SECONDS ?= 60
FUZZ_JOBS    ?= 2
JOBS       ?= $(shell nproc)
CONFIG     ?= etc/calloutd.toml
DIST       ?= dist

.PHONY: all deps build run test asan test-asan bench fuzz fuzzers format format-check install deb clean

all: build

deps:
	./scripts/install-deps

$(BUILD)/build.ninja:
	cmake --preset release

build: deps $(BUILD)/build.ninja
	cmake --build --preset release -j$(JOBS)

# Foreground daemon with the sample configuration (in-memory, no Redis): inet:127.0.0.1:10023.
run: build
	./$(BUILD)/calloutd run -c $(CONFIG)

# Every test (unit, integration against real servers, clang-format check) through ctest.
test: build
	ctest --preset release -j$(JOBS)

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer (the package test aside:
# it builds and installs its own unsanitized package, exactly as `make test` already did).
$(ASAN_BUILD)/build.ninja:
	cmake --preset asan

asan: deps $(ASAN_BUILD)/build.ninja
	cmake --build --preset asan -j$(JOBS)

test-asan: asan
	ctest --preset asan -j$(JOBS)

# libFuzzer harnesses (tests/fuzz, clang + ASan + UBSan) for FUZZ_SECONDS each; one line per
# target with executions and coverage; fails on a crash, leak or timeout. FUZZ_TARGETS="a b"
# runs a subset.
$(FUZZ_BUILD)/build.ninja:
	cmake --preset fuzz

fuzzers: deps $(FUZZ_BUILD)/build.ninja
	cmake --build --preset fuzz -j$(JOBS) --target fuzzers

fuzz: fuzzers
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) ./scripts/run-fuzz $(FUZZ_BUILD) $(FUZZ_TARGETS)

bench: build
	./bench/run-bench $(BUILD)

format:
	clang-format -i $$(git ls-files '*.cpp' '*.hpp')

format-check:
	clang-format --dry-run --Werror $$(git ls-files '*.cpp' '*.hpp')

install: build
	cmake --install $(BUILD)

# The Debian package into $(DIST)/ (calloutd_VERSION_ARCH.deb), built from a clean copy of the tree.
deb: deps
	./scripts/build-deb $(DIST)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) $(DIST)
