# shellcheck shell=bash source-path=SCRIPTDIR
# cli: every usage error of `aemp` prints what is wrong as its first line on
# stderr, then the usage, and exits 2; `aemp --version` and `aemp version`
# print `aemp VERSION` (AEMP_VERSION of aemp.h) and exit 0. The example of
# README.md ("A C node in a few lines") is examples/readme.c word for word,
# compiles clean with -Wall -Wextra, and with its stdout redirected to a file
# writes a message an erl node sends it into the file while it runs.
# An erl node calls aemp_demo:echo/1, crash/1 and kill/2 of `aemp run`
# (which prints its echo port's ID) and spawns aemp_demo:echo_port/0 there
# (it echoes, and answers gen_server:call); `aemp rpc` prints results of
# the erl node and of aemp_demo, and error, throw, exit, badrpc (timeout)
# on stderr with status 1; `aemp cal` prints the reply of an erl process,
# or its exit reason, noproc, a timeout;
# `aemp snd` delivers terms written in Erlang syntax to that erl node (PORT as NODE#NAME with a short node name,
# as a pid's port ID, as {Name, Node}); `aemp mon` prints the reason a
# process exits with, noproc for a missing name, and fails (status 1) when
# the node cannot be reached or its connection is lost.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
: "${AEMP_README:?AEMP_README must name the example_readme program}"

SRC_DIR=$(cd "$INTEROP_DIR/.." && pwd)

# usage_error LINE ARGS...: `aemp ARGS...` exits 2, prints nothing on
# stdout, and LINE then the usage on stderr.
usage_error() {
    local want=$1 first
    shift
    run_fg usage 10 "$AEMP_BIN" "$@"
    ((EXIT_STATUS == 2)) || fail "aemp $* exited with $EXIT_STATUS, expected 2"
    first=$(head -n 1 "$WORK/usage.err")
    [[ $first == "$want" ]] || fail "aemp $*: first line '$first', expected '$want'"
    [[ $(sed -n 2p "$WORK/usage.err") == usage:* ]] ||
        fail "aemp $*: no usage after the error line"
    [[ ! -s $WORK/usage.out ]] || fail "aemp $* wrote to stdout: $(head -c 200 "$WORK/usage.out")"
}

begin_test

usage_error "aemp: missing command"
usage_error "aemp: unknown command 'frob'" frob
usage_error "aemp: unknown option '--frob'" --frob
usage_error "aemp run: missing node NAME" run
usage_error "aemp run: option --cookie needs a value" run x --cookie
usage_error "aemp run: option --cookie needs a value" run x --cookie ""
usage_error "aemp run: option --port needs a value" run x --port
usage_error "aemp run: option --tls-cert needs a value" run x --tls-cert
usage_error "aemp run: option --profile needs a value" run --profile
usage_error "aemp run: unknown option '--bogus'" run x --bogus
usage_error "aemp run: unexpected argument 'y'" run x y
usage_error "aemp run: bad port '65536' (0..65535)" run x --port 65536
usage_error "aemp run: bad ticktime '0' (seconds, 1..86400)" run x --ticktime 0
usage_error "aemp ping: missing NODE" ping
usage_error "aemp ping: missing NODE" ping --cookie c
usage_error "aemp ping: option --cookie needs a value" ping x --cookie
usage_error "aemp ping: option --port is for aemp run only" ping x --port 1
usage_error "aemp names: unexpected argument 'b'" names a b
usage_error "aemp names: unknown option '--x'" names --x
usage_error "aemp gencert: missing DIR" gencert
usage_error "aemp gencert: missing DIR" gencert --name n
usage_error "aemp gencert: option --name needs a value" gencert "$WORK/pki" --name
usage_error "aemp gencert: unknown option '--x'" gencert --x
usage_error "aemp profile: missing profile NAME" profile
usage_error "aemp profile: missing command" profile p
usage_error "aemp profile: unknown command 'frob'" profile p frob
usage_error "aemp profile: set takes KEY VALUE" profile p set k
usage_error "aemp profile: show takes no arguments" profile p show x
usage_error "aemp profile: gencert needs DIR" profile p gencert
usage_error "aemp version: unexpected argument 'x'" version x
usage_error "aemp snd: missing PORT" snd
usage_error "aemp snd: missing TERM" snd a@b#x
usage_error "aemp snd: unexpected argument 'z'" snd a@b#x y z
usage_error "aemp snd: option --port is for aemp run only" snd a@b#x y --port 1
usage_error "aemp snd: bad TERM '{a,,b}': not Erlang term syntax at column 4" snd a@b#x '{a,,b}'
usage_error "aemp snd: bad TERM '\"ŝ': not Erlang term syntax at column 1" snd a@b#x '"ŝ'
usage_error "aemp snd: bad PORT 'foo' (not NODE#NAME, a pid or {NAME, NODE})" snd foo x
usage_error "aemp snd: bad PORT '#x' (no node name before '#')" snd '#x' x
usage_error "aemp mon: missing PORT" mon
usage_error "aemp mon: unexpected argument 'y'" mon a@b#x y
usage_error "aemp mon: bad PORT 'a@b#<1.2>'" mon 'a@b#<1.2>'
usage_error "aemp rpc: missing NODE" rpc
usage_error "aemp rpc: missing MOD" rpc a@b
usage_error "aemp rpc: missing FUN" rpc a@b m
usage_error "aemp rpc: unexpected argument 'x'" rpc a@b m f [] x
usage_error "aemp rpc: bad ARGS '[a|b]' (not a proper list)" rpc a@b m f '[a|b]'
usage_error "aemp rpc: bad ARGS 'x' (not a proper list)" rpc a@b m f x
usage_error "aemp rpc: bad ARGS '[1,': not Erlang term syntax at column 4" rpc a@b m f '[1,'
usage_error "aemp rpc: bad timeout '0' (seconds, up to 86400)" rpc a@b m f --timeout 0
usage_error "aemp cal: missing PORT" cal
usage_error "aemp cal: missing TERM" cal a@b#x
usage_error "aemp snd: option --timeout is for aemp rpc and cal only" snd a@b#x y --timeout 1
[[ ! -e $WORK/pki ]] || fail "a refused gencert made $WORK/pki"

