# shellcheck shell=bash source-path=SCRIPTDIR
# calls: both ways between an Erlang node and a C node (callnode.c driven
# by aemp_interop:run(calls, ...)). Erlang into C: rpc:call, erpc:call,
# erpc:send_request, rpc:multicall and erpc:multicall (over the C node and
# the Erlang node), erpc:cast, return/throw/error/exit as OTP gives them
# for the same function on the Erlang node, the caller's timeout (the C
# node serves on, nothing late arrives), gen_server:call of a C port in
# every tag form, a late gen_server reply dropped. C into Erlang:
# aemp_call (each kind, undef, io output, {signal, R}, an abandoned call
# running on, an unreachable node), aemp_gen_call of a gen_server (name,
# pid, noproc, timeout with the late reply dropped, the server's death),
# aemp_cal (pid, name, non-tuple message, timeout, death, noproc).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
: "${AEMP_CALLNODE:?AEMP_CALLNODE must name the callnode test program}"
# shellcheck disable=SC2086 # AEMP_WRAPPER is a command line to split
start_bg cn ${AEMP_WRAPPER:-} "$AEMP_CALLNODE" "cn@$HOST" "$COOKIE"
wait_line "$WORK/cn.out" "^(ready|FAIL)" 15
expect_line "$WORK/cn.out" "^ready cn@$HOST\$"
erl_test t calls "'cn@$HOST'"
kill -TERM "${PIDS[cn]}"
expect_exit cn 10 0
! grep -q "unexpected answer\|bad request\|failed" "$WORK/cn.out" ||
    fail "callnode reported a problem: $(grep -m 3 "unexpected answer\|bad request\|failed" "$WORK/cn.out")"
! grep -Eq 'Sanitizer|runtime error:' "$WORK/cn.err" || fail "sanitizer report from callnode"
pass
