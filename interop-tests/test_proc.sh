# shellcheck shell=bash source-path=SCRIPTDIR
# proc: the process layer across the boundary (procnode.c driven by
# aemp_interop:run(proc, ...)): Erlang monitors and links C ports, exit/2
# with kill gives killed, a link's kill stays kill, normal does not travel;
# C ports monitor and link Erlang processes (by pid and by name), learn
# their exit reasons, unlink and demonitor; pids of ports with ids past
# 2^28 and 2^32 work.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
: "${AEMP_PROCNODE:?AEMP_PROCNODE must name the procnode test program}"
# shellcheck disable=SC2086 # AEMP_WRAPPER is a command line to split
start_bg pn ${AEMP_WRAPPER:-} "$AEMP_PROCNODE" "pn@$HOST" "$COOKIE"
wait_line "$WORK/pn.out" "^(ready|FAIL)" 15
expect_line "$WORK/pn.out" "^ready pn@$HOST\$"
erl_test t proc "'pn@$HOST'"
kill -TERM "${PIDS[pn]}"
expect_exit pn 10 0
! grep -Eq 'Sanitizer|runtime error:' "$WORK/pn.err" || fail "sanitizer report from procnode"
pass
