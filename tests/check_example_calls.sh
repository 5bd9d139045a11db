#!/usr/bin/env bash
# examples/calls.c makes its calls as docs/guide.md ("Calls") says: run it
# in a private network namespace (its own EPMD) and check each answer, in
# order. Usage: check_example_calls.sh EXAMPLE_CALLS_BINARY
set -euo pipefail
bin=$1
ip link set lo up
out=$(timeout 30 "$bin" secret)
echo "$out"
expect=(
    "^math:add\(1, 2\): 3$"
    "^math:mul\(2, 3\): error undef$"
    "^gen_call counter \{add, 5\}: \{ok,5\}$"
    "^cal counter \{get\}: \{total,5\}$"
    "^cal silent \{get\}: timed out$"
)
mapfile -t lines <<<"$out"
((${#lines[@]} == ${#expect[@]})) || { echo "FAIL: ${#lines[@]} lines, want ${#expect[@]}"; exit 1; }
for i in "${!expect[@]}"; do
    grep -Eq -- "${expect[$i]}" <<<"${lines[$i]}" || { echo "FAIL: line $((i + 1)) is not /${expect[$i]}/"; exit 1; }
done
echo "example_calls: every answer, in order"
