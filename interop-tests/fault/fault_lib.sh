# shellcheck shell=bash
# Harness for the fault tests, sourced by every interop-tests/fault/test_*.sh.
#
# A test runs as pid 1 of a private pid namespace:
#   unshare --pid --fork --kill-child --mount-proc bash test_X.sh
# (so the kernel kills every process it started when it ends or is killed)
# and re-executes itself in a mount namespace of its own, where a tmpfs on
# /run/netns holds its network namespace names. It reuses the interop harness (../lib.sh: process start and stop,
# deadlines, log dump on failure) and adds "hosts": two network namespaces
# A and B joined by a veth pair (va in A, vb in B) with the addresses
# 10.200.N.1/30 (A) and 10.200.N.2/30 (B). Traffic never leaves the
# machine. Node names are long names on those addresses (a@10.200.N.1), so
# no name resolution is involved. The EXIT trap kills every process in both
# namespaces and deletes them, whether the test passed or failed.
#
# Environment (set by interop-tests/fault/CMakeLists.txt):
#   AEMP_BIN         the aemp CLI
#   AEMP_FAULT_NODE  interop-tests/fault/fault_node.c built
#   AEMP_FAULT_EBIN  directory holding aemp_fault.beam

set -euo pipefail

# Our own mount namespace (private propagation), so that the tmpfs mounted
# on /run/netns below, and with it every network namespace name, vanishes
# with the test even when it is killed (no EXIT trap then).
if [[ -z ${AEMP_FAULT_MOUNT_NS:-} ]]; then
    export AEMP_FAULT_MOUNT_NS=1
    exec unshare --mount --propagation private bash "$0" "$@"
fi

: "${AEMP_BIN:?AEMP_BIN must name the aemp CLI}"
: "${AEMP_FAULT_NODE:?AEMP_FAULT_NODE must name the fault_node program}"
: "${AEMP_FAULT_EBIN:?AEMP_FAULT_EBIN must name the directory of aemp_fault.beam}"

# ../lib.sh wants a mode and the interop programs; the fault tests run no
# EPMD mode matrix (A runs a real epmd, B the C node's embedded one).
export AEMP_CNODE=$AEMP_FAULT_NODE AEMP_EBIN=$AEMP_FAULT_EBIN
# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" embedded

COOKIE=aemp_fault_cookie
NETNS=()
NS_A='' NS_B='' IP_A='' IP_B=''

log() {
    printf '[%s fault.%s] %s\n' "$(date +%T.%3N)" "$TEST_NAME" "$*"
}

# Kill everything in our namespaces, delete them, then run lib.sh's cleanup
# (stop known children, dump logs on failure, remove $WORK, exit).
fault_cleanup() {
    local status=$? ns pids
    trap - EXIT
    for ns in "${NETNS[@]}"; do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        if [[ -n $pids ]]; then
            # shellcheck disable=SC2086 # one pid a word
            kill -KILL $pids 2>/dev/null || true
        fi
    done
    for ns in "${NETNS[@]}"; do
        ip netns del "$ns" 2>/dev/null || log "cannot delete network namespace $ns"
    done
    set +e
    (exit "$status")
    cleanup
}
trap fault_cleanup EXIT

# fault_hosts N: namespaces NS_A and NS_B joined by a veth pair, addresses
# IP_A=10.200.N.1 and IP_B=10.200.N.2, loopback up in both.
fault_hosts() {
    local n=$1 tag
    tag=$TEST_NAME-$(date +%s%N | tail -c 7)-$RANDOM
    NS_A=aemp-fault-$tag-a
    NS_B=aemp-fault-$tag-b
    IP_A=10.200.$n.1
    IP_B=10.200.$n.2
    netns_add "$NS_A"
    netns_add "$NS_B"
    ip -n "$NS_A" link set lo up
    ip -n "$NS_B" link set lo up
    ip -n "$NS_A" link add va type veth peer name vb netns "$NS_B"
    ip -n "$NS_A" addr add "$IP_A/30" dev va
    ip -n "$NS_B" addr add "$IP_B/30" dev vb
    ip -n "$NS_A" link set va up
    ip -n "$NS_B" link set vb up
    wait_for "the veth pair to come up" 10 link_up "$NS_A" va
    wait_for "the veth pair to come up" 10 link_up "$NS_B" vb
    log "hosts: $NS_A ($IP_A, va) <-> $NS_B ($IP_B, vb)"
}

