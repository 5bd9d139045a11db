# shellcheck shell=bash source-path=SCRIPTDIR
# ports: the AEMP port model across the boundary (portnode.c, written with
# the port API, driven by aemp_interop:run(ports, ...)): Erlang sends
# tagged messages to C ports and sees {die, Text} and
# {unhandled_message, Tag} as exit reasons; C ports monitor Erlang
# processes in AEMP's three forms, kil them, and send from timers; node
# monitoring sees each node come and go in strict alternation, and a
# killed node's monitors fire with noconnection.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
: "${AEMP_PORTNODE:?AEMP_PORTNODE must name the portnode test program}"
# shellcheck disable=SC2086 # AEMP_WRAPPER is a command line to split
start_bg pt ${AEMP_WRAPPER:-} "$AEMP_PORTNODE" "pt@$HOST" "$COOKIE"
wait_line "$WORK/pt.out" "^(ready|FAIL)" 15
expect_line "$WORK/pt.out" "^ready pt@$HOST\$"
start_erl other
erl_test t ports "{'pt@$HOST', 'other@$HOST'}"
wait_line "$WORK/pt.out" "^nodes -t@$HOST\$" 15
# the other node dies without a word: its monitors fire with noconnection
wait_line "$WORK/pt.out" "^nodes \+other@$HOST\$" 15
kill -KILL "$(erl_ospid other)"
wait_line "$WORK/pt.out" "^mon_fired other@$HOST#init noconnection\$" 30
wait_line "$WORK/pt.out" "^nodes -other@$HOST\$" 15
# t comes back: up and down again, in order
erl_test t ports_after "{'pt@$HOST', 'other@$HOST'}"
wait_line "$WORK/pt.out" "^nodes -t@$HOST\$.*" 15
events=$(grep -E "^nodes [+-]t@$HOST\$" "$WORK/pt.out" | tr '\n' ' ')
[[ $events == "nodes +t@$HOST nodes -t@$HOST nodes +t@$HOST nodes -t@$HOST " ]] ||
    fail "node events of t do not alternate: $events"
kill -TERM "${PIDS[pt]}"
expect_exit pt 10 0
! grep -Eq 'Sanitizer|runtime error:|bad request' "$WORK/pt.out" "$WORK/pt.err" ||
    fail "sanitizer report or bad request in portnode"
pass
