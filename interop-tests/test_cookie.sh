# shellcheck shell=bash source-path=SCRIPTDIR
# cookie: a wrong cookie is refused in both directions, with a log line that
# names the cookie.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
start_aemp c

# Erlang with another cookie pings the aemp node: pang, and aemp logs why.
erl_test b pang "'c@$HOST'" other_cookie
wait_line "$WORK/c.err" "[Cc][Oo][Oo][Kk][Ii][Ee].*b@$HOST|b@$HOST.*[Cc][Oo][Oo][Kk][Ii][Ee]" 5
log "aemp run logged: $(grep -i cookie "$WORK/c.err" | head -n 1)"

# The C node with a wrong cookie connects to an Erlang node: refused.
start_erl v
start_bg cn "$AEMP_CNODE" cookie cn wrong_cookie "v@$HOST" 15000
expect_exit cn 20 0
cat "$WORK/cn.out"
expect_line "$WORK/cn.out" '^cnode: PASS refused'
expect_line "$WORK/cn.err" '[Cc][Oo][Oo][Kk][Ii][Ee]'
log "cnode logged: $(grep -i cookie "$WORK/cn.err" | head -n 1)"
# OTP reports the rejected connection attempt itself.
wait_line "$WORK/v.out" "Connection attempt from node cn@$HOST rejected" 5

# aemp ping with a wrong cookie fails and says so.
run_fg ping_bad 20 "$AEMP_BIN" ping "v@$HOST" --cookie wrong_cookie
((EXIT_STATUS != 0 && EXIT_STATUS != 124 && EXIT_STATUS != 137)) ||
    fail "aemp ping with a wrong cookie exited with $EXIT_STATUS (124/137: timed out)"
! grep -q pong "$WORK/ping_bad.out" || fail "aemp ping with a wrong cookie printed pong"
grep -qi cookie "$WORK/ping_bad.out" "$WORK/ping_bad.err" ||
    fail "aemp ping with a wrong cookie does not mention the cookie"
pass
