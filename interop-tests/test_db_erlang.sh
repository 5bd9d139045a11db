# shellcheck shell=bash source-path=SCRIPTDIR
# db_erlang: the Erlang application's database alone (erlang/src/aemp.erl,
# aemp_db.erl) on Erlang nodes t, a, b and c, all running the application
# aemp (aemp_interop:run(db_erlang, ...) -> aemp_db_interop on t): sets
# converge on every node; concurrent sets of one subkey on a and b end with
# the same, predicted winner everywhere; db_mon messages; hostile messages
# to aemp_db are dropped; fake peers get a's share once each, and their
# replaced shares are told as what differs; a db_reg entry and its pg
# membership go with their pid; a partition of a and b drops each one's
# entries at the other and its heal brings them back; a killed node's
# entries vanish; a 10,000-key family reaches c, started after it was set.
# Then the Elixir example examples/db.exs joins the cluster from Elixir.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
begin_epmd_holder
# no node connects to others on its own (global's mesh): the checks cut and
# heal connections themselves
start_erl a "$COOKIE" -kernel connect_all false
start_erl b "$COOKIE" -kernel connect_all false
erl_cmd t "$COOKIE" -kernel connect_all false -eval "aemp_interop:run(db_erlang, ['a@$HOST', 'b@$HOST', 'c@$HOST'])"
start_bg t "${ERL_CMD[@]}"
# c starts once the big family is set, with the application running
wait_line "$WORK/t.out" "^(START c@$HOST|FAIL )" 40
expect_line "$WORK/t.out" "^START c@$HOST$"
start_erl c "$COOKIE" -kernel connect_all false -eval 'application:ensure_all_started(aemp)'
wait_exit t 40
cat "$WORK/t.out"
((EXIT_STATUS == 0)) || fail "the Erlang checks exited with status $EXIT_STATUS"
expect_line "$WORK/t.out" '^PASS db_erlang$'
expect_peer_release "$WORK/t.out"
grep -q 'aemp_db: dropped unexpected message' "$WORK/a.out" "$WORK/a.err" ||
    fail "node a did not log the hostile messages it dropped"

# the Elixir example, with a
run_example_exs db.exs "a@$HOST"
expect_line "$WORK/ex.out" "^a@$HOST set \"a@$HOST\" => "
expect_line "$WORK/ex.out" "^a@$HOST sees %\\{.*\"ex@$HOST\" => "
expect_line "$WORK/ex.out" '^gone with its process: .*'
pass
