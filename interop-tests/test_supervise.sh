# shellcheck shell=bash source-path=SCRIPTDIR
# supervise: ports of examples/supervised.c (worker:start/1) as children of
# an Erlang one_for_one supervisor (aemp_interop:run(supervise, ...)) and of
# an Elixir Supervisor (examples/supervise.exs) through aemp_port of the
# Erlang application: a crashed port is restarted with a new pid that
# answers; stopping the supervisor stops the port, and the C side sees it
# die with reason shutdown.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
: "${AEMP_SUPERVISED:?AEMP_SUPERVISED must name examples/supervised.c built}"
: "${AEMP_EXAMPLES:?AEMP_EXAMPLES must name the examples folder}"
# shellcheck disable=SC2086 # AEMP_WRAPPER is a command line to split
start_bg w ${AEMP_WRAPPER:-} "$AEMP_SUPERVISED" "w@$HOST" "$COOKIE"
wait_line "$WORK/w.out" "^node w@$HOST is up" 15
erl_test t supervise "'w@$HOST'"
wait_line "$WORK/w.out" '^worker [0-9]+ stopped: shutdown$' 10
expect_line "$WORK/w.out" '^worker [0-9]+ stopped: \{die,<<"asked to crash">>\}$'
((1 == $(grep -c 'stopped: shutdown$' "$WORK/w.out"))) || fail "not one port stopped by the Erlang supervisor"

# the same from Elixir
run_example_exs supervise.exs "w@$HOST"
expect_line "$WORK/ex.out" '^restarted as #PID<[0-9.]+>, which answers$'
expect_line "$WORK/ex.out" '^supervisor stopped, port stopped$'
two_stopped() { (($(grep -c 'stopped: shutdown$' "$WORK/w.out") == 2)); }
wait_for "two ports stopped with shutdown" 10 two_stopped
! grep -Eq 'Sanitizer|runtime error:' "$WORK/w.err" || fail "sanitizer report from the C node"
kill -TERM "${PIDS[w]}"
pass
