# shellcheck shell=bash source-path=SCRIPTDIR
# own_host: this host's name resolves as erl resolves it. When the host name
# does not resolve (no /etc/hosts line, no DNS), erl still reaches nodes on
# `x@<host>` through 127.0.0.1 (inet:gethostbyname_self); `aemp ping` and
# `aemp names HOST` must as well.
#
# Not yet in AEMP_INTEROP_TESTS_LIST: it passes once the library's resolvers
# (src/node/conn.c and src/epmd/client.c, on_resolved) fall back to
# 127.0.0.1 for this host's own name, as erl does.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
# unshare --mount-proc gave the test its own mount namespace: hide the host
# name from /etc/hosts for this test only.
grep -Ev "[[:space:]]$HOST([[:space:]]|\$)" /etc/hosts >"$WORK/hosts" || true
mount --bind "$WORK/hosts" /etc/hosts
! getent hosts "$HOST" >/dev/null || fail "$HOST still resolves: $(getent hosts "$HOST")"

start_aemp c
start_erl p
# erl resolves its own host name without /etc/hosts.
erl_test t ping "'c@$HOST'"

run_fg ping_erl 20 "$AEMP_BIN" ping "p@$HOST" --cookie "$COOKIE"
((EXIT_STATUS == 0)) || fail "aemp ping p@$HOST exited with $EXIT_STATUS: $(cat "$WORK/ping_erl.err")"
expect_line "$WORK/ping_erl.out" '^pong$'
run_fg ping_short 20 "$AEMP_BIN" ping p --cookie "$COOKIE"
((EXIT_STATUS == 0)) || fail "aemp ping p exited with $EXIT_STATUS: $(cat "$WORK/ping_short.err")"
run_fg ping_aemp 20 "$AEMP_BIN" ping "c@$HOST" --cookie "$COOKIE"
((EXIT_STATUS == 0)) || fail "aemp ping c@$HOST exited with $EXIT_STATUS: $(cat "$WORK/ping_aemp.err")"

run_fg names_host 10 "$AEMP_BIN" names "$HOST"
((EXIT_STATUS == 0)) || fail "aemp names $HOST exited with $EXIT_STATUS: $(cat "$WORK/names_host.err")"
want=$(names_of epmd -names)
got=$(names_of cat "$WORK/names_host.out")
[[ $got == "$want" ]] || fail "aemp names $HOST lists '$got', epmd -names lists '$want'"
# Only this host's own name falls back to loopback.
run_fg names_other 10 "$AEMP_BIN" names "no-such-host-$HOST"
((EXIT_STATUS == 1)) || fail "aemp names of an unknown host exited with $EXIT_STATUS, expected 1"
pass
