# shellcheck shell=bash source-path=SCRIPTDIR
# pg: the C nodes of `aemp run` are peers of OTP pg scope aemp on an erl
# node (docs/database.md "Families of ports and pg"): each joins its echo
# port to group aemp_demo, which pg:get_members on erl lists; joins and
# leaves of Erlang processes (atom and binary groups, twice, deaths) show
# at the C side through aemp_demo:members/1; the two C nodes see each
# other's ports once connected (C to C pg); a killed C port leaves pg on
# erl; a lost connection drops erl's members at the C side and a new one
# brings them back; erl's scope is the same process from start to end (it
# never got a message that crashes it), then a new scope there is found
# by the C nodes (an Erlang scope never discovers a hidden node); no C
# node dropped a message of erl's scope as malformed.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
start_aemp c
start_aemp d
expect_line "$WORK/c.out" '^aemp: port echo joined family aemp_demo$'
erl_test t pg "['c@$HOST', 'd@$HOST']"
for n in c d; do
    ! grep -q 'pg aemp: dropped' "$WORK/$n.err" ||
        fail "$n dropped a message of a pg scope: $(grep 'pg aemp: dropped' "$WORK/$n.err" | head -n 3)"
done
pass
