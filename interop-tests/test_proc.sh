# shellcheck shell=bash source-path=SCRIPTDIR
# proc: the process layer across the boundary (procnode.c driven by
# aemp_interop:run(proc | proc_links | proc_lost, ...)): Erlang monitors
# and links C ports, exit/2 with kill gives killed (to the killed one's
# links too, on either side), a link's kill stays kill, normal does not
# travel, trap_exit is respected; C ports monitor and link Erlang processes
# (by pid and by name, noproc for a name nobody holds), learn their exit
# reasons, unlink and demonitor; unlinks from either side are acknowledged
# (UNLINK_ID) so that a later link holds; pids of ports with ids past 2^28
# and 2^32 work. Then lost connections: a second Erlang node u is killed
# (kill -9) and the C side's monitors and links of its processes fire with
# noconnection; the test node disconnects from the C node and every monitor
# and link between them fires with noconnection on both sides.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
: "${AEMP_PROCNODE:?AEMP_PROCNODE must name the procnode test program}"
# shellcheck disable=SC2086 # AEMP_WRAPPER is a command line to split
start_bg pn ${AEMP_WRAPPER:-} "$AEMP_PROCNODE" "pn@$HOST" "$COOKIE"
wait_line "$WORK/pn.out" "^(ready|FAIL)" 15
expect_line "$WORK/pn.out" "^ready pn@$HOST\$"
start_erl u
erl_test t proc "'pn@$HOST'"
erl_test tl proc_links "['pn@$HOST', 'u@$HOST']"
erl_test tc proc_lost "['pn@$HOST', 'u@$HOST']"
kill -TERM "${PIDS[pn]}"
expect_exit pn 10 0
! grep -Eq 'Sanitizer|runtime error:' "$WORK/pn.err" || fail "sanitizer report from procnode"
pass
