#!/bin/sh
# short_run.sh FUZZER CORPUS_DIR REGRESS_DIR SECONDS
# The test-suite run of one fuzzer: replay the checked-in corpus and
# regression inputs, then fuzz for SECONDS, all in a temporary copy so that
# the checked-in directories never change. Fails on any crash, leak,
# timeout or sanitizer report (libFuzzer exits non-zero).
set -eu
fuzzer=$1 corpus=$2 regress=$3 seconds=$4
work=$(mktemp -d "${TMPDIR:-/tmp}/aemp-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
mkdir "$work/corpus"
for d in "$corpus" "$regress"; do
    if [ -d "$d" ]; then
        find "$d" -maxdepth 1 -type f -exec cp {} "$work/corpus/" \;
    fi
done
# Regression inputs first, one by one: a clear failure names the input.
if [ -d "$regress" ] && [ -n "$(ls -A "$regress" 2>/dev/null)" ]; then
    "$fuzzer" -rss_limit_mb=2048 -timeout=10 "$regress"/*
fi
# Crash inputs are written to the current directory (the build directory
# under ctest), outside the temporary copy.
status=0
"$fuzzer" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 "$work/corpus" || status=$?
exit $status
