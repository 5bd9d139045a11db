# shellcheck shell=bash source-path=SCRIPTDIR
# profile: TLS settings kept in a profile (made with `aemp profile NAME
# gencert`): `aemp run --profile` serves a TLS Erlang node, and `aemp ping
# --profile` reaches it back; the profile's secret is the cookie.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
export AEMP_PROFILES=$WORK/profiles
pki=$WORK/pki
run_fg p1 20 "$AEMP_BIN" profile tlsnode gencert "$pki" "$HOST"
((EXIT_STATUS == 0)) || fail "aemp profile gencert exited with $EXIT_STATUS"
run_fg p2 20 "$AEMP_BIN" profile tlsnode set secret "$COOKIE"
((EXIT_STATUS == 0)) || fail "aemp profile set secret exited with $EXIT_STATUS"
run_fg p3 20 "$AEMP_BIN" profile tlsnode set nodeid "c@$HOST"
((EXIT_STATUS == 0)) || fail "aemp profile set nodeid exited with $EXIT_STATUS"
run_fg show 20 "$AEMP_BIN" profile tlsnode show
expect_line "$WORK/show.out" '^tls_cert = /'
! grep -q "$COOKIE" "$WORK/show.out" || fail "profile show printed the secret"
[[ $(stat -c %a "$AEMP_PROFILES") == 600 ]] || fail "profile file mode is $(stat -c %a "$AEMP_PROFILES")"

opts="{certfile, \"$pki/tlsnode.pem\"}, {keyfile, \"$pki/tlsnode.key\"},
      {cacertfile, \"$pki/ca.pem\"}, {verify, verify_peer}, {secure_renegotiate, true}"
cat >"$WORK/ssl_dist.conf" <<CONF
[{server, [$opts, {fail_if_no_peer_cert, true}]},
 {client, [$opts]}].
CONF
erl_tls=(-proto_dist inet_tls -ssl_dist_optfile "$WORK/ssl_dist.conf")

# The cookie given on the command line loses against the profile's secret.
start_bg c env --default-signal=INT,TERM "$AEMP_BIN" run --profile tlsnode --cookie not_this_one
AEMP_NODES+=(c)
wait_line "$WORK/c.out" "^aemp: node c@$HOST ready" 15
erl_test t ping "'c@$HOST'" "$COOKIE" "${erl_tls[@]}"
erl_test p pang "'c@$HOST'"

start_erl v "$COOKIE" "${erl_tls[@]}"
run_fg ping_tls 20 "$AEMP_BIN" ping "v@$HOST" --profile tlsnode
((EXIT_STATUS == 0)) || fail "aemp ping --profile exited with $EXIT_STATUS"
expect_line "$WORK/ping_tls.out" '^pong$'
pass
