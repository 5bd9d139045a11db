# shellcheck shell=bash
# bench/ns.sh - sourced by bench/run.sh and bench/db.sh once they run
# inside their private network and pid namespace: loopback up, the node
# name flag for this host, a work folder, the cleanup of every process
# started (pids+=(...)), a fresh cookie, and a running epmd.

ip link set lo up

host=$(hostname -s)
if getent hosts "$host" >/dev/null 2>&1; then
    name_flag=-sname
else
    # The short host name does not resolve here: use long names on loopback.
    name_flag=-name
    host=127.0.0.1
fi

work=$(mktemp -d)
pids=()
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    epmd -kill >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cookie="bench$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')"
export HOME="$work" # keep ~/.erlang.cookie and crash dumps out of the way
export ERL_CRASH_DUMP_SECONDS=0

epmd -daemon
for _ in $(seq 100); do
    epmd -names >/dev/null 2>&1 && break
    sleep 0.05
done
