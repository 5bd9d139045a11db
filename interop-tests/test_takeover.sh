# shellcheck shell=bash source-path=SCRIPTDIR
# takeover: aemp nodes A (first: holds the embedded EPMD in mode embedded) and
# B; A stops on SIGTERM; B is registered again within a deadline and an Erlang
# node started afterwards reaches B.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

# shellcheck disable=SC2317 # called through wait_for
listed() { # NAME...: aemp names lists exactly these names
    local want got
    want=$(printf 'name %s\n' "$@" | sort)
    got=$("$AEMP_BIN" names | grep -E '^name ' | sed -E 's/ at port [0-9]+$//' | sort) || return 1
    [[ $got == "$want" ]]
}

begin_test
start_aemp a
start_aemp b
wait_for "aemp names to list a and b" 10 listed a b

kill -TERM "${PIDS[a]}"
expect_exit a 10 0
wait_for "b to be registered again (alone)" 15 listed b
wait_for "epmd -names to list b" 5 epmd_lists b
expect_no_epmd_process
erl_test t ping_node "'b@$HOST'"
pass
