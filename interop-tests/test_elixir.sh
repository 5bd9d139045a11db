# shellcheck shell=bash source-path=SCRIPTDIR
# elixir: an Elixir node pings the aemp node and gets a map back from echo.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
start_aemp c
run_fg ex 50 elixir --sname ex --cookie "$COOKIE" --erl "-start_epmd false" \
    "$INTEROP_DIR/elixir_echo.exs" "c@$HOST"
cat "$WORK/ex.out" "$WORK/ex.err"
((EXIT_STATUS == 0)) || fail "elixir exited with $EXIT_STATUS"
expect_line "$WORK/ex.out" '^PASS elixir$'
expect_peer_release "$WORK/ex.out" ELIXIR
pass
