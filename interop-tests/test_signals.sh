# shellcheck shell=bash source-path=SCRIPTDIR
# signals: `aemp run` exits 0 on SIGTERM and on SIGINT, alone and with a
# connected Erlang peer, which then sees the node go down.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

# stop NAME SIGNAL: the node exits 0 and leaves EPMD.
stop() {
    kill "-$2" "${PIDS[$1]}"
    expect_exit "$1" 10 0
    expect_line "$WORK/$1.out" "^aemp: node $1(@$HOST)? ready"
    if [[ $MODE == epmd ]]; then
        wait_for "epmd to drop $1" 5 epmd_lacks "$1"
    fi
}

begin_test
for sig in TERM INT; do
    name=alone_${sig,,}
    start_aemp "$name"
    stop "$name" "$sig"

    name=peer_${sig,,}
    start_aemp "$name"
    erl_cmd "w_${sig,,}" "$COOKIE" -eval "aemp_interop:run(watch_down, '$name@$HOST')"
    start_bg "w_${sig,,}" "${ERL_CMD[@]}"
    wait_line "$WORK/w_${sig,,}.out" "^(CONNECTED|FAIL)" 20
    expect_line "$WORK/w_${sig,,}.out" "^CONNECTED $name@$HOST\$"
    stop "$name" "$sig"
    expect_exit "w_${sig,,}" 10 0
    expect_line "$WORK/w_${sig,,}.out" '^PASS watch_down$'
    expect_peer_release "$WORK/w_${sig,,}.out"
done
pass