version=$(sed -n 's/^#define AEMP_VERSION "\(.*\)"$/\1/p' "$SRC_DIR/include/aemp.h")
[[ -n $version ]] || fail "no AEMP_VERSION in include/aemp.h"
for v in --version version; do
    run_fg "version$v" 10 "$AEMP_BIN" "$v"
    ((EXIT_STATUS == 0)) || fail "aemp $v exited with $EXIT_STATUS"
    [[ $(cat "$WORK/version$v.out") == "aemp $version" ]] ||
        fail "aemp $v printed '$(cat "$WORK/version$v.out")', expected 'aemp $version'"
    [[ ! -s $WORK/version$v.err ]] || fail "aemp $v wrote to stderr"
done
run_fg help 10 "$AEMP_BIN" --help
((EXIT_STATUS == 0)) || fail "aemp --help exited with $EXIT_STATUS"
expect_line "$WORK/help.out" '^usage:$'

# The README's program is examples/readme.c.
awk '/^## A C node in a few lines/ { s = 1 }
     s && /^```c$/ { b = 1; next }
     b && /^```$/ { exit }
     b { print }' "$SRC_DIR/README.md" >"$WORK/readme_block.c"
[[ -s $WORK/readme_block.c ]] || fail "no C block under 'A C node in a few lines' in README.md"
diff -u "$WORK/readme_block.c" "$SRC_DIR/examples/readme.c" >"$WORK/readme.diff" ||
    fail "README.md's 'A C node in a few lines' and examples/readme.c differ (keep them" \
        "identical): $(cat "$WORK/readme.diff")"
# The project builds the examples with -Wno-unused-parameter; the README's
# reader will not.
"${AEMP_CC:-cc}" -std=gnu11 -Wall -Wextra -Werror -fsyntax-only -I"$SRC_DIR/include" \
    "$SRC_DIR/examples/readme.c" 2>"$WORK/readme_cc.err" ||
    fail "examples/readme.c does not compile clean with -Wall -Wextra: $(cat "$WORK/readme_cc.err")"

# Its output goes to a file (start_bg): the message must be there while the
# program still runs, not only once it exits.
start_bg readme "$AEMP_README"
wait_for "cnode to register with EPMD" 15 epmd_lists cnode
erl_cmd e secret -eval "{inbox, 'cnode@$HOST'} ! {hello, self()}, timer:sleep(infinity)"
start_bg e "${ERL_CMD[@]}"
wait_line "$WORK/readme.out" '^got \{hello,.+\}$' 20
! not_running "${PIDS[readme]}" || fail "example_readme exited"
log "example_readme wrote: $(cat "$WORK/readme.out")"

# aemp_demo, aemp snd and aemp mon with an erl node (aemp_interop:run(cli)).
start_aemp c
echo_id=$(sed -n 's/^aemp: port echo is //p' "$WORK/c.out")
[[ $echo_id == "c@$HOST#<"*">" ]] || fail "aemp run printed no port ID for echo: '$echo_id'"
erl_cmd t "$COOKIE" -eval "aemp_interop:run(cli, ['c@$HOST', \"$echo_id\"])"
start_bg t "${ERL_CMD[@]}"
wait_line "$WORK/t.out" '^INBOX ' 30
inbox=$(sed -n 's/^INBOX //p' "$WORK/t.out")

# aemp_ok NAME ARGS...: `aemp ARGS... --cookie C` exits 0.
aemp_ok() {
    local name=$1
    shift
    run_fg "$name" 20 "$AEMP_BIN" "$@" --cookie "$COOKIE"
    ((EXIT_STATUS == 0)) || fail "aemp $* exited with $EXIT_STATUS: $(cat "$WORK/$name.err")"
}
aemp_ok snd1 snd t#inbox '{hello, [1, 2 | 3], #{k => <<"v">>, 1 => 1.0},
    1180591620717411303424, "str", -1.5, '"'Ω'"', <<1:3>>, "", <<>>}'
