# shellcheck shell=bash source-path=SCRIPTDIR
# db: the distributed database (docs/database.md) between two C nodes
# (dbnode.c, written with the db API) and an Erlang node whose test
# process speaks the aemp_db replication protocol by hand
# (aemp_interop:run(db, ...)): shares are exchanged on connect, updates
# carry Lamport stamps, C nodes converge, ties go to the greater node name,
# malformed messages are dropped; a node's entries vanish when it goes
# (the Erlang node halts, a C node is killed).
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
erl_test t db "{'c1@$HOST', 'c2@$HOST'}"
# t halted: its entry e1 vanishes from c1's view, c2's stay
reg="c2@$HOST#<[0-9]+\.[0-9]+\.[0-9]+>=undefined@c2@$HOST"
wait_line "$WORK/c1.out" "^view f: $reg k1=v2@c2@$HOST\$" 15
# c2 is killed: its entries vanish from c1's view
kill -KILL "${PIDS[c2]}"
wait_line "$WORK/c1.out" "^view f:\$" 30
kill -TERM "${PIDS[c1]}"
expect_exit c1 10 0
! grep -Eq 'Sanitizer|runtime error:' "$WORK/c1.out" "$WORK/c1.err" ||
    fail "sanitizer report in dbnode"
pass
