#!/usr/bin/env bash
# bench/run.sh - measure aemp throughput, round trips, local dispatch,
# monitors, read-batching latency, and the memory and rates of ports beside
# references measured in the same run: Erlang->Erlang, a plain
# erl_interface C node, and a raw TCP ping-pong. See docs/benchmarks.md.
#
# Usage: bench/run.sh [--quick] [--erl-only] [--sizes LIST] [--read-batch MS]
#                     [--monitors N] [--monitor-deadline S] [--ports N]
#                     [--ports-only] [--build-dir DIR]
#   --quick       fewer messages, one round (under 40 s)
#   --erl-only    measure only the Erlang->Erlang baseline (no C build)
#   --sizes LIST  payload sizes in bytes, comma-separated, from 16,100,1024,65536
#   --read-batch MS  c1 and c2's read_batch_ms (default 0: the library's
#                 default of 1 ms; -1: read batching off); c3 always runs -1
#   --monitors N  monitor N times, and N/10 times (default 1000000; --quick
#                 10000; 0 skips the monitor measurement)
#   --monitor-deadline S  seconds per monitor measurement (default 30; --quick 10)
#   --ports N     ports and processes: N of each, N monitors and links, N
#                 create+kill (default 1000000; --quick 200000; 0 skips)
#   --ports-only  only the ports and processes section (nodes e1, e2, c1)
#   --build-dir   CMake build directory (default: build-bench in the repo)
#
# Everything runs inside a private network namespace (own loopback, own
# epmd); every process started here is killed when the script ends.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

mode=full
erl_only=0
build_dir="$root/build-bench"
inner=0
sizes=16,100,1024,65536
read_batch=0
monitors=
mon_deadline=
ports=
only=all
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) mode=quick ;;
    --erl-only) erl_only=1 ;;
    --build-dir)
        build_dir=$2
        shift
        ;;
    --sizes)
        sizes=$2
        shift
        ;;
    --read-batch)
        read_batch=$2
        shift
        ;;
    --monitors)
        monitors=$2
        shift
        ;;
    --monitor-deadline)
        mon_deadline=$2
        shift
        ;;
    --ports)
        ports=$2
        shift
        ;;
    --ports-only) only=ports ;;
    --inner) inner=1 ;;
    -h | --help)
        sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "run.sh: unknown argument: $1 (try --help)" >&2
        exit 2
        ;;
    esac
    shift
done

erl_dir="$build_dir/bench-erl"
c_bench="$build_dir/bench/aemp_bench"
ei_bench="$build_dir/bench/ei_bench"
pingpong="$build_dir/bench/tcp_pingpong"

if [ "$inner" = 0 ]; then
    # Build (incrementally) outside the namespace, then re-run inside it.
    mkdir -p "$erl_dir"
    erlc -o "$erl_dir" "$here/erl/aemp_bench.erl"
    if [ "$erl_only" = 0 ]; then
        log="$build_dir/bench-build.log"
        if ! { cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DAEMP_TESTS=OFF &&
            cmake --build "$build_dir" --target aemp_bench ei_bench tcp_pingpong -j"$(nproc)"; } \
            >"$log" 2>&1; then
            tail -n 30 "$log" >&2
            echo "run.sh: building the bench programs failed (full log: $log);" \
                "--erl-only measures the baseline alone" >&2
            exit 1
        fi
    fi
    case ",$sizes," in
    *[!0-9,]* | *,,*)
        echo "run.sh: --sizes takes a comma-separated list of byte counts" >&2
        exit 2
        ;;
    esac
    for s in ${sizes//,/ }; do
        case "$s" in
        16 | 100 | 1024 | 65536) ;;
        *)
            echo "run.sh: size $s: choose among 16, 100, 1024, 65536" >&2
            exit 2
            ;;
        esac
    done
    case "$read_batch" in
    -1 | [0-9] | [0-9][0-9] | [0-9][0-9][0-9]) ;;
    *)
        echo "run.sh: --read-batch takes -1 (off) or 0..999 milliseconds" >&2
        exit 2
        ;;
    esac
    if [ -z "$monitors" ]; then
        monitors=1000000
        [ "$mode" = quick ] && monitors=10000
    fi
    if [ -z "$mon_deadline" ]; then
        mon_deadline=30
        [ "$mode" = quick ] && mon_deadline=10
    fi
    if [ -z "$ports" ]; then
        ports=1000000
        [ "$mode" = quick ] && ports=200000
    fi
    case "$monitors,$mon_deadline,$ports" in
    *[!0-9,]* | ,* | *,,* | *,)
        echo "run.sh: --monitors, --monitor-deadline and --ports take whole numbers" >&2
        exit 2
        ;;
    esac
    if [ "$ports" -gt 100000000 ]; then
        echo "run.sh: --ports: at most 100000000" >&2
        exit 2
    fi
    args=(--inner --build-dir "$build_dir" --sizes "$sizes" --read-batch "$read_batch"
        --monitors "$monitors" --monitor-deadline "$mon_deadline" --ports "$ports")
    [ "$only" = ports ] && args+=(--ports-only)
    [ "$mode" = quick ] && args+=(--quick)
    [ "$erl_only" = 1 ] && args+=(--erl-only)
    exec unshare --net --pid --fork --kill-child --mount-proc "$0" "${args[@]}"
