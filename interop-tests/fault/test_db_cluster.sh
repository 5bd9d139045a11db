# shellcheck shell=bash source-path=SCRIPTDIR
# db_cluster RELEASES: the distributed database (docs/database.md) in a
# mixed cluster on five hosts of one LAN (network namespaces on a bridge):
# C nodes c1 (h1) and c2 (h4) (cluster_node.c: seeds, fast backoff,
# meshing), Erlang nodes e1 (h2) and e2 (h5) and an Elixir node x (h3)
# running the application aemp (aemp_cluster.erl, cluster_node.exs), all
# with net_ticktime 4. RELEASES is `25` (the host's OTP 25 and Elixir
# 1.14 for every node) or `27+29` (e1 and x on OTP 27 / Elixir 1.18 from
# the trixie chroot, e2 and the later e3 on OTP 29 from the sid chroot).
# Every node prints its view of family f after each change; the script
# drives the nodes through their stdin and waits for conditions:
#  1. each node sets its own subkey, then all five set subkey `race` at
#     once: every node shows the same family, with one winner of `race`;
#  2. iptables cut {h1, h2} from {h3, h4, h5}: within net_ticktime (plus
#     slack) each side shows only its own entries; during the cut c1 and x
#     set subkey `split`, each side sees its own; after the heal (C nodes
#     reconnect through their seeds and meshing, e1 pings x and e2) all
#     five converge again, `race` back to its winner and one winner of
#     `split`;
#  3. kill -9 of c2, and of e2 on a host cut off from the others first (no
#     FIN or RST: only the tick notices): their entries vanish from the
#     other three within net_ticktime plus slack;
#  4. c1 sets a family of 10,000 subkeys; e3 (Erlang) and c3 (C) join
#     afterwards and get all of it, and the same family f.
# shellcheck source=fault_lib.sh
source "$(dirname "$0")/fault_lib.sh"

: "${AEMP_FAULT_CLUSTER_NODE:?AEMP_FAULT_CLUSTER_NODE must name the cluster_node program}"
RELEASES=${1:-}
case $RELEASES in
25) REL_E1=25 REL_X=25 REL_E2=25 REL_E3=25 ;;
27+29) REL_E1=27 REL_X=27 REL_E2=29 REL_E3=29 ;;
*) fail "usage: test_db_cluster.sh 25|27+29" ;;
esac
TEST_NAME=db_cluster.otp${RELEASES/+/_}
TICK=4
# kill and partition: the views must be right within net_ticktime plus
# generous slack (tick detection takes 3 to 5 s; the rest is for a loaded
# machine)
BOUND_S=$((TICK + 8))

# EBIN[REL]: the Erlang modules (the application aemp and aemp_cluster)
# compiled by that release's erlc.
declare -A EBIN=([25]=$AEMP_FAULT_EBIN)
for rel in $REL_E1 $REL_X $REL_E2 $REL_E3; do
    var=AEMP_FAULT_EBIN_$rel
    [[ $rel == 25 || -n ${!var:-} ]] ||
        fail "$var must name the folder of the modules compiled by OTP $rel's erlc"
    [[ $rel == 25 ]] || EBIN[$rel]=${!var}
done

# tool REL NAME: TOOL is the command that runs erl or elixir of OTP REL
# (the host's for 25), OTP_ROOT_OF[REL] the root it runs in (a chroot,
# with /tmp, /dev, /proc, /etc/hosts and EBIN[REL] bound into it, where
# links to otp-exec.sh run the tools).
declare -A OTP_ROOT_OF=([25]="")
tool() {
    local rel=$1 name=$2
    if [[ $rel == 25 ]]; then
        TOOL=$name
        return
    fi
    if [[ -z ${OTP_ROOT_OF[$rel]:-} ]]; then
        otp_bind "$rel" "$WORK/otp$rel" "${EBIN[$rel]}"
        OTP_ROOT_OF[$rel]=$OTP_ROOT
    fi
    TOOL=$WORK/otp$rel/$name
}

# Every node reads its commands from a FIFO that the script holds open
# (read and write) in IN_FD[NAME], so it sees no end of input before the
# script ends.
declare -A IN_FD=() NODE_OF=()
node_fifo() {
    local fd
    mkfifo "$WORK/$1.in"
    exec {fd}<>"$WORK/$1.in"
    IN_FD[$1]=$fd
}

# cmd NAME LINE: send a command to node NAME.
cmd() {
    log "$1 <- $2"
    echo "$2" >&"${IN_FD[$1]}"
}

# start_erl_node NAME HOST REL: aemp_cluster:main() on Erlang node NAME@IP.
start_erl_node() {
    local name=$1 h=$2 rel=$3
    tool "$rel" erl
    NODE_OF[$name]=$name@${HOST_IP[$h]}
    node_fifo "$name"
    START_BG_STDIN=$WORK/$name.in start_bg "$name" env AEMP_OTP_ROOT="${OTP_ROOT_OF[$rel]}" \
        ip netns exec "${HOST_NS[$h]}" "$TOOL" -name "${NODE_OF[$name]}" -setcookie "$COOKIE" \
        -noshell -start_epmd false -kernel net_ticktime "$TICK" -pa "${EBIN[$rel]}" \
        -eval 'aemp_cluster:main()'
}

