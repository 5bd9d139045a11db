# shellcheck shell=bash source-path=SCRIPTDIR
# bigmsg_kill: an Erlang node on host A sends a 64 MB binary to the echo
# port of `aemp run` on host B and is killed with SIGKILL while the
# transfer is in progress. An iptables rule on B (connbytes) stops the
# connection after 8 MB, so the kill always lands mid-message; the rule is
# removed right after the kill so that the dead peer's FIN (or RST) gets
# through. Three rounds. The C node must log the connection loss, report
# the node down and stay alive; its RSS, grown by the 8 MB it received,
# must drop back to within 4 MB of its level before the first round after
# each round. At the end it must serve a new Erlang node (ping, echo of a
# term and a 16 MB binary) and its RSS must be within 16 MB of that level.
# shellcheck source=fault_lib.sh
source "$(dirname "$0")/fault_lib.sh"

ROUNDS=3
BIG=$((64 * 1024 * 1024))
STALL_AT=8000000
CPORT=7000
RSS_SLACK_KB=$((16 * 1024))  # at the end, after a 16 MB echo
ROUND_SLACK_KB=$((4 * 1024)) # after each round: half of what was held

fault_hosts 1
start_epmd "$NS_A"
C=c@$IP_B
start_bg c ip netns exec "$NS_B" env --default-signal=INT,TERM AEMP_LOG=info \
    "$AEMP_BIN" run "$C" --cookie "$COOKIE" --ticktime 8 --port "$CPORT"
AEMP_NODES+=(c)
wait_line "$WORK/c.out" "^aemp: node $C ready" 15
cpid=${PIDS[c]}
check_rss=1
if asan_build "$AEMP_BIN"; then
    check_rss=0
    log "ASan build: RSS bounds not checked (LeakSanitizer checks leaks at exit)"
fi

# A first client warms the C node up; then the baseline RSS.
start_erl_in a0 "$NS_A" "$IP_A" 60 "aemp_fault:echo_check('$C', 1048576)"
expect_exit a0 30 0
expect_line "$WORK/a0.out" '^PASS echo_check$'
wait_line "$WORK/c.out" "^aemp: node down: a0@$IP_A " 10
base_kb=$(rss_kb "$cpid")
log "C node RSS before the rounds: $base_kb KiB"

RULE=(INPUT -s "$IP_A" -p tcp --dport "$CPORT" -m connbytes --connbytes "$STALL_AT:"
    --connbytes-dir original --connbytes-mode bytes -j DROP)

dropped_packets() {
    in_ns "$NS_B" iptables -L INPUT -v -x -n | awk '/connbytes/ { print $1 }'
}

# shellcheck disable=SC2317 # called through wait_for
rss_within() {
    (($(rss_kb "$cpid") <= base_kb + $1))
}

# shellcheck disable=SC2317 # called through wait_for
stalled() {
    local n
    n=$(dropped_packets)
    [[ -n $n ]] && ((n > 0))
}

for round in $(seq 1 "$ROUNDS"); do
    a=a$round
    in_ns "$NS_B" iptables -A "${RULE[@]}"
    start_erl_in "$a" "$NS_A" "$IP_A" 60 "aemp_fault:big_send('$C', $BIG)"
    wait_line "$WORK/$a.out" '^SENT ' 20
    wait_for "the transfer to $C to stall at $STALL_AT bytes" 15 stalled
    during_kb=$(rss_kb "$cpid")
    ospid=$(last_field "$(line_of "$WORK/$a.out" '^CONNECTED ')")
    [[ $ospid =~ ^[0-9]+$ ]] || fail "no OS pid from $a: '$ospid'"
    held=$(dropped_packets)
    t_kill=$(now_ms)
    kill -KILL "$ospid"
    in_ns "$NS_B" iptables -D "${RULE[@]}"
    log "round $round: killed $a (pid $ospid) with $held packets held back;" \
        "C node RSS during the transfer $during_kb KiB"
    ((!check_rss || during_kb >= base_kb + 4096)) ||
        fail "round $round: the C node's RSS ($during_kb KiB) did not grow during the transfer" \
            "(before: $base_kb KiB): was the transfer in progress?"
    ! grep -q '^ECHOED' "$WORK/$a.out" || fail "round $round: the 64 MB message got through"
    wait_line "$WORK/c.out" "^aemp: node down: $a@$IP_A " 15
    t_down=$(now_ms)
    log "round $round: $(line_of "$WORK/c.out" "^aemp: node down: $a@") after $((t_down - t_kill)) ms"
    expect_line "$WORK/c.err" "connection to $a@$IP_A closed"
    wait_exit "$a" 10
    alive "$cpid" || fail "round $round: the C node died"
    if ((check_rss)); then
        wait_for "round $round: the C node's RSS to drop back near $base_kb KiB" 5 \
            rss_within "$ROUND_SLACK_KB"
    fi
    log "round $round: C node RSS after node down: $(rss_kb "$cpid") KiB"
done

# Still serving: a new Erlang node pings it and echo works, 16 MB included.
start_erl_in a9 "$NS_A" "$IP_A" 60 "aemp_fault:echo_check('$C', 16777216)"
expect_exit a9 30 0
expect_line "$WORK/a9.out" '^PASS echo_check$'
wait_line "$WORK/c.out" "^aemp: node down: a9@$IP_A " 10

if ((check_rss)); then
    wait_for "the C node's RSS to come back within $RSS_SLACK_KB KiB of $base_kb KiB" 10 \
        rss_within "$RSS_SLACK_KB"
fi
log "C node RSS at the end: $(rss_kb "$cpid") KiB (before the rounds: $base_kb KiB)"
cat "$WORK/c.out"
pass
