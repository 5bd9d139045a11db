# shellcheck shell=bash source-path=SCRIPTDIR
# flood: connection slots no one can starve. From 127.0.0.2, flood.c keeps
# hundreds of idle and half-handshake connections open to the C node and
# idle ones to EPMD, reopening each as it is closed; meanwhile an Erlang
# node on 127.0.0.1 connects, pings, gets an echo and registers a name with
# EPMD once a second for ten seconds, succeeding every time. The C node's
# refusals come as summary lines, not a line each.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
: "${AEMP_FLOOD:?AEMP_FLOOD must name the flood test program}"
start_aemp c
port=$(epmd -names | sed -n 's/^name c at port \([0-9]*\)$/\1/p')
[[ -n $port ]] || fail "no port for c in: $(epmd -names)"
# more than the 1024 places all connections once shared
ulimit -n 8192
start_bg flood "$AEMP_FLOOD" 127.0.0.2 "$port" 4369 600 40
wait_line "$WORK/flood.out" "^flooding" 10
erl_test t flood_ok "'c@$HOST'"
kill -TERM "${PIDS[flood]}"
expect_exit flood 10 0
cat "$WORK/flood.out"
closed=$(sed -n 's/.*connections, \([0-9]*\) closed under us$/\1/p' "$WORK/flood.out")
((closed > 100)) || fail "the flood's connections were not dropped ($closed closed)"
expect_line "$WORK/c.err" "handshakes dropped for newer ones from the same address"
lines=$(wc -l <"$WORK/c.err")
((lines < 60)) || fail "the C node logged $lines lines under the flood"
pass
