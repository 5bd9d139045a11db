# shellcheck shell=bash source-path=SCRIPTDIR
# hostile: well-formed input meant to hurt. An atom with a newline and a
# forged log line in it (an rpc module name) is logged escaped, so no log
# line starts with the forgery; a message nested 20,000 deep is dropped and
# logged while the connection stays up; one 5,000 deep is echoed intact.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
AEMP_LOG=info start_aemp c
erl_test t hostile "'c@$HOST'"
wait_line "$WORK/c.err" "nested deeper than 10000 levels dropped" 10
expect_line "$WORK/c.err" 'evil\\x0aaemp error: forged line'
! grep -q '^aemp error: forged line' "$WORK/c.err" || fail "a log line was forged"
pass
