# shellcheck shell=bash
# Harness for the interop tests, sourced by every test_*.sh.
#
# A test runs as pid 1 of private pid, network and mount namespaces:
#   sandbox.sh --net --pid --fork --kill-child --mount-proc -- bash test_X.sh MODE
# (sandbox.sh is unshare, also where / is not a mount point) so it has its
# own loopback, no stray epmd, and when it exits (or is killed) the kernel
# kills every process it started. The EXIT trap also stops the children it
# knows and, on failure, prints their logs. Mounts it makes (a private
# /etc/hosts, the OTP chroot's binds) are its own and vanish with it.
#
# MODE is `epmd` (a real epmd runs before anything else) or `embedded` (no
# epmd: the first aemp node embeds an EPMD server and Erlang nodes, always
# started with -start_epmd false, register with it).
#
# Environment (set by interop-tests/CMakeLists.txt):
#   AEMP_BIN    the aemp CLI
#   AEMP_CNODE  interop-tests/cnode.c built
#   AEMP_EBIN   directory holding aemp_interop.beam
# Optional:
#   AEMP_OTP      27 or 29: erl, erlc, epmd and elixir come from that OTP
#                 release's Debian chroot (scripts/otp-chroot.sh; it must be
#                 built), and AEMP_EBIN holds modules compiled by its erlc
#   AEMP_WRAPPER  a command line that runs each `aemp run` node, e.g.
#                 "valgrind --error-exitcode=99 --leak-check=full"; a node
#                 must still exit 0, so any error it reports fails the test

set -euo pipefail

MODE=${1:-}
case $MODE in
epmd | embedded) ;;
*)
    echo "usage: interop-tests/sandbox.sh --net --pid --fork --kill-child --mount-proc -- bash $0 epmd|embedded" >&2
    exit 2
    ;;
esac
: "${AEMP_BIN:?AEMP_BIN must name the aemp CLI}"
: "${AEMP_CNODE:?AEMP_CNODE must name the cnode test program}"
: "${AEMP_EBIN:?AEMP_EBIN must name the directory of aemp_interop.beam}"

if [[ $$ -ne 1 ]]; then
    echo "$0: refusing to run outside a private pid namespace (pid $$, not 1);" \
        "run: interop-tests/sandbox.sh --net --pid --fork --kill-child --mount-proc -- bash $0 $MODE" >&2
    exit 2
fi

