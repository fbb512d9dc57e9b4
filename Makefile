# calloutd: the two set-up commands are `make run` and `make test`; the rest are helpers.
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
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
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j$(JOBS)

# Foreground daemon with the sample configuration (in-memory, no Redis): inet:127.0.0.1:10023.
run: build
	./$(BUILD)/calloutd run -c $(CONFIG)

# Every test (unit, integration against real servers, clang-format check) through ctest.
test: build
	ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS) --timeout 600

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer (the package test aside:
# it builds and installs its own unsanitized package, exactly as `make test` already did).
$(ASAN_BUILD)/build.ninja:
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCALLOUTD_SANITIZE=ON

asan: deps $(ASAN_BUILD)/build.ninja
	cmake --build $(ASAN_BUILD) -j$(JOBS)

test-asan: asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir $(ASAN_BUILD) --output-on-failure -j$(JOBS) --timeout 900 -LE package

# libFuzzer harnesses (tests/fuzz, clang + ASan + UBSan) for FUZZ_SECONDS each; one line per
# target with executions and coverage; fails on a crash, leak or timeout. FUZZ_TARGETS="a b"
# runs a subset.
$(FUZZ_BUILD)/build.ninja:
	cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCALLOUTD_FUZZ=ON \
	  -DCALLOUTD_BUILD_TESTS=OFF -DCALLOUTD_BUILD_BENCH=OFF

fuzzers: deps $(FUZZ_BUILD)/build.ninja
	cmake --build $(FUZZ_BUILD) -j$(JOBS) --target fuzzers

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
