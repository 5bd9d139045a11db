#!/usr/bin/env bash
# examples/ports.c tells its story as docs/guide.md ("AEMP ports") says:
# run it in a private network namespace (its own EPMD) and check each step
# and its order. Usage: check_example_ports.sh EXAMPLE_PORTS_BINARY
set -euo pipefail
bin=$1
ip link set lo up
out=$(timeout 30 "$bin" ports@127.0.0.1 secret 50)
echo "$out"
expect=(
    "node ports@127.0.0.1 is up"
    "counter: +2 = 2"
    "counter: +3 = 5"
    "reply port: got {total,5}"
    "reply port: got {worker_down,#Pid<'ports@127.0.0.1'.*{unhandled_message,surprise}}"
    "mon: worker died: {unhandled_message,surprise}"
    "timer: running as port [0-9]*, killing the counter"
    "mon: counter died: {done,<<\"story told\">>}"
    "gone: counter is gone"
)
line=0
mapfile -t lines <<<"$out"
for e in "${expect[@]}"; do
    while ((line < ${#lines[@]})) && ! grep -q -- "$e" <<<"${lines[$line]}"; do line=$((line + 1)); done
    ((line < ${#lines[@]})) || { echo "FAIL: missing, or out of order: $e"; exit 1; }
    line=$((line + 1))
done
echo "example_ports: every step, in order"
