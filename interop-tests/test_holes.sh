# shellcheck shell=bash source-path=SCRIPTDIR
# holes: no silent holes. seqsend.c sends {seq, 1}, {seq, 2}, ... without
# pause to the registered name recv on the Erlang node v, which it
# monitors, and prints "down S REASON" (S: the last number sent) whenever
# that monitor fires. v (aemp_interop:seq_recv) writes down every number it
# gets. v is killed with SIGKILL and started again under the same name
# while the sender goes on. Each incarnation must have received an unbroken
# run of numbers (the first from 1), every report must say noconnection,
# and the gap between the incarnations must be covered by a report made
# right before the first number the second incarnation got was sent
# ("down S noconnection" with S = that number - 1): no message got through
# after a lost one before the C side had been told of the loss.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

: "${AEMP_SEQSEND:?AEMP_SEQSEND must name the seqsend test program}"

# start_recv LOG SEQFILE: the receiver v, its output in $WORK/LOG.out. It
# starts without a node name and becomes v once its name recv is there.
start_recv() {
    start_bg "$1" erl -setcookie "$COOKIE" -noshell -start_epmd false -pa "$AEMP_EBIN" \
        -eval "aemp_interop:seq_recv(v, \"$2\")"
    wait_line "$WORK/$1.out" '^READY ' 20
    expect_peer_release "$WORK/$1.out"
}

# has_lines FILE N: FILE has at least N lines.
# shellcheck disable=SC2317 # called through wait_for
has_lines() {
    [[ -f $1 ]] && (($(wc -l <"$1") >= $2))
}

# run_of FILE: "FIRST LAST" when FILE holds consecutive numbers, one a line;
# otherwise says where the run breaks and fails.
run_of() {
    awk 'NR == 1 { first = $1 }
         $0 != first + NR - 1 { printf "line %d is \"%s\", expected %d\n", NR, $0, first + NR - 1; bad = 1; exit 1 }
         END { if (!bad && NR) print first, first + NR - 1; if (!NR) { print "no line"; exit 1 } }' "$1"
}

begin_test
begin_epmd_holder
start_recv v1 "$WORK/v1.seq"
# shellcheck disable=SC2086 # AEMP_WRAPPER is a command line to split
start_bg s ${AEMP_WRAPPER:-} "$AEMP_SEQSEND" "s@$HOST" "$COOKIE" "v@$HOST"
wait_line "$WORK/s.out" "^(ready|FAIL)" 15
expect_line "$WORK/s.out" "^ready s@$HOST\$"
wait_for "v to get 2,000 messages" 20 has_lines "$WORK/v1.seq" 2000

ospid=$(erl_ospid v1)
[[ $ospid =~ ^[0-9]+$ ]] || fail "no OS pid from v: '$ospid'"
log "kill -9 $ospid (v@$HOST, first incarnation)"
kill -KILL "$ospid"
wait_exit v1 10
wait_line "$WORK/s.out" '^down [0-9]+ ' 10
wait_for "EPMD to drop v" 10 epmd_lacks v

start_recv v2 "$WORK/v2.seq"
wait_for "v's second incarnation to get 2,000 messages" 20 has_lines "$WORK/v2.seq" 2000
kill -TERM "${PIDS[s]}"
expect_exit s 10 0
! grep -Eq 'Sanitizer|runtime error:' "$WORK/s.err" || fail "sanitizer report from seqsend"

run1=$(run_of "$WORK/v1.seq") || fail "first incarnation: the numbers it got break off: $run1"
run2=$(run_of "$WORK/v2.seq") || fail "second incarnation: the numbers it got break off: $run2"
read -r first1 last1 <<<"$run1"
read -r first2 last2 <<<"$run2"
sent=$(awk '$1 == "sent" { print $2 }' "$WORK/s.out")
log "first incarnation got $first1..$last1, the second $first2..$last2, $sent sent;" \
    "$(grep -c '^down ' "$WORK/s.out") monitor reports"
((first1 == 1)) || fail "the first incarnation's first number is $first1, not 1"
((first2 > last1)) || fail "the second incarnation got $first2 after the first got $last1"
! grep -E '^down ' "$WORK/s.out" | grep -vEq '^down [0-9]+ noconnection$' ||
    fail "a monitor fired for another reason than noconnection: $(grep -E '^down ' "$WORK/s.out" | grep -vE ' noconnection$' | head -n 3)"
# The last report before the second incarnation's first message must have
# come right before that message was sent: every number after it was lost.
told=$(awk -v f="$first2" '$1 == "down" && $2 < f { s = $2 } END { print s }' "$WORK/s.out")
[[ -n $told ]] || fail "messages from $first2 on reached the second incarnation, but the C side had not been told of a loss before sending them"
((told == first2 - 1)) ||
    fail "$((told + 1))..$((first2 - 1)) were lost, sent after the last report ($told) and before $first2, which got through"
log "the C side was told of each loss: last report after sending $told, then $first2 got through"
pass
