#!/usr/bin/env bash
# bench/db.sh - measure the database and pg (issue 10) beside pure Erlang
# in the same run: how long a 100,000-member pg group and a 100,000-entry
# family take to reach a newly joined node, and the latency of db_set ->
# db_mon between nodes beside pg:join -> pg:monitor between Erlang nodes.
# See docs/benchmarks.md "Database and pg".
#
# Usage: bench/db.sh [--quick] [--n N] [--rounds R] [--sets K] [--build-dir DIR]
#   --quick       N 10000, 1 round, 200 sets (about 30 s)
#   --n N         members / entries (default 100000)
#   --rounds R    joins measured per figure, median printed (default 3)
#   --sets K      db_set / pg:join samples per latency figure (default 1000)
#   --build-dir   CMake build directory (default: build-bench in the repo)
#
# Everything runs inside a private network namespace (own loopback, own
# epmd); every process started here is killed when the script ends. It only
# measures and prints: a slow figure never fails it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

build_dir="$root/build-bench"
inner=0
n=
rounds=
sets=
quick=0
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) quick=1 ;;
    --n)
        n=$2
        shift
        ;;
    --rounds)
        rounds=$2
        shift
        ;;
    --sets)
        sets=$2
        shift
        ;;
    --build-dir)
        build_dir=$2
        shift
        ;;
    --inner) inner=1 ;;
    -h | --help)
        sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "db.sh: unknown argument: $1 (try --help)" >&2
        exit 2
        ;;
    esac
    shift
done

erl_dir="$build_dir/bench-erl"
app_dir="$build_dir/bench-erl/aemp/ebin"
c_bench="$build_dir/bench/db_bench"

