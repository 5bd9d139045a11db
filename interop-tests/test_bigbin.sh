# shellcheck shell=bash source-path=SCRIPTDIR
# bigbin: a 4 MB binary round-trips through the echo port.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
start_aemp c
erl_test t echo_big "'c@$HOST'"
pass
