# shellcheck shell=bash source-path=SCRIPTDIR
# load: erl on host A sends {seq, N} to the C node's registered port on
# host B, 100,000 messages a second for 60 s (batches of 1000 every 10 ms,
# N = 1..6,000,000), then {done, Total, Self}. The C sink checks that every
# N is the previous one + 1 (no gap, no reordering, no duplicate) and
# answers with its count. Asserts: 6,000,000 received in order, the sink
# saw them arrive at >= 95,000 msgs/s, and the C process's RSS (sampled
# every 5 s, and once more when the sender is done) stays flat: the last
# sample within max(20 %, 16 MB) of the sample taken 10 s in.
# shellcheck source=fault_lib.sh
source "$(dirname "$0")/fault_lib.sh"

BATCHES=${AEMP_FAULT_LOAD_BATCHES:-6000}
BATCH=1000
TOTAL=$((BATCHES * BATCH))
SECONDS_PLANNED=$((BATCHES / 100))
MIN_RATE=95000
RSS_ABS_KB=$((16 * 1024))

fault_hosts 4
start_epmd "$NS_A"
C=c@$IP_B
start_cnode "$C" "$NS_B" 60
cpid=${PIDS[c]}

start_erl_in a "$NS_A" "$IP_A" 60 "aemp_fault:load('$C', $BATCHES, $BATCH)"
wait_line "$WORK/c.out" "^node up: a@$IP_A " 20
t0=$(now_ms)
log "sending $TOTAL messages in $SECONDS_PLANNED s"

# RSS every 5 s until the sender is done (polled: no sleep decides an outcome).
declare -a RSS_T=() RSS_KB=()
next=$t0
deadline=$((t0 + (SECONDS_PLANNED + 40) * 1000))
while ! not_running "${PIDS[a]}"; do
    now=$(now_ms)
    ((now < deadline)) || fail "the Erlang sender did not finish within $((SECONDS_PLANNED + 40)) s"
    if ((now >= next)); then
        alive "$cpid" || fail "the C node died under load"
        RSS_T+=($(((now - t0) / 1000)))
        RSS_KB+=("$(rss_kb "$cpid")")
        next=$((next + 5000))
    fi
    sleep 0.1
done
expect_exit a 5 0
alive "$cpid" || fail "the C node died under load"
RSS_T+=($((($(now_ms) - t0) / 1000)))
RSS_KB+=("$(rss_kb "$cpid")")
cat "$WORK/a.out"
expect_line "$WORK/a.out" '^PASS load$'

samples=""
for i in "${!RSS_T[@]}"; do
    samples+=" ${RSS_T[$i]}s=${RSS_KB[$i]}"
done
log "C node RSS (KiB):$samples"

read -r _ count errors elapsed <<<"$(line_of "$WORK/a.out" '^SINK ')"
read -r _ sent send_ms <<<"$(line_of "$WORK/a.out" '^SENT ')"
expect_line "$WORK/c.out" "^sink: count $TOTAL errors 0 "
((count == TOTAL)) || fail "the sink counted $count, not $TOTAL"
((errors == 0)) || fail "the sink saw $errors order errors: $(line_of "$WORK/c.out" 'first order error')"
((elapsed > 0)) || fail "the sink measured no elapsed time"
rate=$((count * 1000 / elapsed))
log "sent $sent in $send_ms ms; the sink got $count in order in $elapsed ms: $rate msgs/s"
((rate >= MIN_RATE)) || fail "the sink received $rate msgs/s, below $MIN_RATE"

# Flat memory: compare the last sample with the one 10 s in.
((${#RSS_KB[@]} >= 4)) || fail "only ${#RSS_KB[@]} RSS samples"
ref=${RSS_KB[2]}
last=${RSS_KB[-1]}
slack=$((ref / 5 > RSS_ABS_KB ? ref / 5 : RSS_ABS_KB))
log "RSS at ${RSS_T[2]} s: $ref KiB, last (${RSS_T[-1]} s): $last KiB, allowed growth $slack KiB"
if asan_build "$AEMP_FAULT_NODE"; then
    log "ASan build: RSS bound not checked (LeakSanitizer checks leaks at exit)"
else
    ((last <= ref + slack)) || fail "the C node's RSS grew from $ref KiB to $last KiB under load"
fi
pass
