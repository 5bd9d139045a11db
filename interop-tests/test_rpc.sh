# shellcheck shell=bash source-path=SCRIPTDIR
# rpc: Erlang calls C functions exported by `aemp run` (aemp:echo/N,
# aemp:fail/1) with rpc:call, erpc:call and rpc:cast; a function that is not
# exported is answered with undef and logged.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
start_aemp c
AEMP_LOG=info erl_test t rpc "'c@$HOST'"
pass
