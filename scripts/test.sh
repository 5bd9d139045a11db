#!/usr/bin/env bash
# Quick start, part 2: installs what is missing, builds, and runs the whole
# test suite, stage by stage:
#   setup      packages and the build in build/ (scripts/setup.sh)
#   format     clang-format check (the repo's .clang-format)
#   otpREL     the Debian chroots of OTP 27 and 29, built once and cached
#              in /var/cache/aemp-otp (scripts/otp-chroot.sh)
#   build/     unit tests, interop tests against the host's OTP 25, fault tests
#   OTP REL    the interop tests against OTP 27 and OTP 29 (chroots)
#   asan       unit and interop tests (all three releases) under
#              AddressSanitizer + UBSan (build-asan/)
#   fuzz       a short run of every fuzzer (build-fuzz/, clang + libFuzzer)
# Every stage runs, whatever happened before; the run ends with a summary of
# each stage and the line "N passed, N failed" (tests: each ctest test
# counts, a stage that is not a ctest run counts as one), and exits non-zero
# when anything failed. See docs/testing.md.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
jobs=$(nproc)
OTP_RELEASES=(27 29)
LOGS=$(mktemp -d /tmp/aemp-test.XXXXXX)
trap 'rm -rf "$LOGS"' EXIT
PASSED=0
FAILED=0
SUMMARY=()
declare -A STAGE_OK=()
T_START=$SECONDS

# stage KEY TITLE COMMAND...: run COMMAND, output shown and kept; count
# its ctest results (or the stage as one test when it ran no ctest).
stage() {
    local key=$1 title=$2 t0=$SECONDS status line total=0 failed=0 found=0 names extra=
    shift 2
    echo
    echo "== $title"
    "$@" 2>&1 | tee "$LOGS/$key.log"
    status=${PIPESTATUS[0]}
    while read -r line; do
        # "100% tests passed, 0 tests failed out of 32"
        if [[ $line =~ tests\ passed,\ ([0-9]+)\ tests?\ failed\ out\ of\ ([0-9]+) ]]; then
            failed=$((failed + BASH_REMATCH[1]))
            total=$((total + BASH_REMATCH[2]))
            found=1
        fi
    done <"$LOGS/$key.log"
    if ((found)); then
        PASSED=$((PASSED + total - failed))
        # A failure outside the tests (a build, a ctest error) counts too.
        ((status == 0 || failed > 0)) || failed=1
        FAILED=$((FAILED + failed))
    elif ((status == 0)); then
        PASSED=$((PASSED + 1))
    else
        failed=1
        FAILED=$((FAILED + 1))
    fi
    if ((status == 0 && failed == 0)); then
        STAGE_OK[$key]=1
        ((!found)) || extra=", $total tests"
        SUMMARY+=("$(printf 'ok      %-56s %4d s%s' "$title" $((SECONDS - t0)) "$extra")")
    else
        # ctest's list of failed tests: the first 6 by name, then a count
        names=$(grep -E '^[[:space:]]+[0-9]+ - ' "$LOGS/$key.log" | sed -E 's/^[[:space:]]+[0-9]+ - //' |
            awk 'NR <= 6 { printf "%s%s", (NR > 1 ? ", " : ""), $0 } END { if (NR > 6) printf " and %d more", NR - 6 }')
        SUMMARY+=("$(printf 'FAILED  %-56s %4d s (exit %d%s)' "$title" $((SECONDS - t0)) "$status" \
            "${names:+; failed: $names}")")
    fi
}

ctest_in() { # DIR ARGS...
    local dir=$1
    shift
    ctest --test-dir "$dir" --output-on-failure --no-tests=error -j"$jobs" "$@"
}

# An OTP stage whose chroot could not be built fails without running
# (the fixture would only try the same build again).
otp_stage() {
    local rel=$1
    if [[ -z ${STAGE_OK[chroot$rel]:-} ]]; then
        echo "the OTP $rel chroot could not be built (see stage 'OTP $rel chroot' above):" \
            "its interop tests cannot run, and that fails the run"
        return 1
    fi
    ctest_in build --timeout 300 -L "otp$rel"
}

asan_stage() {
    cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DAEMP_SANITIZE=ON -DAEMP_WERROR=ON >/dev/null &&
        cmake --build build-asan -j"$jobs" >/dev/null &&
        ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
            ctest_in build-asan --timeout 300 -L 'unit|interop'
}

fuzz_stage() {
    cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DAEMP_FUZZ=ON -DAEMP_TESTS=ON \
        -DAEMP_INTEROP_TESTS=OFF >/dev/null &&
        cmake --build build-fuzz -j"$jobs" >/dev/null &&
        ctest_in build-fuzz -L fuzz
}

chroot_stage() {
    local rel=$1 t0=$SECONDS
    bash scripts/otp-chroot.sh build "$rel" || return 1
    echo "OTP $rel chroot ready after $((SECONDS - t0)) s"
}

stage setup "setup: packages, build (build/)" bash scripts/setup.sh
stage format "format check" bash scripts/format.sh --check
for rel in "${OTP_RELEASES[@]}"; do
    stage "chroot$rel" "OTP $rel chroot (scripts/otp-chroot.sh)" chroot_stage "$rel"
done
stage build "unit, interop OTP 25, fault (build/)" \
    ctest_in build --timeout 300 -LE "$(IFS='|' && echo "otp(${OTP_RELEASES[*]})")"
# fault.load prints the rate it reached (never a failure): show it.
rate=$(grep -h -m 1 '^RATE ' build/Testing/Temporary/LastTest.log 2>/dev/null)
[[ -z $rate ]] || SUMMARY+=("        fault.load: $rate")
for rel in "${OTP_RELEASES[@]}"; do
    stage "otp$rel" "interop OTP $rel (build/)" otp_stage "$rel"
done
stage asan "unit, interop OTP 25/27/29 under ASan + UBSan (build-asan/)" asan_stage
if [[ -f tests/fuzz/CMakeLists.txt ]]; then
    stage fuzz "short fuzz runs (build-fuzz/)" fuzz_stage
fi

echo
echo "== summary ($((SECONDS - T_START)) s)"
printf '%s\n' "${SUMMARY[@]}"
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