fi

# ---- inside the namespace ----
# shellcheck source=ns.sh
source "$here/ns.sh"

# The agents may hold N idle processes at once (--ports): room for them.
max_procs=$((ports + 262144))
erl_agent() {
    erl "$name_flag" "$1@$host" -setcookie "$cookie" -noshell -noinput +P "$max_procs" \
        -pa "$erl_dir" -s aemp_bench agent >"$work/$1.log" 2>&1 &
    pids+=($!)
}

erl_agent e1
erl_agent e2
c_nodes=(c1=none c2=none c3=none ei1=none ei2=none)
c_pids=()
pp=none
if [ "$erl_only" = 0 ]; then
    # c1 and c2 as told; c3 with read batching off (the latency comparison
    # and the monitor target); ei1 and ei2 the plain erl_interface nodes.
    # Each in a subshell: the controller may kill c3 (a missed monitor
    # deadline), and the subshell, not this script, then says "Killed" (in
    # the node's log). The namespace ends every process with this script.
    cs=(c1 c2 c3)
    eis=(ei1 ei2)
    if [ "$only" = ports ]; then
        cs=(c1)
        eis=()
    fi
    for n in "${cs[@]}"; do
        rb=$read_batch
        [ "$n" = c3 ] && rb=-1
        (
            "$c_bench" --name "$n@$host" --cookie "$cookie" --read-batch-ms "$rb"
            exit $?
        ) >"$work/$n.log" 2>&1 &
        pids+=($!)
        c_pids+=("$n:$!")
    done
    for n in "${eis[@]}"; do
        "$ei_bench" --name "$n@$host" --cookie "$cookie" >"$work/$n.log" 2>&1 &
        pids+=($!)
        c_pids+=("$n:$!")
    done
    c_nodes=()
    for n in c1 c2 c3 ei1 ei2; do
        case " ${cs[*]} ${eis[*]} " in
        *" $n "*) c_nodes+=("$n=$n@$host") ;;
        *) c_nodes+=("$n=none") ;;
        esac
    done
    pp=$pingpong
fi

status=0
erl "$name_flag" "ctl@$host" -hidden -setcookie "$cookie" -noshell -noinput \
    +S 1 +sbwt none -pa "$erl_dir" \
    -run aemp_bench main mode="$mode" e1="e1@$host" e2="e2@$host" "${c_nodes[@]}" \
    pingpong="$pp" monitors="$monitors" mondeadline="$mon_deadline" readbatch="$read_batch" \
    work="$work" sizes="$sizes" ports="$ports" only="$only" || status=$?

# The controller told every node to stop: give the C nodes a moment to
# close cleanly, and say so if one crashed or did not stop.
for entry in "${c_pids[@]}"; do
    n=${entry%%:*}
    p=${entry#*:}
    for _ in $(seq 50); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$p" 2>/dev/null; then
        echo "$n: still running after bench_stop" >&2
    else
        rc=0
        wait "$p" || rc=$?
        if [ -e "$work/killed-$n" ]; then
            echo "$n: killed by the controller: $(cat "$work/killed-$n")"
        elif [ "$rc" != 0 ]; then
            echo "$n: exited with status $rc" >&2
        fi
    fi
done

for n in e1 e2 c1 c2 c3 ei1 ei2; do
    if [ -s "$work/$n.log" ]; then
        echo "--- $n log ---"
        tail -n 20 "$work/$n.log"
    fi
done
exit "$status"