# start_elixir_node NAME HOST REL: cluster_node.exs on Elixir node NAME@IP.
start_elixir_node() {
    local name=$1 h=$2 rel=$3
    tool "$rel" elixir
    NODE_OF[$name]=$name@${HOST_IP[$h]}
    node_fifo "$name"
    cp "$(dirname "$0")/cluster_node.exs" "$WORK/cluster_node.exs"
    START_BG_STDIN=$WORK/$name.in start_bg "$name" env AEMP_OTP_ROOT="${OTP_ROOT_OF[$rel]}" \
        ip netns exec "${HOST_NS[$h]}" "$TOOL" --name "${NODE_OF[$name]}" --cookie "$COOKIE" \
        --erl "-start_epmd false -kernel net_ticktime $TICK" -pa "${EBIN[$rel]}" \
        "$WORK/cluster_node.exs"
}

# start_c_node NAME HOST SEED...: cluster_node NAME@IP with those seeds.
start_c_node() {
    local name=$1 h=$2 seeds
    shift 2
    seeds=$(
        IFS=,
        echo "$*"
    )
    NODE_OF[$name]=$name@${HOST_IP[$h]}
    node_fifo "$name"
    START_BG_STDIN=$WORK/$name.in start_bg "$name" ip netns exec "${HOST_NS[$h]}" \
        env --default-signal=INT,TERM "$AEMP_FAULT_CLUSTER_NODE" "${NODE_OF[$name]}" "$COOKIE" \
        "$TICK" "$seeds"
    AEMP_NODES+=("$name")
}

# ready NAME...: each node has printed its ready line (and ran the
# expected release).
ready() {
    local n
    for n in "$@"; do
        wait_line "$WORK/$n.out" '^(READY |ready |FAIL)' 30
        ! grep -q '^FAIL' "$WORK/$n.out" || fail "$n: $(line_of "$WORK/$n.out" '^FAIL')"
    done
}

# views_are ERE NAME...: the last view of family f of every NAME is the
# same line, and it matches ERE.
views_are() {
    local ere=$1 first='' v n
    shift
    for n in "$@"; do
        v=$(grep '^view f:' "$WORK/$n.out" | tail -n 1)
        [[ $v =~ $ere ]] || return 1
        [[ -z $first || $v == "$first" ]] || return 1
        first=$v
    done
}

# converge DESC TIMEOUT_S ERE NAME...: wait until views_are ERE NAME...;
# prints the views on failure.
converge() {
    local desc=$1 t=$2 ere=$3 deadline n
    shift 3
    deadline=$(($(now_ms) + t * 1000))
    until views_are "$ere" "$@"; do
        if (($(now_ms) >= deadline)); then
            for n in "$@"; do
                log "$n: $(grep '^view f:' "$WORK/$n.out" | tail -n 1)"
            done
            fail "timed out after $t s waiting for $desc (/$ere/)"
        fi
        sleep 0.05
    done
    log "$desc: $(grep '^view f:' "$WORK/$1.out" | tail -n 1)"
}

# left_of T0: the seconds left (at least 1) until T0 (ms) + BOUND_S.
left_of() {
    local left=$(($1 + BOUND_S * 1000 - $(now_ms)))
    echo $((left < 1000 ? 1 : left / 1000))
}

# value_of NAME KEY: KEY's value in NAME's last view of f.
value_of() {
    grep '^view f:' "$WORK/$1.out" | tail -n 1 | tr ' ' '\n' | sed -n "s/^$2=//p"
}

expect_release() {
    local n=$1 want=$2
    if [[ $n == x ]]; then
        expect_line "$WORK/$n.out" "^ELIXIR [0-9.]+ OTP $want\$"
    else
        expect_line "$WORK/$n.out" "^OTP $want\$"
    fi
    log "$n runs $(grep -E -m 1 '^(ELIXIR|OTP) ' "$WORK/$n.out")"
}

fault_lan 5 h1 h2 h3 h4 h5
for h in h2 h3 h5; do
    start_epmd "${HOST_NS[$h]}"
done
start_erl_node e1 h2 "$REL_E1"
start_elixir_node x h3 "$REL_X"
start_erl_node e2 h5 "$REL_E2"
start_c_node c1 h1 "e1@${HOST_IP[h2]}" "x@${HOST_IP[h3]}" "e2@${HOST_IP[h5]}"
start_c_node c2 h4 "e1@${HOST_IP[h2]}" "x@${HOST_IP[h3]}" "e2@${HOST_IP[h5]}"
ready c1 c2 e1 x e2
expect_release e1 "$REL_E1"
expect_release x "$REL_X"
expect_release e2 "$REL_E2"
ALL=(c1 c2 e1 e2 x)
LEFT=(c1 e1)
RIGHT=(c2 e2 x)
# the Erlang nodes form one cluster; the C nodes join it through their seeds
cmd x "ping ${NODE_OF[e1]}"
cmd e2 "ping ${NODE_OF[e1]}"
wait_line "$WORK/x.out" "^PONG ${NODE_OF[e1]}\$" 20
wait_line "$WORK/e2.out" "^PONG ${NODE_OF[e1]}\$" 20

