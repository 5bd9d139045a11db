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

# the same from Elixir; the script is copied where an OTP chroot sees it
cp "$AEMP_EXAMPLES/supervise.exs" "$WORK/supervise.exs"
run_fg ex 40 elixir --sname ex --cookie "$COOKIE" --erl "-start_epmd false" -pa "$AEMP_EBIN" \
    "$WORK/supervise.exs" "w@$HOST"
cat "$WORK/ex.out" "$WORK/ex.err"
((EXIT_STATUS == 0)) || fail "elixir exited with $EXIT_STATUS"
expect_line "$WORK/ex.out" '^restarted as #PID<[0-9.]+>, which answers$'
expect_line "$WORK/ex.out" '^supervisor stopped, port stopped$'
expect_peer_release "$WORK/ex.out" ELIXIR
two_stopped() { (($(grep -c 'stopped: shutdown$' "$WORK/w.out") == 2)); }
wait_for "two ports stopped with shutdown" 10 two_stopped
! grep -Eq 'Sanitizer|runtime error:' "$WORK/w.err" || fail "sanitizer report from the C node"
kill -TERM "${PIDS[w]}"
pass
