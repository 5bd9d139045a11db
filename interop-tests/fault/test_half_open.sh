# shellcheck shell=bash source-path=SCRIPTDIR
# half_open: erl on host A (net_ticktime 4) and fault_node on host B
# (net_ticktime 4) are connected across the veth pair; the C node sends
# the pid of its port `victim` to the Erlang process `fault`, which links
# to it (trapping exits) and monitors it. Then `ip link set va down` on A: no FIN, no RST,
# a true half-open connection. Both sides must notice through ticks alone
# within net_ticktime + 3 s of the link going down: the C node reports
# node down (reason "net_tick timeout"); on the Erlang side the monitor
# fires DOWN with noconnection, the linked process gets
# {'EXIT', Pid, noconnection}, and nodedown comes with net_tick_timeout.
# The link breaks on the C side too: the victim port dies, `fault` lives.
# shellcheck source=fault_lib.sh
source "$(dirname "$0")/fault_lib.sh"

TICK=4
BOUND_MS=$(((TICK + 3) * 1000))

fault_hosts 2
start_epmd "$NS_A"
A=a@$IP_A
C=c@$IP_B
start_erl_in a "$NS_A" "$IP_A" "$TICK" 'aemp_fault:serve()'
wait_line "$WORK/a.out" '^READY ' 20
start_cnode "$C" "$NS_B" "$TICK" "$A"
wait_line "$WORK/c.out" "^node up: $A " 10
wait_line "$WORK/a.out" "^NODEUP $C " 10
wait_line "$WORK/a.out" '^HELLO ' 10
wait_line "$WORK/c.out" '^linked ' 10
wait_line "$WORK/c.out" '^welcome 1$' 10

t_cut=$(now_ms)
ip -n "$NS_A" link set va down
log "link va on A is down"

wait_line "$WORK/c.out" "^node down: $A " $((BOUND_MS / 1000 + 2))
wait_line "$WORK/a.out" '^DOWN ' $((BOUND_MS / 1000 + 2))
wait_line "$WORK/a.out" '^EXIT ' 5
wait_line "$WORK/a.out" "^NODEDOWN $C " 5

c_line=$(line_of "$WORK/c.out" "^node down: $A ")
down_line=$(line_of "$WORK/a.out" '^DOWN ')
exit_line=$(line_of "$WORK/a.out" '^EXIT ')
nodedown_line=$(line_of "$WORK/a.out" "^NODEDOWN $C ")
c_ms=$(($(last_field "$c_line") - t_cut))
down_ms=$(($(last_field "$down_line") - t_cut))
exit_ms=$(($(last_field "$exit_line") - t_cut))
nodedown_ms=$(($(last_field "$nodedown_line") - t_cut))
log "after the link went down: C node down in $c_ms ms ($c_line);" \
    "Erlang DOWN in $down_ms ms, EXIT in $exit_ms ms, nodedown in $nodedown_ms ms"

[[ $c_line == "node down: $A (net_tick timeout) "* ]] ||
    fail "the C node saw the loss other than by tick timeout: $c_line"
[[ $down_line == 'DOWN noconnection '* ]] || fail "monitor: $down_line, not noconnection"
[[ $exit_line == 'EXIT noconnection '* ]] || fail "link: $exit_line, not noconnection"
[[ $nodedown_line == "NODEDOWN $C net_tick_timeout "* ]] ||
    fail "Erlang nodedown: $nodedown_line, not net_tick_timeout"
for what in c_ms down_ms exit_ms nodedown_ms; do
    ((${!what} <= BOUND_MS)) || fail "$what = ${!what} ms exceeds net_ticktime + 3 s = $BOUND_MS ms"
    ((${!what} >= 0)) || fail "$what = ${!what} ms: detected before the link went down"
done
alive "${PIDS[c]}" || fail "the C node died"
# The link broke on the C side too: the linked port died with noconnection
# (it does not trap exits), the registered port lives on.
wait_line "$WORK/c.out" '^port victim: ' 2
expect_line "$WORK/c.out" '^port victim: dead$'
expect_line "$WORK/c.out" '^port fault: alive$'
! grep -q '^unexpected' "$WORK/c.out" || fail "C node: $(line_of "$WORK/c.out" '^unexpected')"
pass
