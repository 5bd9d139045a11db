# shellcheck shell=bash source-path=SCRIPTDIR
# db: the distributed database (docs/database.md) between two C nodes
# (dbnode.c, written with the db API) and an Erlang node whose test
# process speaks the aemp_db replication protocol by hand
# (aemp_interop:run(db, ...)): shares are exchanged on connect, updates
# carry Lamport stamps, C nodes converge, ties go to the greater node name,
# malformed messages are dropped; a node's entries vanish when it goes
# (the Erlang node halts, a C node is killed). Then the Erlang node runs
# the application aemp, whose own aemp_db takes over: sets in C and in
# Erlang reach the other side (db_family, db_mon), a concurrent set of one
# subkey ends with the same winner on all three nodes. `aemp run`'s
# aemp_demo:family/1 gives a family as a map; `aemp db FAMILY NODE` prints
# a family and its changes until NODE goes.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
: "${AEMP_DBNODE:?AEMP_DBNODE must name the dbnode test program}"
for c in c1 c2; do
    # shellcheck disable=SC2086 # AEMP_WRAPPER is a command line to split
    start_bg $c ${AEMP_WRAPPER:-} "$AEMP_DBNODE" "$c@$HOST" "$COOKIE"
    wait_line "$WORK/$c.out" "^(ready|FAIL)" 15
    expect_line "$WORK/$c.out" "^ready $c@$HOST\$"
done
start_aemp n1
erl_test t db "{'c1@$HOST', 'c2@$HOST', 'n1@$HOST'}"
# c1's view now: the last "view f:" line it printed
last_view() {
    grep '^view f:' "$WORK/c1.out" | tail -n 1 | grep -Eq "$1"
}
# t halted: its entries (e1 of the hand-written peer, then those of the
# application's aemp_db) vanish from c1's view; c1's and c2's stay (c: the
# one of c1, whether it won or lost)
reg="c2@$HOST#<[0-9]+\.[0-9]+\.[0-9]+>=undefined@c2@$HOST"
wait_for "c1's view without t's entries" 15 \
    last_view "^view f: $reg c=c1@c1@$HOST k1=v2@c2@$HOST m=x@c2@$HOST\$"
# aemp db prints c2's share, then a change, then its end with c2
start_bg cli "$AEMP_BIN" db f "c2@$HOST" --cookie "$COOKIE"
# (it meshes with c1 through c2: c1's k1 may show first, then c2's wins)
wait_line "$WORK/cli.out" "^[+~] k1 v2\$" 15
wait_line "$WORK/cli.out" "^\+ c2@$HOST#<[0-9.]+> undefined\$" 15
run_fg snd 15 "$AEMP_BIN" snd "c2@$HOST#ctl" "{set, c2@$HOST#<1.0.1>, <<\"f\">>, <<\"k9\">>, v9}" \
    --cookie "$COOKIE"
((EXIT_STATUS == 0)) || fail "aemp snd exited with $EXIT_STATUS"
wait_line "$WORK/cli.out" "^\+ k9 v9\$" 15
# c2 is killed: its entries vanish from c1's view and from aemp db's
kill -KILL "${PIDS[c2]}"
wait_for "c1's view without c2's entries" 30 last_view "^view f: c=c1@c1@$HOST k1=v1@c1@$HOST\$"
wait_exit cli 30
((EXIT_STATUS == 1)) || fail "aemp db exited with $EXIT_STATUS, not 1, when its node went"
expect_line "$WORK/cli.out" "^- k9\$"
# c1, still connected to aemp db, holds k1 (v1): it shows again
expect_line "$WORK/cli.out" "^~ k1 v1\$"
expect_line "$WORK/cli.err" "connection lost"
kill -TERM "${PIDS[c1]}"
expect_exit c1 10 0
! grep -Eq 'Sanitizer|runtime error:' "$WORK/c1.out" "$WORK/c1.err" ||
    fail "sanitizer report in dbnode"
pass
