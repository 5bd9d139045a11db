# shellcheck shell=bash source-path=SCRIPTDIR
# ping: Erlang pings the aemp node; `aemp ping` pings an Erlang node, an aemp
# node and a node that does not exist.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
start_aemp c
erl_test t ping "'c@$HOST'"

start_erl p
run_fg ping_erl 20 "$AEMP_BIN" ping "p@$HOST" --cookie "$COOKIE"
((EXIT_STATUS == 0)) || fail "aemp ping p@$HOST exited with $EXIT_STATUS"
expect_line "$WORK/ping_erl.out" '^pong$'

run_fg ping_aemp 20 "$AEMP_BIN" ping "c@$HOST" --cookie "$COOKIE"
((EXIT_STATUS == 0)) || fail "aemp ping c@$HOST (an aemp node) exited with $EXIT_STATUS"
expect_line "$WORK/ping_aemp.out" '^pong$'

run_fg ping_none 20 "$AEMP_BIN" ping "nosuch@$HOST" --cookie "$COOKIE"
((EXIT_STATUS != 0 && EXIT_STATUS != 124 && EXIT_STATUS != 137)) ||
    fail "aemp ping of a missing node exited with $EXIT_STATUS (124/137: timed out)"
! grep -q pong "$WORK/ping_none.out" || fail "aemp ping of a missing node printed pong"
[[ -s $WORK/ping_none.err || -s $WORK/ping_none.out ]] ||
    fail "aemp ping of a missing node failed without a message"
log "missing node: $(cat "$WORK/ping_none.err" "$WORK/ping_none.out")"
pass
