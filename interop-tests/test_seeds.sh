# shellcheck shell=bash source-path=SCRIPTDIR
# seeds: `aemp run c --seeds a@HOST` (backoff and meshing from a profile)
# connects to Erlang node a once a starts, again after a is killed with
# SIGKILL and restarted, and meshes: Erlang node b, connected to a, gets a
# connection from c, which it learnt of from a's erlang:nodes/1. The C node
# answers erlang:nodes/0,1 itself; its failures to reach a are logged once
# per outage, not per attempt.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

# up_count N PEER: c has reported PEER up at least N times.
up_count() {
    (($(grep -c "^aemp: node up: $2\$" "$WORK/c.out") >= $1))
}

# erlang:nodes(ARG) on NODE, through `aemp rpc`; the answer in $WORK/NAME.out.
nodes_of() {
    run_fg "$1" 15 "$AEMP_BIN" rpc "$2" erlang nodes "[$3]" --cookie "$COOKIE"
    ((EXIT_STATUS == 0)) || fail "aemp rpc $2 erlang nodes [$3] exited with $EXIT_STATUS"
}

begin_test
export AEMP_PROFILES=$WORK/profiles
printf '[fast]\nseed_min_ms = 100\nseed_max_ms = 1000\nmesh_interval_ms = 300\n' >"$AEMP_PROFILES"
chmod 600 "$AEMP_PROFILES"

# c first: its seed a is not running yet (in mode embedded c holds the EPMD)
start_aemp c --profile fast --seeds "a@$HOST"
start_erl a
ospid=$(erl_ospid a)
[[ $ospid =~ ^[0-9]+$ ]] || fail "no OS pid from a: '$ospid'"
wait_line "$WORK/c.out" "^aemp: node up: a@$HOST\$" 15
nodes_of n1 "a@$HOST" hidden
grep -q "c@$HOST" "$WORK/n1.out" || fail "a does not list c in nodes(hidden): $(cat "$WORK/n1.out")"

# a dies and comes back: c connects again
log "kill -9 $ospid (a@$HOST)"
kill -KILL "$ospid"
wait_line "$WORK/c.out" "^aemp: node down: a@$HOST" 10
start_erl a
wait_for "c to reconnect to a" 15 up_count 2 "a@$HOST"

# b connects to a (visible); c meshes with b through a
start_erl b "$COOKIE" -eval "pong = net_adm:ping('a@$HOST')"
wait_line "$WORK/c.out" "^aemp: node up: b@$HOST\$" 15
nodes_of n2 "b@$HOST" hidden
grep -q "c@$HOST" "$WORK/n2.out" || fail "b does not list c in nodes(hidden): $(cat "$WORK/n2.out")"

# the C node's own erlang:nodes/0,1, as a hidden Erlang node answers
nodes_of n3 "c@$HOST" "[visible, hidden]"
grep -q "a@$HOST" "$WORK/n3.out" && grep -q "b@$HOST" "$WORK/n3.out" ||
    fail "c's nodes([visible, hidden]) lacks a or b: $(cat "$WORK/n3.out")"
nodes_of n4 "c@$HOST" ""
expect_line "$WORK/n4.out" '^\[\]$'

# failures logged once per outage (two: before a started, after it died)
! grep -q "cannot connect to a@" "$WORK/c.err" || fail "per-attempt failure lines in c's log"
fails=$(grep -c "seed a@$HOST: cannot connect" "$WORK/c.err" || true)
((fails >= 1 && fails <= 2)) || fail "$fails seed failure lines in c's log, want 1 or 2"
pass
