#!/usr/bin/env bash
# Perf regression guard (ctest label "perf"): a short bench/run-bench of the cached path with one
# info decision line per request written to a file, beside the bare responder, at 8 and 64
# connections. It prints the ratios with their targets so a change that halves throughput shows
# in the test output; it fails only when the bench itself did not work (a request unanswered,
# the cached path not measured), never on timing: a shared machine decides those.
# Usage: perf_guard.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1
build=$2
export BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-8 64}
export BENCH_CONFIGS=${BENCH_CONFIGS:-logfile}
export BENCH_DURATION=${BENCH_DURATION:-2}
export BENCH_WARMUP=${BENCH_WARMUP:-1}
out=$("$src/bench/run-bench" "$build" cached 2>&1) || { echo "$out"; echo "perf guard: run-bench failed"; exit 1; }
echo "$out" | sed -n '/^== summary/,$p'
machine=$(grep '^machine:' <<<"$out")
status=0
for c in $BENCH_CONNECTIONS; do
    for config in bare $BENCH_CONFIGS; do
        rps=$(sed -n "s/.* ${config}_${c}_rps=\([0-9.]*\).*/\1/p" <<<"$machine")
        if [[ -z $rps || $rps == 0 ]]; then
            echo "perf guard: no throughput for $config at $c connections"
            status=1
        fi
    done
done
if grep -E '^requests=' <<<"$out" | grep -qv ' errors=0 '; then
    echo "perf guard: some requests were not answered (errors above)"
    status=1
fi
if grep -q '!! cached path' <<<"$out"; then
    echo "perf guard: the cached path was not (fully) measured"
    status=1
fi
if grep -q ' log-dropped warnings' <<<"$out"; then
    echo "perf guard: the log file lost lines"
    status=1
fi
for c in $BENCH_CONNECTIONS; do
    ratio=$(sed -n "s/.* logfile_${c}_ratio=\([0-9.]*\).*/\1/p" <<<"$machine")
    load=$(sed -n "s/.* logfile_${c}_load=\([0-9.]*\).*/\1/p" <<<"$machine")
    steal=$(sed -n "s/.* logfile_${c}_steal=\([0-9.]*\).*/\1/p" <<<"$machine")
    echo "perf guard: calloutd (info to a file) / bare responder at $c connections = ${ratio:-?}" \
        "(target $([[ $c -ge 64 ]] && echo 0.85 || echo 0.80)), load average $load, steal ${steal:-?} %"
done
exit $status
