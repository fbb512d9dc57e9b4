# calloutd: the two set-up commands are `make run` and `make test`; the rest are helpers.
# Build flags live in CMakePresets.json (release, debug, asan, fuzz); the directories below are the
# presets' binaryDir. A compiler launcher comes from the environment, e.g.
# CMAKE_CXX_COMPILER_LAUNCHER=ccache make test.
BUILD      := build
ASAN_BUILD := build-asan
JOBS       ?= $(shell nproc)
CONFIG     ?= etc/calloutd.toml
DIST       ?= dist

.PHONY: all deps build run test asan test-asan bench format format-check install deb clean

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

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer.
$(ASAN_BUILD)/build.ninja:
	cmake --preset asan

asan: deps $(ASAN_BUILD)/build.ninja
	cmake --build --preset asan -j$(JOBS)

test-asan: asan
	ctest --preset asan -j$(JOBS)

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
	rm -rf $(BUILD) $(ASAN_BUILD) $(DIST)