aemp_ok snd2 snd "$inbox" "{to_pid, $inbox}"
aemp_ok snd3 snd "{inbox, 't@$HOST'}" three
run_fg snd4 20 "$AEMP_BIN" snd "nonode@$HOST#x" hi --cookie "$COOKIE"
((EXIT_STATUS == 1)) || fail "aemp snd to a missing node exited with $EXIT_STATUS, expected 1"
expect_line "$WORK/snd4.err" "^aemp snd: cannot reach nonode@$HOST: "

# expect_out NAME TEXT: NAME's stdout is TEXT.
expect_out() {
    [[ $(cat "$WORK/$1.out") == "$2" ]] || fail "$1 printed '$(cat "$WORK/$1.out")', expected '$2'"
}
# call_fails NAME LINE ARGS...: `aemp ARGS... --cookie C` exits 1 with LINE
# on stderr and nothing on stdout.
call_fails() {
    local name=$1 want=$2
    shift 2
    run_fg "$name" 20 "$AEMP_BIN" "$@" --cookie "$COOKIE"
    ((EXIT_STATUS == 1)) || fail "aemp $* exited with $EXIT_STATUS, expected 1"
    [[ $(cat "$WORK/$name.err") == "$want" ]] ||
        fail "aemp $* said '$(cat "$WORK/$name.err")', expected '$want'"
    [[ ! -s $WORK/$name.out ]] || fail "aemp $* wrote to stdout: $(cat "$WORK/$name.out")"
}
aemp_ok rpc1 rpc t erlang list_to_tuple '[[a, "b", <<1,2>>, 1.5, -16#1FFFFFFFFFFFFFFFF]]'
expect_out rpc1 '{a,"b",<<1,2>>,1.5,-16#1FFFFFFFFFFFFFFFF}'
aemp_ok rpc2 rpc t erlang node
expect_out rpc2 "t@$HOST"
aemp_ok rpc3 rpc c aemp_demo echo '[#{k => [v], 1 => {}}]'
expect_out rpc3 '#{1 => {},k => [v]}'
call_fails rpc4 "aemp rpc: error: boom" rpc t erlang error '[boom]'
call_fails rpc5 "aemp rpc: throw: {x,1}" rpc t erlang throw '[{x, 1}]'
call_fails rpc6 "aemp rpc: exit: bye" rpc t erlang exit '[bye]'
call_fails rpc7 "aemp rpc: error: undef" rpc t no_such_module f
call_fails rpc8 "aemp rpc: error: oops" rpc c aemp_demo crash '[oops]'
call_fails rpc9 "aemp rpc: badrpc: timeout (no answer within 300 ms)" \
    rpc t timer sleep '[20000]' --timeout 0.3
aemp_ok cal1 cal t#calee '{ping, 1}'
expect_out cal1 '{pong,1}'
call_fails cal2 "aemp cal: exit: {shutdown,x}" cal t#dier '{die, {shutdown, x}}'
call_fails cal3 "aemp cal: exit: noproc" cal t#nobody '{ping, 2}'
call_fails cal4 "aemp cal: timeout (no answer within 300 ms)" cal t#calee '{ignore, 1}' \
    --timeout 0.3

wait_line "$WORK/t.out" '^VICTIM$' 20
start_bg mon1 "$AEMP_BIN" mon "t@$HOST#victim" --cookie "$COOKIE"
expect_exit mon1 20 0
[[ $(cat "$WORK/mon1.out") == '{shutdown,{<<"bye">>,42}}' ]] ||
    fail "aemp mon printed '$(cat "$WORK/mon1.out")', expected {shutdown,{<<\"bye\">>,42}}"
aemp_ok mon2 mon "t@$HOST#nobody"
[[ $(cat "$WORK/mon2.out") == noproc ]] || fail "aemp mon of a missing name printed" \
    "'$(cat "$WORK/mon2.out")', expected noproc"
run_fg mon3 20 "$AEMP_BIN" mon "nonode@$HOST#x" --cookie "$COOKIE"
((EXIT_STATUS == 1)) || fail "aemp mon of a missing node exited with $EXIT_STATUS, expected 1"
expect_line "$WORK/mon3.err" "^aemp mon: cannot reach nonode@$HOST: "

# the erl node halts once idle is monitored: that monitor ends with it
wait_line "$WORK/t.out" '^IDLE$' 20
start_bg mon4 "$AEMP_BIN" mon t#idle --cookie "$COOKIE"
expect_exit t 30 0
cat "$WORK/t.out"
expect_line "$WORK/t.out" '^PASS cli$'
expect_peer_release "$WORK/t.out"
expect_exit mon4 20 1
expect_line "$WORK/mon4.err" "^aemp mon: t@$HOST: connection lost"
# every command that ran ended cleanly, those that failed on purpose too
! grep -El 'Sanitizer|runtime error:' "$WORK"/*.err >"$WORK/sanitized" ||
    fail "sanitizer report from: $(tr '\n' ' ' <"$WORK/sanitized")"
pass
