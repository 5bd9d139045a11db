# shellcheck shell=bash source-path=SCRIPTDIR
# names: Erlang nodes register with the EPMD under test (the embedded one in
# mode embedded), find each other through it, and `epmd -names` and
# `aemp names` list the same registrations.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
start_aemp c
# Below the ephemeral range, so free in this private namespace.
port=20404
start_aemp d --port "$port"
start_erl a
start_erl b

epmd -names >"$WORK/epmd_names.out" 2>&1 || fail "epmd -names failed: $(cat "$WORK/epmd_names.out")"
cat "$WORK/epmd_names.out"
expect_line "$WORK/epmd_names.out" "^name d at port $port\$"
for n in a b c; do
    expect_line "$WORK/epmd_names.out" "^name $n at port [0-9]+\$"
done
run_fg aemp_names 10 "$AEMP_BIN" names
((EXIT_STATUS == 0)) || fail "aemp names exited with $EXIT_STATUS"
run_fg aemp_names_host 10 "$AEMP_BIN" names "$HOST"
((EXIT_STATUS == 0)) || fail "aemp names $HOST exited with $EXIT_STATUS"
want=$(names_of cat "$WORK/epmd_names.out")
for f in aemp_names aemp_names_host; do
    got=$(names_of cat "$WORK/$f.out")
    [[ $got == "$want" ]] || fail "$f lists '$got', epmd -names lists '$want'"
done
[[ $(wc -l <<<"$want") -eq 4 ]] || fail "expected 4 registrations, got: $want"

expect_no_epmd_process
erl_test t ping_pair "['a@$HOST', 'b@$HOST']"
erl_test t2 ping_node "'d@$HOST'"
pass
