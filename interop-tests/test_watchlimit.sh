# shellcheck shell=bash source-path=SCRIPTDIR
# watchlimit: procnode.c with max_watches_per_peer 5; an Erlang process
# monitors a C port six times: the sixth monitor fires at once with
# system_limit, a link beyond the limit breaks at once with it (the port
# lives on), the refusal is logged; one monitor taken back makes room for
# another; the port dies and the five held fire with its real reason.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
: "${AEMP_PROCNODE:?AEMP_PROCNODE must name the procnode test program}"
# shellcheck disable=SC2086 # AEMP_WRAPPER is a command line to split
start_bg pn ${AEMP_WRAPPER:-} "$AEMP_PROCNODE" "pn@$HOST" "$COOKIE" 5
wait_line "$WORK/pn.out" "^(ready|FAIL)" 15
expect_line "$WORK/pn.out" "^ready pn@$HOST\$"
erl_test t watch_limit "'pn@$HOST'"
expect_line "$WORK/pn.err" "t@$HOST: a link or monitor refused: .*max_watches_per_peer \\(5\\)"
kill -TERM "${PIDS[pn]}"
expect_exit pn 10 0
! grep -Eq 'Sanitizer|runtime error:' "$WORK/pn.err" || fail "sanitizer report from procnode"
pass
