#!/usr/bin/env bash
# Quick start, part 1: installs what is missing, builds, and runs the demo:
# a C node (examples/demo.c) and a real Erlang node (examples/demo.erl)
# exchanging messages. Runs in a private network namespace when it can, so
# no other epmd or node interferes; the C node serves EPMD itself.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${AEMP_DEMO_INNER:-}" ]; then
    bash scripts/setup.sh
    erlc -o build examples/demo.erl
fi

if [ -z "${AEMP_DEMO_INNER:-}" ] && [ "$(id -u)" -eq 0 ] && unshare -n true 2>/dev/null; then
    exec env AEMP_DEMO_INNER=1 unshare -n bash "$0" "$@"
fi
[ -n "${AEMP_DEMO_INNER:-}" ] && ip link set lo up

host=$(hostname -s)
cookie=aemp-demo
echo "== demo: C node demo@$host and Erlang node erldemo@$host"
# No log of an earlier run: tee creates the file when it starts, and a
# stale one could be read (and then truncated) before that.
rm -f build/demo-c.log
./build/example_demo demo "$cookie" > >(tee build/demo-c.log) 2>&1 &
cpid=$!
trap 'kill $cpid 2>/dev/null || true' EXIT
started=0
for _ in $(seq 100); do
    if grep -q "greeter registered" build/demo-c.log 2>/dev/null; then
        started=1
        break
    fi
    sleep 0.1
done
[ "$started" = 1 ] || {
    cat build/demo-c.log 2>/dev/null
    echo "demo: C node did not start within 10 s"
    exit 1
}

erl -sname erldemo -setcookie "$cookie" -noshell -start_epmd false -pa build \
    -run demo run "demo@$host"
# The C node exits when the Erlang node goes away.
for _ in $(seq 100); do kill -0 $cpid 2>/dev/null || break; sleep 0.1; done
if grep -q "node down" build/demo-c.log; then
    echo "== demo finished"
else
    echo "demo: the C node did not report the Erlang node going away"
    exit 1
fi
