# shellcheck shell=bash source-path=SCRIPTDIR
# batch: an Erlang node streams 105,000 small messages one way to a C node
# on the same host; the C node reads them in batches (read_batch_ms, its
# debug log says so) and counts every message and byte. `aemp run
# --read-batch` sets the delay or turns batching off, and refuses bad values.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
begin_epmd_holder
# shellcheck disable=SC2086 # AEMP_WRAPPER is a command line to split
start_bg c env AEMP_LOG=debug ${AEMP_WRAPPER:-} "$AEMP_BENCH" --name "c@$HOST" --cookie "$COOKIE"
erl_test t batch_stream "'c@$HOST'"
expect_line "$WORK/c.err" "connection to t@$HOST: small packets streaming in, reading in batches"

# The CLI option, as read_batch_ms in the API and profiles: off turns
# batching off, 0 is the default (1 ms), a value out of range is refused.
AEMP_LOG=debug start_aemp off --read-batch off
expect_line "$WORK/off.err" "read batching off"
AEMP_LOG=debug start_aemp zero --read-batch 0
expect_line "$WORK/zero.err" "read batching: 1 ms"
AEMP_LOG=debug start_aemp five --read-batch 5
expect_line "$WORK/five.err" "read batching: 5 ms"
run_fg bad 10 "$AEMP_BIN" run bad --cookie "$COOKIE" --read-batch 1001
((EXIT_STATUS == 2)) || fail "aemp run --read-batch 1001 exited with $EXIT_STATUS, expected 2"
expect_line "$WORK/bad.err" "bad read batch '1001'"
pass
