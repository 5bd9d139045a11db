# shellcheck shell=bash source-path=SCRIPTDIR
# partition: erl on host A and fault_node on host B (net_ticktime 4 both)
# are connected (the C node sent {hello, VictimPid}; Erlang linked to that
# port and monitors it). iptables DROP rules on A cut all traffic between the hosts until both
# sides report the node down (tick timeout; the victim port dies of the
# broken link, the registered port `fault` lives on), then are removed. The C node
# then sends {ping, 1, Self} (SIGUSR1): the connection is set up again on
# demand, both sides report nodeup again, Erlang answers {pong, 1, Node}
# and, on its own, sends {welcome, 2} to the C node's registered port; a
# second ping gets {pong, 2, Node}.
# shellcheck source=fault_lib.sh
source "$(dirname "$0")/fault_lib.sh"

TICK=4
BOUND_S=$((TICK + 3))

fault_hosts 3
start_epmd "$NS_A"
A=a@$IP_A
C=c@$IP_B
start_erl_in a "$NS_A" "$IP_A" "$TICK" 'aemp_fault:serve()'
wait_line "$WORK/a.out" '^READY ' 20
start_cnode "$C" "$NS_B" "$TICK" "$A"
cpid=${PIDS[c]}
wait_line "$WORK/c.out" "^node up: $A " 10
wait_line "$WORK/a.out" "^NODEUP $C " 10
wait_line "$WORK/c.out" '^linked ' 10
wait_line "$WORK/c.out" '^welcome 1$' 10

RULES=("INPUT -s $IP_B -j DROP" "OUTPUT -d $IP_B -j DROP")
t_cut=$(now_ms)
for r in "${RULES[@]}"; do
    # shellcheck disable=SC2086 # a rule is several words
    in_ns "$NS_A" iptables -A $r
done
log "partition: traffic between $IP_A and $IP_B dropped"

wait_line "$WORK/c.out" "^node down: $A " "$BOUND_S"
wait_line "$WORK/a.out" "^NODEDOWN $C " "$BOUND_S"
wait_line "$WORK/a.out" '^DOWN noconnection ' 2
wait_line "$WORK/a.out" '^EXIT noconnection ' 2
c_line=$(line_of "$WORK/c.out" "^node down: $A ")
e_line=$(line_of "$WORK/a.out" "^NODEDOWN $C ")
[[ $c_line == "node down: $A (net_tick timeout) "* ]] || fail "C node: $c_line"
[[ $e_line == "NODEDOWN $C net_tick_timeout "* ]] || fail "Erlang: $e_line"
log "partition detected: C node after $(($(last_field "$c_line") - t_cut)) ms," \
    "Erlang after $(($(last_field "$e_line") - t_cut)) ms"
alive "$cpid" || fail "the C node died"
# The link broke on the C side too: the linked port died with noconnection
# (it does not trap exits), the registered port lives on.
wait_line "$WORK/c.out" '^port victim: ' 2
expect_line "$WORK/c.out" '^port victim: dead$'
expect_line "$WORK/c.out" '^port fault: alive$'

for r in "${RULES[@]}"; do
    # shellcheck disable=SC2086 # a rule is several words
    in_ns "$NS_A" iptables -D $r
done
t_heal=$(now_ms)
log "partition healed"

kill -USR1 "$cpid"
wait_line "$WORK/c.out" '^sent ping 1 ' 5
wait_for "a second node up on the C node" 10 at_least "$WORK/c.out" "^node up: $A " 2
wait_for "a second nodeup on Erlang" 10 at_least "$WORK/a.out" "^NODEUP $C " 2
wait_line "$WORK/a.out" '^PING 1 ' 10
wait_line "$WORK/c.out" "^pong 1 $A\$" 10
wait_line "$WORK/c.out" '^welcome 2$' 10
up_line=$(grep -E "^node up: $A " "$WORK/c.out" | tail -n 1)
sent_line=$(line_of "$WORK/c.out" '^sent ping 1 ')
log "ping 1 sent $(($(last_field "$sent_line") - t_heal)) ms after the heal; connection up again" \
    "$(($(last_field "$up_line") - $(last_field "$sent_line"))) ms after that"

kill -USR1 "$cpid"
wait_line "$WORK/c.out" "^pong 2 $A\$" 10
wait_line "$WORK/a.out" '^PING 2 ' 5

# One connection: exactly two ups and one down on each side.
(($(count_lines "$WORK/c.out" '^node up: ') == 2)) || fail "C node: not exactly 2 node up lines"
(($(count_lines "$WORK/c.out" '^node down: ') == 1)) || fail "C node: not exactly 1 node down line"
(($(count_lines "$WORK/a.out" '^NODEUP ') == 2)) || fail "Erlang: not exactly 2 NODEUP lines"
(($(count_lines "$WORK/a.out" '^NODEDOWN ') == 1)) || fail "Erlang: not exactly 1 NODEDOWN line"
! grep -q '^unexpected' "$WORK/c.out" || fail "C node: $(line_of "$WORK/c.out" '^unexpected')"
! grep -q '^UNEXPECTED' "$WORK/a.out" || fail "Erlang: $(line_of "$WORK/a.out" '^UNEXPECTED')"
! grep -q '^connect failed' "$WORK/c.out" || fail "C node: $(line_of "$WORK/c.out" '^connect failed')"
cat "$WORK/c.out" "$WORK/a.out"
pass
