# shellcheck shell=bash source-path=SCRIPTDIR
# batch: an Erlang node streams 105,000 small messages one way to a C node
# on the same host; the C node reads them in batches (read_batch_ms, its
# debug log says so) and counts every message and byte.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
begin_epmd_holder
# shellcheck disable=SC2086 # AEMP_WRAPPER is a command line to split
start_bg c env AEMP_LOG=debug ${AEMP_WRAPPER:-} "$AEMP_BENCH" --name "c@$HOST" --cookie "$COOKIE"
erl_test t batch_stream "'c@$HOST'"
expect_line "$WORK/c.err" "connection to t@$HOST: small packets streaming in, reading in batches"
pass
