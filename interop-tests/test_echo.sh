# shellcheck shell=bash source-path=SCRIPTDIR
# echo: every term type sent to the echo port of `aemp run` comes back =:=.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
start_aemp c
erl_test t echo_types "'c@$HOST'"
pass