# 1. every node's own entry, then a concurrent set of one subkey on all
for n in "${ALL[@]}"; do
    cmd "$n" "set f $n $n"
done
converge "every node's entry everywhere" 20 '^view f: c1=c1 c2=c2 e1=e1 e2=e2 x=x$' "${ALL[@]}"
# (written to the five nodes back to back, logged after)
for n in "${ALL[@]}"; do
    echo "set f race $n" >&"${IN_FD[$n]}"
done
log "${ALL[*]} <- set f race NAME"
for n in "${ALL[@]}"; do
    wait_line "$WORK/$n.out" '^did set f race$' 10
done
converge "one winner of race" 20 '^view f: c1=c1 c2=c2 e1=e1 e2=e2 race=(c1|c2|e1|e2|x) x=x$' \
    "${ALL[@]}"
race=$(value_of c1 race)

# 2. partition and heal
t_cut=$(now_ms)
fault_cut "h1 h2" "h3 h4 h5"
converge "the left side alone" "$BOUND_S" '^view f: c1=c1 e1=e1 race=(c1|e1)$' "${LEFT[@]}"
converge "the right side alone" "$(left_of "$t_cut")" '^view f: c2=c2 e2=e2 race=(c2|e2|x) x=x$' \
    "${RIGHT[@]}"
log "partition seen on both sides $(($(now_ms) - t_cut)) ms after the cut"
cmd c1 "set f split c1"
cmd x "set f split x"
converge "split on the left" 10 '^view f: c1=c1 e1=e1 race=(c1|e1) split=c1$' "${LEFT[@]}"
converge "split on the right" 10 '^view f: c2=c2 e2=e2 race=(c2|e2|x) split=x x=x$' "${RIGHT[@]}"
t_heal=$(now_ms)
fault_heal
cmd e1 "ping ${NODE_OF[x]}"
cmd e1 "ping ${NODE_OF[e2]}"
wait_line "$WORK/e1.out" "^PONG ${NODE_OF[x]}\$" 20
wait_line "$WORK/e1.out" "^PONG ${NODE_OF[e2]}\$" 20
converge "all five again after the heal" 30 \
    "^view f: c1=c1 c2=c2 e1=e1 e2=e2 race=$race split=(c1|x) x=x\$" "${ALL[@]}"
log "converged $(($(now_ms) - t_heal)) ms after the heal"
# the C nodes reconnected by themselves (seeds): c1 has x up twice
(($(count_lines "$WORK/c1.out" "^node up: ${NODE_OF[x]}\$") >= 2)) || fail "c1 did not reconnect to x"
(($(count_lines "$WORK/c2.out" "^node up: ${NODE_OF[e1]}\$") >= 2)) || fail "c2 did not reconnect to e1"
split=$(value_of c1 split)

# 3. kill -9 of a C node and an Erlang node; e2's host is cut off first,
# so no FIN or RST of its connections reaches anyone (a host that died):
# e2 is noticed by the tick alone
e2_pid=$(line_of "$WORK/e2.out" '^READY ')
e2_pid=${e2_pid#READY }
fault_cut h5 "h1 h2 h3 h4"
t_kill=$(now_ms)
kill -KILL "${PIDS[c2]}" "$e2_pid"
log "killed c2 and e2 (kill -9)"
SURVIVORS=(c1 e1 x)
converge "c2's and e2's entries gone" "$BOUND_S" \
    "^view f: c1=c1 e1=e1 race=(c1|e1|x) split=$split x=x\$" "${SURVIVORS[@]}"
log "gone everywhere $(($(now_ms) - t_kill)) ms after the kill"
wait_exit c2 5
fault_heal
race=$(value_of c1 race)

# 4. a 10,000-key family reaches nodes that join later
cmd c1 "fill big 10000"
for n in "${SURVIVORS[@]}"; do
    wait_line "$WORK/$n.out" '^count big: 10000$' 20
done
start_erl_node e3 h5 "$REL_E3"
start_c_node c3 h4 "e1@${HOST_IP[h2]}" "x@${HOST_IP[h3]}"
ready e3 c3
expect_release e3 "$REL_E3"
cmd e3 "ping ${NODE_OF[e1]}"
wait_line "$WORK/e3.out" "^PONG ${NODE_OF[e1]}\$" 20
for n in e3 c3; do
    wait_line "$WORK/$n.out" '^count big: 10000$' 20
done
converge "family f on the new nodes" 10 "^view f: c1=c1 e1=e1 race=$race split=$split x=x\$" \
    "${SURVIVORS[@]}" e3 c3
! grep -q '^FAIL' "$WORK"/*.out || fail "$(grep '^FAIL' "$WORK"/*.out | head -n 3)"
pass
