# shellcheck shell=bash source-path=SCRIPTDIR
# ticks: an Erlang node with a 3 s net_ticktime stays connected to an aemp
# node with the default 60 s while idle for two of its tick times (aemp
# answers its ticks); a C node with a 3 s net_ticktime drops an Erlang peer
# that goes silent (SIGSTOP, the TCP connection stays open).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
start_aemp c
erl_test t idle "'c@$HOST'" "$COOKIE" -kernel net_ticktime 3

start_erl v
ospid=$(erl_ospid v)
[[ $ospid =~ ^[0-9]+$ ]] || fail "no OS pid from v: '$ospid'"
start_bg cn "$AEMP_CNODE" tickdown cn "$COOKIE" "v@$HOST" 20000
wait_line "$WORK/cn.out" "^node up: v@$HOST\$" 10
log "kill -STOP $ospid (v@$HOST)"
kill -STOP "$ospid"
start=$(now_ms)
expect_exit cn 12 0
elapsed=$(($(now_ms) - start))
kill -KILL "$ospid"
cat "$WORK/cn.out"
expect_line "$WORK/cn.out" "^node down: v@$HOST \\(.*([Tt]ick|[Tt]ime)"
log "silent peer dropped after $elapsed ms"
((elapsed >= 1500)) || fail "peer dropped after $elapsed ms, before it could have been silent for long"
pass