# shellcheck disable=SC2034 # used by the test scripts
INTEROP_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TEST_NAME=$(basename "$0" .sh)
TEST_NAME=${TEST_NAME#test_}
HOST=$(hostname -s)
COOKIE=aemp_interop_cookie
WORK=$(mktemp -d /tmp/aemp-interop.XXXXXX)
# A private home: no ~/.erlang, ~/.erlang.cookie or Elixir settings of the
# user's leak into a test (and erl refuses to start without HOME).
export HOME=$WORK/home
mkdir -p "$HOME"
declare -A PIDS=()
AEMP_NODES=()
EXIT_STATUS=0

log() {
    printf '[%s interop.%s%s.%s] %s\n' "$(date +%T.%3N)" "${AEMP_OTP:+otp$AEMP_OTP.}" "$MODE" "$TEST_NAME" "$*"
}

fail() {
    log "FAIL: $*"
    exit 1
}

# pass: every aemp node still running must stop cleanly on SIGTERM (exit 0,
# no sanitizer report), so a node that crashed or corrupted memory while
# serving the test fails it.
pass() {
    local name
    for name in "${AEMP_NODES[@]}"; do
        [[ -n ${PIDS[$name]:-} ]] || continue
        kill -TERM "${PIDS[$name]}"
        expect_exit "$name" 10 0
    done
    for name in "${AEMP_NODES[@]}"; do
        ! grep -Eq 'Sanitizer|runtime error:' "$WORK/$name.err" ||
            fail "sanitizer report from $name: $(grep -E -m 3 'Sanitizer|runtime error:' "$WORK/$name.err")"
    done
    log "PASS"
    exit 0
}

now_ms() {
    local t=${EPOCHREALTIME//[!0-9]/} # the decimal point follows the locale
    echo $((t / 1000))
}

cleanup() {
    local status=$? name pid f
    trap - EXIT
    for name in "${!PIDS[@]}"; do
        kill -TERM "${PIDS[$name]}" 2>/dev/null || true
    done
    for name in "${!PIDS[@]}"; do
        pid=${PIDS[$name]}
        if ! wait_gone "$pid" 3000; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    if ((status != 0)); then
        log "logs of this test (last 60 lines each):"
        for f in "$WORK"/*; do
            [[ -f $f && -s $f ]] || continue
            echo "----- ${f##*/}"
            tail -n 60 "$f"
        done
        echo "-----"
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT

# 0 when pid is gone or a zombie (so a child we have not reaped counts as gone).
not_running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    [[ ${stat%% *} == Z ]]
}

wait_gone() {
    local pid=$1 deadline=$(($(now_ms) + $2))
    while ! not_running "$pid"; do
        (($(now_ms) < deadline)) || return 1
        sleep 0.05
    done
}

# wait_for DESCRIPTION TIMEOUT_S COMMAND...: poll COMMAND until it succeeds.
wait_for() {
    local desc=$1 deadline=$(($(now_ms) + $2 * 1000))
    shift 2
    until "$@" >/dev/null 2>&1; do
        (($(now_ms) < deadline)) || fail "timed out waiting for $desc"
        sleep 0.05
    done
}

# wait_line FILE ERE TIMEOUT_S: wait until FILE has a line matching ERE.
wait_line() {
    wait_for "a line matching /$2/ in ${1##*/}" "$3" grep -Eq -- "$2" "$1"
}

# expect_line FILE ERE: FILE has a line matching ERE now.
expect_line() {
    grep -Eq -- "$2" "$1" || fail "no line matching /$2/ in ${1##*/}"
}

# start_bg NAME COMMAND...: run COMMAND in the background, output in
# $WORK/NAME.out and $WORK/NAME.err, pid in PIDS[NAME]; stdin from
# $START_BG_STDIN (default /dev/null).
start_bg() {
    local name=$1
    shift
    log "start $name: $*"
    "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" <"${START_BG_STDIN:-/dev/null}" &
    PIDS[$name]=$!
}

# wait_exit NAME TIMEOUT_S: wait for NAME to exit; its status in EXIT_STATUS.
wait_exit() {
    local name=$1 pid=${PIDS[$1]}
    wait_gone "$pid" $(($2 * 1000)) || fail "$name did not exit within $2 s"
    EXIT_STATUS=0
    wait "$pid" || EXIT_STATUS=$?
    unset "PIDS[$name]"
    log "$name exited with status $EXIT_STATUS"
}

# expect_exit NAME TIMEOUT_S STATUS
expect_exit() {
    wait_exit "$1" "$2"
    ((EXIT_STATUS == $3)) || fail "$1 exited with status $EXIT_STATUS, expected $3"
}

# run_fg NAME TIMEOUT_S COMMAND...: run COMMAND to its end (killed after
# TIMEOUT_S); status in EXIT_STATUS, output in $WORK/NAME.out/.err.
run_fg() {
    local name=$1 t=$2
    shift 2
    log "run $name: $*"
    EXIT_STATUS=0
    timeout -k 2 "$t" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" </dev/null || EXIT_STATUS=$?
    log "$name exited with status $EXIT_STATUS: $(head -c 300 "$WORK/$name.out" | tr '\n' ' ')"
}

# Erlang nodes never start an epmd of their own: the EPMD under test is the
# real one started by begin_test (mode epmd) or the first aemp node (mode
# embedded).
erl_cmd() {
    local name=$1 cookie=$2
    shift 2
    ERL_CMD=(erl -sname "$name" -setcookie "$cookie" -noshell -start_epmd false
        -pa "$AEMP_EBIN" "$@")
}

# start_erl NAME [COOKIE [ERL_ARGS...]]: an idle Erlang node; waits until
# it is up.
start_erl() {
    local name=$1 cookie=${2:-$COOKIE}
    shift $(($# < 2 ? $# : 2))
    erl_cmd "$name" "$cookie" "$@" -eval 'aemp_interop:serve()'
    start_bg "$name" "${ERL_CMD[@]}"
    wait_line "$WORK/$name.out" '^READY ' 20
}

# os pid of an Erlang node started with start_erl or cnode_peer.
erl_ospid() {
    local line
    line=$(grep -E '^READY ' "$WORK/$1.out" | head -n 1)
    echo "${line##* }"
}

# erl_test NAME TEST ARG [COOKIE [ERL_ARGS...]]: run aemp_interop:run(TEST,
# ARG) on a new Erlang node NAME; fails unless it prints PASS and exits 0.
erl_test() {
    local name=$1 test=$2 arg=$3 cookie=${4:-$COOKIE}
    shift $(($# < 4 ? $# : 4))
    erl_cmd "$name" "$cookie" "$@" -eval "aemp_interop:run($test, $arg)"
    run_fg "$name" 45 "${ERL_CMD[@]}"
    cat "$WORK/$name.out"
    ((EXIT_STATUS == 0)) || fail "Erlang test $test on $name exited with status $EXIT_STATUS"
    expect_line "$WORK/$name.out" "^PASS $test\$"
    expect_peer_release "$WORK/$name.out"
}

# run_example_exs SCRIPT ARG...: run examples/SCRIPT with elixir as node
# ex (the Erlang application in AEMP_EBIN on its path) to its end; fails
# unless it exits 0 and, with AEMP_OTP set, ran on that release. Its
# output is in $WORK/ex.out. The script is copied where an OTP chroot
# sees it.
run_example_exs() {
    local script=$1
    shift
    : "${AEMP_EXAMPLES:?AEMP_EXAMPLES must name the examples folder}"
    cp "$AEMP_EXAMPLES/$script" "$WORK/$script"
    run_fg ex 40 elixir --sname ex --cookie "$COOKIE" --erl "-start_epmd false" -pa "$AEMP_EBIN" \
        "$WORK/$script" "$@"
    cat "$WORK/ex.out" "$WORK/ex.err"
    ((EXIT_STATUS == 0)) || fail "elixir $script exited with $EXIT_STATUS"
    expect_peer_release "$WORK/ex.out" ELIXIR
}

# expect_peer_release FILE [ELIXIR]: with AEMP_OTP set, the Erlang (or
# Elixir) node that wrote FILE said it runs that OTP release.
expect_peer_release() {
    [[ -n ${AEMP_OTP:-} ]] || return 0
    if [[ ${2:-} == ELIXIR ]]; then
        expect_line "$1" "^ELIXIR [0-9.]+ OTP $AEMP_OTP\$"
    else
        expect_line "$1" "^OTP $AEMP_OTP\$"
    fi
}

# start_aemp NAME [ARGS...]: `aemp run NAME` in the background; waits for
# its ready line. SIGINT and SIGTERM get their default handling back (a
# non-interactive shell starts background jobs with SIGINT ignored).
start_aemp() {
    local name=$1
    shift
    # shellcheck disable=SC2086 # AEMP_WRAPPER is a command line to split
    start_bg "$name" env --default-signal=INT,TERM ${AEMP_WRAPPER:-} "$AEMP_BIN" run "$name" \
        --cookie "$COOKIE" "$@"
    AEMP_NODES+=("$name")
    wait_line "$WORK/$name.out" "^aemp: node $name(@$HOST)? ready" 15
}

epmd_answers() {
    epmd -names >/dev/null 2>&1
}

# begin_test: loopback up, a clean namespace, and in mode epmd a real epmd.
begin_test() {
    ip link set lo up
    host_is_loopback ||
        fail "host name $HOST does not resolve to a loopback address (getent hosts $HOST:" \
            "$(getent hosts "$HOST" || echo nothing))"
    ! epmd_answers || fail "an EPMD answers before the test started anything"
    log "mode $MODE, host $HOST, work dir $WORK${AEMP_OTP:+, peers: $OTP_PEERS}"
    if [[ $MODE == epmd ]]; then
        epmd -daemon
        wait_for "epmd to answer" 10 epmd_answers
    fi
}

# In mode embedded, an aemp node that only holds the EPMD for tests whose
# node under test starts after the Erlang nodes.
begin_epmd_holder() {
    if [[ $MODE == embedded ]]; then
        start_aemp holder
        wait_for "the embedded EPMD to answer" 10 epmd_answers
    fi
}

# epmd_lists NAME / epmd_lacks NAME: whether `epmd -names` lists NAME.
epmd_lists() {
    local out
    out=$(epmd -names 2>/dev/null) || return 1
    grep -q "^name $1 at port " <<<"$out"
}

epmd_lacks() {
    local out
    out=$(epmd -names 2>/dev/null) || return 1
    ! grep -q "^name $1 at port " <<<"$out"
}

# In mode embedded the EPMD must be the aemp node's, not a real epmd that
# something started behind our back.
# /proc holds only this namespace's processes (unshare --mount-proc).
expect_no_epmd_process() {
    local comm
    [[ $MODE == embedded ]] || return 0
    for comm in /proc/[0-9]*/comm; do
        [[ $(cat "$comm" 2>/dev/null) != epmd ]] ||
            fail "an epmd process runs in mode embedded: ${comm%/comm}"
    done
}

# names_of COMMAND...: the sorted "name X at port N" lines COMMAND prints.
names_of() {
    "$@" | grep -E '^name ' | sort
}

host_is_loopback() {
    getent hosts "$HOST" | grep -Eq '^(127\.|::1)'
}

# Node names are short names on the host name (x@$HOST), and inside the
# network namespace only the loopback exists, so the host name must resolve
# to a loopback address. Where it does not (no /etc/hosts line for it, or a
# LAN address), the test binds a private copy of /etc/hosts over the
# machine's, with "127.0.0.1 HOST" first and no other line for HOST. The
# bind lives in this test's mount namespace only: the machine's file is not
# touched.
private_hosts() {
    local full
    full=$(hostname)
    {
        echo "127.0.0.1 $HOST${full:+ $full}"
        [[ ! -r /etc/hosts ]] ||
            awk -v h="$HOST" -v f="$full" '{ for (i = 2; i <= NF; i++) if ($i == h || $i == f) next } 1' /etc/hosts
    } >"$WORK/hosts"
    mount --bind "$WORK/hosts" /etc/hosts 2>"$WORK/hosts.err" ||
        fail "host name $HOST does not resolve to a loopback address and no private /etc/hosts" \
            "could be mounted ($(cat "$WORK/hosts.err")); add '127.0.0.1 $HOST' to /etc/hosts"
    rm -f "$WORK/hosts.err"
    host_is_loopback ||
        fail "host name $HOST does not resolve to a loopback address, even with a private" \
            "/etc/hosts naming it (check the hosts: line of /etc/nsswitch.conf)"
    log "host name $HOST did not resolve to a loopback address: using a private /etc/hosts" \
        "with 127.0.0.1 $HOST"
}
host_is_loopback || private_hosts

# AEMP_OTP=REL: erl, erlc, epmd and elixir of OTP REL, from its chroot. The
# chroot sees what the test hands its tools at the same paths: /tmp (work
# dir, HOME, certificates, config files), this namespace's /proc, /dev,
# /etc/hosts, the test scripts' folder (elixir_echo.exs) and AEMP_EBIN.
# These binds are made in this test's mount namespace and vanish with it.
otp_chroot() {
    otp_bind "$AEMP_OTP" "$WORK/bin" "$INTEROP_DIR" "$AEMP_EBIN"
    AEMP_OTP_ROOT=$OTP_ROOT
    export AEMP_OTP_ROOT
    PATH=$WORK/bin:$PATH
    OTP_PEERS=$(awk '$1 == "otp" { o = $2 } $1 == "erts" { e = $2 } $1 == "elixir" { x = $2 }
        $1 == "suite" { s = $2 } END { printf "OTP %s (erts %s) and Elixir %s from Debian %s", o, e, x, s }' \
        "$AEMP_OTP_ROOT/.aemp-otp-stamp")
    [[ $(type -P erl) == "$WORK/bin/erl" ]] || fail "erl is not the OTP $AEMP_OTP wrapper"
}
# otp_bind REL BINDIR DIR...: the chroot of OTP REL in OTP_ROOT, with /tmp,
# /dev, /proc, /etc/hosts and each DIR bound into it at the same paths, and
# BINDIR holding erl, erlc, epmd and elixir as links to otp-exec.sh (which
# runs them in the chroot named by AEMP_OTP_ROOT). Binds made once per
# chroot.
declare -A OTP_BOUND=()
otp_bind() {
    local rel=$1 bindir=$2 d
    shift 2
    OTP_ROOT=$(bash "$INTEROP_DIR/../scripts/otp-chroot.sh" root "$rel" 2>&1) ||
        fail "no OTP $rel peer: $OTP_ROOT"
    if [[ -z ${OTP_BOUND[$OTP_ROOT]:-} ]]; then
        mount --bind /tmp "$OTP_ROOT/tmp"
        mount --rbind /dev "$OTP_ROOT/dev"
        mount --bind /proc "$OTP_ROOT/proc"
        mount --bind /etc/hosts "$OTP_ROOT/etc/hosts"
        OTP_BOUND[$OTP_ROOT]=1
    fi
    for d in "$@"; do
        [[ -d $OTP_ROOT$d ]] || mkdir -p "$OTP_ROOT$d"
        mountpoint -q "$OTP_ROOT$d" || mount --bind "$d" "$OTP_ROOT$d"
    done
    mkdir -p "$bindir"
    for d in erl erlc epmd elixir; do
        ln -sf "$INTEROP_DIR/otp-exec.sh" "$bindir/$d"
    done
}
if [[ -n ${AEMP_OTP:-} ]]; then
    otp_chroot
fi
