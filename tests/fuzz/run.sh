#!/bin/sh
# run.sh [SECONDS] - the longer fuzz run (see docs/fuzzing.md).
#
# Configures and builds build-fuzz/ with clang, then runs every fuzzer for
# SECONDS (default 300), $JOBS at a time (default 2). Each fuzzer works on
# build-fuzz/fuzz-corpus/<harness>/, seeded from the checked-in corpus and
# regression inputs and kept between runs; the checked-in directories are
# never written. Crash, leak and timeout inputs go to
# build-fuzz/fuzz-artifacts/<harness>/, logs to build-fuzz/fuzz-logs/.
# Exits non-zero if any fuzzer failed.
set -eu
seconds=${1:-300}
jobs=${JOBS:-2}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$root/build-fuzz}

cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DAEMP_FUZZ=ON -DAEMP_TESTS=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
harnesses=$(cd "$here" && ls fuzz_*.c | sed 's/\.c$//')
# shellcheck disable=SC2086
cmake --build "$build" -j "$jobs" --target $harnesses

mkdir -p "$build/fuzz-logs"
run_one() {
    name=$1
    corpus=$build/fuzz-corpus/$name
    art=$build/fuzz-artifacts/$name
    mkdir -p "$corpus" "$art"
    for d in "$here/corpus/$name" "$here/regress/$name"; do
        if [ -d "$d" ]; then
            find "$d" -maxdepth 1 -type f -exec cp {} "$corpus/" \;
        fi
    done
    if "$build/tests/fuzz/$name" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 -artifact_prefix="$art/" "$corpus" \
        >"$build/fuzz-logs/$name.log" 2>&1; then
        echo "$name: ok ($(grep -E '^stat::number_of_executed_units' "$build/fuzz-logs/$name.log" |
            awk '{print $2}') runs)"
    else
        echo "$name: FAILED, see $build/fuzz-logs/$name.log and $art/"
        return 1
    fi
}

failed=0
set -- $harnesses
while [ $# -gt 0 ]; do
    pids=""
    n=0
    while [ $# -gt 0 ] && [ $n -lt "$jobs" ]; do
        run_one "$1" &
        pids="$pids $!"
        n=$((n + 1))
        shift
    done
    for p in $pids; do
        wait "$p" || failed=1
    done
done
exit $failed
