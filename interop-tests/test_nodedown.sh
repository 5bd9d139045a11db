# shellcheck shell=bash source-path=SCRIPTDIR
# nodedown: an Erlang node connected to the C node is killed with SIGKILL;
# the C node's nodes callback reports it down.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
begin_epmd_holder
start_erl v
ospid=$(erl_ospid v)
[[ $ospid =~ ^[0-9]+$ ]] || fail "no OS pid from v: '$ospid'"

start_bg cn "$AEMP_CNODE" nodedown cn "$COOKIE" "v@$HOST" 20000
wait_line "$WORK/cn.out" "^node up: v@$HOST\$" 10
log "kill -9 $ospid (v@$HOST)"
kill -KILL "$ospid"
expect_exit cn 10 0
cat "$WORK/cn.out"
expect_line "$WORK/cn.out" "^node down: v@$HOST"
pass
