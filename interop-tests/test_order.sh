# shellcheck shell=bash source-path=SCRIPTDIR
# order: 20,000 messages through the echo port come back in order.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
start_aemp c
erl_test t echo_order "'c@$HOST'"
pass
