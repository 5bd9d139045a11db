# shellcheck shell=bash source-path=SCRIPTDIR
# monitors: an Erlang process monitors a registered C port 100,000 times
# and demonitors each (oldest first) within the test's deadline, the C node
# serving as before; then the node stops cleanly.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
start_aemp c
erl_test t many_monitors "'c@$HOST'"
pass
