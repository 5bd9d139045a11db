# shellcheck shell=bash source-path=SCRIPTDIR
# cnode_send: a C program (cnode.c) connects to an Erlang node, sends to a
# registered process, learns a pid from the reply and sends to that pid.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
begin_epmd_holder
erl_cmd e "$COOKIE" -eval "aemp_interop:run(cnode_peer, 'cn@$HOST')"
start_bg e "${ERL_CMD[@]}"
wait_line "$WORK/e.out" '^READY ' 20

start_bg cn "$AEMP_CNODE" send cn "$COOKIE" "e@$HOST" 20000
expect_exit cn 25 0
cat "$WORK/cn.out"
expect_line "$WORK/cn.out" '^cnode: send ok$'

expect_exit e 15 0
cat "$WORK/e.out"
expect_line "$WORK/e.out" '^PASS cnode_peer$'
expect_peer_release "$WORK/e.out"
pass