if [ "$inner" = 0 ]; then
    if [ "$quick" = 1 ]; then
        : "${n:=10000}" "${rounds:=1}" "${sets:=200}"
    else
        : "${n:=100000}" "${rounds:=3}" "${sets:=1000}"
    fi
    case "$n,$rounds,$sets" in
    *[!0-9,]* | ,* | *,,* | *,)
        echo "db.sh: --n, --rounds and --sets take whole numbers" >&2
        exit 2
        ;;
    esac
    if [ "$n" -lt 1 ] || [ "$rounds" -lt 1 ] || [ "$sets" -lt 1 ]; then
        echo "db.sh: --n, --rounds and --sets must be at least 1" >&2
        exit 2
    fi
    # Build (incrementally) outside the namespace, then re-run inside it.
    mkdir -p "$erl_dir" "$app_dir"
    erlc -o "$erl_dir" "$here/erl/aemp_dbbench.erl"
    erlc -o "$app_dir" "$root"/erlang/src/*.erl
    cp "$root/erlang/src/aemp.app.src" "$app_dir/aemp.app"
    log="$build_dir/bench-build.log"
    if ! { cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DAEMP_TESTS=OFF &&
        cmake --build "$build_dir" --target db_bench -j"$(nproc)"; } >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "db.sh: building db_bench failed (full log: $log)" >&2
        exit 1
    fi
    exec unshare --net --pid --fork --kill-child --mount-proc "$0" --inner \
        --build-dir "$build_dir" --n "$n" --rounds "$rounds" --sets "$sets"
fi

# ---- inside the namespace ----
# shellcheck source=ns.sh
source "$here/ns.sh"

# Node names are numbered through a file: the measurements run in command
# substitutions (subshells), and a name must not come back while a killed
# node of that name may still be registered with epmd.
echo 0 >"$work/seq"
next_no() {
    local v
    v=$(($(cat "$work/seq") + 1))
    echo "$v" >"$work/seq"
    seq_no=$v
}
# A node in the background: c NAME ROLE ARGS... or e NAME FUN ARGS...;
# its name is left in $node, its output in $work/NAME.log.
bg() {
    local kind=$1 name=$2
    shift 2
    node="$name@$host"
    if [ "$kind" = c ]; then
        "$c_bench" --name "$node" --cookie "$cookie" "$@" >"$work/$name.log" 2>&1 &
    else
        erl "$name_flag" "$node" -setcookie "$cookie" -noshell -noinput +P 1000000 \
            -pa "$erl_dir" -pa "$app_dir" -run aemp_dbbench "$@" >"$work/$name.log" 2>&1 &
    fi
    pids+=($!)
    last_pid=$!
}

# Wait until $work/NAME.log has a line starting with WORD (deadline S).
wait_line() {
    local name=$1 word=$2 s=${3:-300}
    local end=$((SECONDS + s))
    while ! grep -q "^$word" "$work/$name.log" 2>/dev/null; do
        if [ $SECONDS -ge $end ]; then
            echo "db.sh: $name: no '$word' within ${s}s; its log:" >&2
            tail -n 20 "$work/$name.log" >&2
            return 1
        fi
        sleep 0.05
    done
}

# One measurement: start a node (as bg), wait for its RESULT line, print
# the rest of that line, and stop the node.
run1() {
    next_no
    local kind=$1 base=$2
    shift 2
    bg "$kind" "$base$seq_no" "$@"
    local name=$base$seq_no p=$last_pid
    if wait_line "$name" RESULT 300; then
        grep -m1 '^RESULT' "$work/$name.log" | cut -d' ' -f2-
    else
        echo fail
    fi
    if grep -q -v '^RESULT' "$work/$name.log"; then
        echo "db.sh: $name ($kind $1):" >&2
        grep -v '^RESULT' "$work/$name.log" | tail -n 5 >&2
    fi
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '$1 !~ /^[0-9.]+$/ {bad = 1} {a[NR] = $1} END {if (NR == 0 || bad) print "fail"; else print a[int((NR + 1) / 2)]}'; }

# join KIND FUN/ROLE TARGET FAMILY: the medians over the rounds of the wall
# time and of the joiner's CPU time, "WALL CPU"
join() {
    local kind=$1 what=$2 tgt=$3 fam=$4 walls="" cpus="" w c
    for _ in $(seq "$rounds"); do
        read -r w c _ <<<"$(run1 "$kind" j "$what" "$tgt" "$N" "$fam") - -"
        walls="$walls $w"
        cpus="$cpus $c"
    done
    echo "$(echo "$walls" | median) $(echo "$cpus" | median)"
}

N=$n
declare -A fig

echo "== Database and pg: $N members / entries, median of $rounds joins; $sets latency samples"
echo "   load average at start: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"

# hold KIND NAME FUN/ROLE FAMILY: start a holder of N, wait until it is
# ready; its node in $hnode, its pid in $hpid
hold() {
    bg "$1" "$2" "$3" "$N" "$4"
    hnode=$node
    hpid=$last_pid
    wait_line "$2" ready 600
}

# -- a pg group of N members on an Erlang node
hold e hpe hold_pg grp
fig[pg_ee]=$(join e join_pg "$hnode" grp)
fig[pg_ec]=$(join c join-pg "$hnode" grp)
kill "$hpid"

# -- a pg group of N C ports on a C node
hold c hpc hold-pg grp
fig[pg_ce]=$(join e join_pg "$hnode" grp)
fig[pg_cc]=$(join c join-pg "$hnode" grp)
kill "$hpid"

# -- a family of N entries on a C node
hold c hsc hold-set fam
fig[db_cc]=$(join c join-db "$hnode" fam)
fig[db_ce]=$(join e join_db "$hnode" fam)
kill "$hpid"

# -- a family of N entries on an Erlang node (the aemp application)
hold e hse hold_set fam
fig[db_ee]=$(join e join_db "$hnode" fam)
fig[db_ec]=$(join c join-db "$hnode" fam)
kill "$hpid"

ratio() { awk -v b="$1" -v f="$2" 'BEGIN {if (b !~ /^[0-9.]+$/ || f !~ /^[0-9.]+$/ || f == 0) print "-"; else printf "x%.2f", b / f}'; }
num1() { awk -v v="$1" 'BEGIN {if (v ~ /^[0-9.]+$/) printf "%.1f", v; else print v}'; }
row() {
    local label=$1 key=$2 w c bw bc
    read -r w c <<<"${fig[$key]}"
    read -r bw bc <<<"${fig[pg_ee]}"
    printf "  %-32s %9s ms  cpu %6s ms  x%s  cpu x%s\n" "$label" "$(num1 "$w")" "$(num1 "$c")" \
        "$(ratio "$bw" "$w" | tr -d x)" "$(ratio "$bc" "$c" | tr -d x)"
}
echo
echo "-- $N members / entries reach a newly joined node: ms from the connect to a complete view,"
echo "   and the joiner's CPU ms meanwhile; x = the pg erl->erl figure / this one (above 1: faster)"
row "pg     erl->erl  (baseline)" pg_ee
row "pg     erl->c    (C joins)" pg_ec
row "pg     c->erl    (Erlang joins)" pg_ce
row "pg     c->c" pg_cc
row "family c->c" db_cc
row "family c->erl    (Erlang joins)" db_ce
row "family erl->erl  (aemp app)" db_ee
row "family erl->c    (C joins)" db_ec

# -- latency: one change at a time, 3 ms apart
lat() {
    local rkind=$1 rfun=$2 skind=$3 sfun=$4 fam=$5
    next_no
    local rn="r$seq_no"
    if [ "$rkind" = pair ]; then
        bg e "$rn" pair_recv "$sets" "$fam"
    elif [ "$rkind" = pg ]; then
        bg e "$rn" pg_lat_recv "$sets"
    else
        bg "$rkind" "$rn" "$rfun" "$sets" "$fam"
    fi
    local rnode=$node rpid=$last_pid
    wait_line "$rn" ready 120 || true
    local sn="s$seq_no"
    if [ "$skind" = pair ]; then
        bg e "$sn" pair_send "$rnode" "$sets" "$fam" 3
    elif [ "$skind" = pg ]; then
        bg e "$sn" pg_lat_send "$rnode" "$sets" 3
    else
        bg "$skind" "$sn" "$sfun" "$rnode" "$sets" "$fam" 3
    fi
    local spid=$last_pid res=fail
    if wait_line "$rn" RESULT 120; then
        res=$(grep -m1 '^RESULT' "$work/$rn.log" | cut -d' ' -f2-)
    fi
    kill "$rpid" "$spid" 2>/dev/null || true
    echo "$res"
}
declare -A lt
# Erlang->Erlang: pg and the family between the same two nodes, their
# changes alternating (a paired comparison: one machine state for both)
read -r p50 p99 max k a50 a99 amax ak _r <<<"$(lat pair - pair - fam) - - - - - - - -"
lt[pg]="$p50 $p99 $max $k"
lt[ee]="$a50 $a99 $amax $ak"
lt[cc]=$(lat c lat-recv c lat-send fam)
lt[ce]=$(lat e lat_recv c lat-send fam)
lt[ec]=$(lat c lat-recv e lat_send fam)

lrow() {
    local label=$1 key=$2 p50 p99 max k b50 b99 _r
    read -r p50 p99 max k _r <<<"${lt[$key]} - - - -"
    read -r b50 b99 _r <<<"${lt[pg]} - -"
    printf "  %-32s p50 %8s us  p99 %8s us  max %8s us  (%s)  x%s / x%s\n" \
        "$label" "$p50" "$p99" "$max" "$k" "$(ratio "$b50" "$p50" | tr -d x)" "$(ratio "$b99" "$p99" | tr -d x)"
}
echo
echo "-- one change reaches another node (us; one every 3 ms; x = pg erl->erl p50 / this p50, and p99 / p99;"
echo "   the two erl->erl figures from one pair of nodes, their changes alternating)"
lrow "pg:join -> pg:monitor erl->erl" pg
lrow "db_set -> db_mon   erl->erl" ee
lrow "db_set -> db_mon   c->c" cc
lrow "db_set -> db_mon   c->erl" ce
lrow "db_set -> db_mon   erl->c" ec
echo "   load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