# netns_add NAME: a new network namespace NAME (its name on the tmpfs of
# /run/netns that is this test's own, mounted by the first call), deleted by
# the EXIT trap.
netns_add() {
    if [[ ${#NETNS[@]} -eq 0 ]]; then
        mkdir -p /run/netns
        mount -t tmpfs -o size=1m,mode=0755 aemp-fault-netns /run/netns
    fi
    ip netns add "$1"
    NETNS+=("$1")
}

# fault_lan N HOST...: one namespace per HOST on a LAN: each has a veth
# `eth0` whose peer is a port of the bridge `br0` in a namespace of its own
# (the switch), addresses 10.200.N.I/24 (I = 1, 2, ... in the order given),
# loopback up. HOST_NS[HOST] and HOST_IP[HOST] name them.
declare -A HOST_NS=() HOST_IP=()
fault_lan() {
    local n=$1 tag sw h ns i=0
    shift
    tag=$TEST_NAME-$(date +%s%N | tail -c 7)-$RANDOM
    sw=aemp-fault-$tag-switch
    netns_add "$sw"
    ip -n "$sw" link add br0 type bridge
    ip -n "$sw" link set br0 up
    for h in "$@"; do
        i=$((i + 1))
        ns=aemp-fault-$tag-$h
        netns_add "$ns"
        ip -n "$ns" link set lo up
        ip -n "$ns" link add eth0 type veth peer name "p$i" netns "$sw"
        ip -n "$sw" link set "p$i" master br0
        ip -n "$sw" link set "p$i" up
        ip -n "$ns" addr add "10.200.$n.$i/24" dev eth0
        ip -n "$ns" link set eth0 up
        HOST_NS[$h]=$ns
        HOST_IP[$h]=10.200.$n.$i
    done
    for h in "$@"; do
        wait_for "eth0 of $h to come up" 10 link_up "${HOST_NS[$h]}" eth0
    done
    log "LAN 10.200.$n.0/24: $(for h in "$@"; do printf '%s=%s ' "$h" "${HOST_IP[$h]}"; done)"
}

# fault_cut "HOST..." "HOST...": iptables DROP rules in the namespaces of
# the first hosts (INPUT from and OUTPUT to each of the second hosts) cut
# all traffic between the two groups; fault_heal removes them.
CUT_RULES=()
fault_cut() {
    local a b r
    for a in $1; do
        for b in $2; do
            for r in "INPUT -s ${HOST_IP[$b]} -j DROP" "OUTPUT -d ${HOST_IP[$b]} -j DROP"; do
                # shellcheck disable=SC2086 # a rule is several words
                in_ns "${HOST_NS[$a]}" iptables -A $r
                CUT_RULES+=("$a $r")
            done
        done
    done
    log "partition: {$1} | {$2}"
}

fault_heal() {
    local r
    for r in "${CUT_RULES[@]}"; do
        # shellcheck disable=SC2086 # a host and a rule of several words
        set -- $r
        local h=$1
        shift
        in_ns "${HOST_NS[$h]}" iptables -D "$@"
    done
    CUT_RULES=()
    log "partition healed"
}

link_up() {
    ip -n "$1" -br link show dev "$2" | grep -q ' UP '
}

# in_ns NS COMMAND...: run COMMAND in network namespace NS.
in_ns() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

# start_epmd NS: a real epmd in NS (for the Erlang nodes there).
start_epmd() {
    in_ns "$1" epmd -daemon
    wait_for "epmd in $1 to answer" 10 in_ns "$1" epmd -names
}

# start_erl_in NAME NS IP TICKTIME EVAL: erl -name NAME@IP in NS, running
# EVAL, output in $WORK/NAME.out; the Erlang nodes use the epmd of NS.
start_erl_in() {
    local name=$1 ns=$2 ip=$3 tick=$4 eval=$5
    start_bg "$name" ip netns exec "$ns" erl -name "$name@$ip" -setcookie "$COOKIE" -noshell \
        -start_epmd false -kernel net_ticktime "$tick" -pa "$AEMP_FAULT_EBIN" -eval "$eval"
}

# start_cnode NAME NS TICKTIME [PEER]: fault_node NAME in NS; waits for its
# ready line. NAME is a full node name (c@10.200.N.2); the log key is its
# alive part.
start_cnode() {
    local node=$1 ns=$2 tick=$3
    shift 3
    local key=${node%%@*}
    start_bg "$key" ip netns exec "$ns" env --default-signal=INT,TERM \
        "$AEMP_FAULT_NODE" "$node" "$COOKIE" "$tick" "$@"
    AEMP_NODES+=("$key")
    wait_line "$WORK/$key.out" "^ready $node " 15
}

# rss_kb PID: resident set size of PID in KiB.
rss_kb() {
    awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"
}

# alive PID: PID runs (not gone, not a zombie).
alive() {
    ! not_running "$1"
}

# line_of FILE ERE: the first line of FILE matching ERE (fails if none).
line_of() {
    local line
    line=$(grep -E -m 1 -- "$2" "$1") || fail "no line matching /$2/ in ${1##*/}"
    echo "$line"
}

# last_field LINE: the last word of LINE (the timestamps are printed last).
last_field() {
    echo "${1##* }"
}

# count_lines FILE ERE
count_lines() {
    grep -E -c -- "$2" "$1" || true
}

# at_least FILE ERE N: FILE has at least N lines matching ERE.
at_least() {
    (($(count_lines "$1" "$2") >= $3))
}

# asan_build FILE: FILE is built with AddressSanitizer. Its quarantine keeps
# freed memory resident (hundreds of MB), so RSS bounds mean nothing there;
# the tests skip them and rely on LeakSanitizer's report at exit instead
# (pass() fails on any sanitizer report in a C node's stderr).
asan_build() {
    grep -q __asan_init "$1"
}
