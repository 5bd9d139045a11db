# shellcheck shell=bash source-path=SCRIPTDIR
# spawn: spawnnode.c driven by aemp_interop:run(spawn, ...): Erlang's
# spawn, spawn_link, spawn_monitor and spawn_opt of init functions the C
# node exported (arguments, $SELF, links, monitors, {die, Text}); functions
# it did not export and bad options answered as the Erlang node answers the
# same spawn itself; the C node spawns Erlang functions with link and
# monitor (aemp_spawn), learns their pids and exit reasons, and answers the
# io requests of their group leader.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
: "${AEMP_SPAWNNODE:?AEMP_SPAWNNODE must name the spawnnode test program}"
# shellcheck disable=SC2086 # AEMP_WRAPPER is a command line to split
start_bg sn env AEMP_LOG=info ${AEMP_WRAPPER:-} "$AEMP_SPAWNNODE" "sn@$HOST" "$COOKIE"
wait_line "$WORK/sn.out" "^(ready|FAIL)" 15
expect_line "$WORK/sn.out" "^ready sn@$HOST\$"
erl_test t spawn "'sn@$HOST'"
# the node logged what it refused and what it could not run
expect_line "$WORK/sn.err" "bad options: answered badopt"
expect_line "$WORK/sn.err" "spawnnode:nofun/0: not exported here: the process exits with undef"
expect_line "$WORK/sn.out" '^gone [0-9]+ \{die,<<"init refused">>\}$'
kill -TERM "${PIDS[sn]}"
expect_exit sn 10 0
! grep -Eq 'Sanitizer|runtime error:' "$WORK/sn.err" || fail "sanitizer report from spawnnode"
pass
