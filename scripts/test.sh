#!/usr/bin/env bash
# Quick start, part 2: installs what is missing, builds, and runs the whole
# test suite:
#   1. formatting check (clang-format, the repo's .clang-format)
#   2. unit, interop and fault tests on the normal build (build/)
#   3. unit and interop tests again under AddressSanitizer + UBSan (build-asan/)
#   4. a short run of every fuzzer (build-fuzz/, clang + libFuzzer)
# See docs/testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs=$(nproc)

echo "== format check"
bash scripts/format.sh --check

echo "== tests (build/)"
ctest --test-dir build --output-on-failure --timeout 300 -j"$jobs"

echo "== tests under AddressSanitizer + UBSan (build-asan/)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DAEMP_SANITIZE=ON -DAEMP_WERROR=ON >/dev/null
cmake --build build-asan -j"$jobs" >/dev/null
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure --timeout 300 -j"$jobs" -L 'unit|interop'

if [ -f tests/fuzz/CMakeLists.txt ]; then
    echo "== short fuzz runs (build-fuzz/)"
    cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DAEMP_FUZZ=ON -DAEMP_TESTS=ON \
        -DAEMP_INTEROP_TESTS=OFF >/dev/null
    cmake --build build-fuzz -j"$jobs" >/dev/null
    ctest --test-dir build-fuzz --output-on-failure -j"$jobs" -L fuzz
fi
echo "== all tests passed"
