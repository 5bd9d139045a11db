# shellcheck shell=bash source-path=SCRIPTDIR
# load: erl on host A sends {seq, N} to the C node's registered port on
# host B, planned at 100,000 messages a second for 60 s (batches of 1000
# every 10 ms, N = 1..6,000,000), then {done, Total, Self}. A machine that
# cannot keep up (2 busy cores, a sanitizer build) sends for at most 75 s
# and announces fewer. The C sink checks that every N is the previous one
# + 1 (no gap, no reordering, no duplicate) and answers with its count.
# Asserts: every message sent was received, in order, and the C process's
# RSS (sampled every 5 s, and once more when the sender is done) stays
# flat: the last sample within max(20 %, 16 MB) of the sample taken 10 s
# in. The rate the sink saw is measured and printed ("RATE N msgs/s"), and
# never fails the test: it depends on the machine and on what else runs.
# shellcheck source=fault_lib.sh
source "$(dirname "$0")/fault_lib.sh"

BATCHES=${AEMP_FAULT_LOAD_BATCHES:-6000}
BATCH=1000
TOTAL=$((BATCHES * BATCH))
SECONDS_PLANNED=$((BATCHES / 100))
PLANNED_RATE=$((BATCH * 100))
MAX_SEND_S=${AEMP_FAULT_LOAD_MAX_S:-$((SECONDS_PLANNED + 15))}
RSS_ABS_KB=$((16 * 1024))

fault_hosts 4
start_epmd "$NS_A"
C=c@$IP_B
start_cnode "$C" "$NS_B" 60
cpid=${PIDS[c]}

start_erl_in a "$NS_A" "$IP_A" 60 "aemp_fault:load('$C', $BATCHES, $BATCH, $((MAX_SEND_S * 1000)))"
wait_line "$WORK/c.out" "^node up: a@$IP_A " 20
t0=$(now_ms)
log "sending $TOTAL messages in $SECONDS_PLANNED s (at most $MAX_SEND_S s)"

# RSS every 5 s until the sender is done (polled: no sleep decides an outcome).
declare -a RSS_T=() RSS_KB=()
next=$t0
deadline=$((t0 + (MAX_SEND_S + 40) * 1000))
while ! not_running "${PIDS[a]}"; do
    now=$(now_ms)
    ((now < deadline)) || fail "the Erlang sender did not finish within $((MAX_SEND_S + 40)) s"
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
((sent > 0)) || fail "the sender sent nothing"
expect_line "$WORK/c.out" "^sink: count $sent errors 0 "
((count == sent)) || fail "the sink counted $count, the sender sent $sent"
((errors == 0)) || fail "the sink saw $errors order errors: $(line_of "$WORK/c.out" 'first order error')"
((elapsed > 0)) || fail "the sink measured no elapsed time"
rate=$((count * 1000 / elapsed))
log "sent $sent of $TOTAL planned in $send_ms ms; the sink got all $count in order in $elapsed ms"
echo "RATE $rate msgs/s (planned $PLANNED_RATE; $count messages in $elapsed ms)"
((rate * 100 >= PLANNED_RATE * 95)) ||
    log "below 95 % of the planned rate: this machine (or what else ran) did not keep up; not a failure"

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
