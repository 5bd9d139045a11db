# shellcheck shell=bash source-path=SCRIPTDIR
# tls: TLS distribution with real `erl -proto_dist inet_tls` nodes, using
# certificates made by `aemp gencert`: Erlang pings the TLS aemp node and
# echoes every term type and a 4 MB binary through it; `aemp ping` reaches a
# TLS Erlang node; plain TCP peers are refused in both directions, and so is
# a TLS peer whose certificate comes from a CA the aemp node does not trust.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

begin_test
pki=$WORK/pki
run_fg gencert 20 "$AEMP_BIN" gencert "$pki" "$HOST"
((EXIT_STATUS == 0)) || fail "aemp gencert exited with $EXIT_STATUS"
for f in ca.pem node.pem node.key; do
    [[ -s $pki/$f ]] || fail "aemp gencert made no $f"
done
opts="{certfile, \"$pki/node.pem\"}, {keyfile, \"$pki/node.key\"},
      {cacertfile, \"$pki/ca.pem\"}, {verify, verify_peer}, {secure_renegotiate, true}"
cat >"$WORK/ssl_dist.conf" <<CONF
[{server, [$opts, {fail_if_no_peer_cert, true}]},
 {client, [$opts]}].
CONF
erl_tls=(-proto_dist inet_tls -ssl_dist_optfile "$WORK/ssl_dist.conf")
aemp_tls=(--tls-cert "$pki/node.pem" --tls-key "$pki/node.key" --tls-ca "$pki/ca.pem")

start_aemp c "${aemp_tls[@]}"
erl_test t ping "'c@$HOST'" "$COOKIE" "${erl_tls[@]}"
erl_test t2 echo_types "'c@$HOST'" "$COOKIE" "${erl_tls[@]}"
erl_test t3 echo_big "'c@$HOST'" "$COOKIE" "${erl_tls[@]}"
# A plain TCP Erlang node cannot talk to the TLS node.
erl_test p pang "'c@$HOST'"

# Node d trusts only a second CA. The Erlang node trusts both CAs (so it
# accepts d's certificate) but presents a certificate of the first: d must
# refuse it.
pki2=$WORK/pki2
run_fg gencert2 20 "$AEMP_BIN" gencert "$pki2" "$HOST"
((EXIT_STATUS == 0)) || fail "aemp gencert (second CA) exited with $EXIT_STATUS"
cat "$pki/ca.pem" "$pki2/ca.pem" >"$WORK/both_cas.pem"
both="{certfile, \"$pki/node.pem\"}, {keyfile, \"$pki/node.key\"},
      {cacertfile, \"$WORK/both_cas.pem\"}, {verify, verify_peer}, {secure_renegotiate, true}"
cat >"$WORK/ssl_dist_both.conf" <<CONF
[{server, [$both, {fail_if_no_peer_cert, true}]},
 {client, [$both]}].
CONF
start_aemp d --tls-cert "$pki2/node.pem" --tls-key "$pki2/node.key" --tls-ca "$pki2/ca.pem"
erl_test u pang "'d@$HOST'" "$COOKIE" -proto_dist inet_tls -ssl_dist_optfile "$WORK/ssl_dist_both.conf"
wait_line "$WORK/d.err" '[Cc]ertificate|[Vv]erif' 5
log "d logged: $(grep -E -m 1 '[Cc]ertificate|[Vv]erif' "$WORK/d.err")"
# ...while a certificate of the second CA is welcome.
sed "s|$pki/node|$pki2/node|g" "$WORK/ssl_dist_both.conf" >"$WORK/ssl_dist_2.conf"
erl_test u2 ping "'d@$HOST'" "$COOKIE" -proto_dist inet_tls -ssl_dist_optfile "$WORK/ssl_dist_2.conf"

start_erl v "$COOKIE" "${erl_tls[@]}"
run_fg ping_tls 20 "$AEMP_BIN" ping "v@$HOST" --cookie "$COOKIE" "${aemp_tls[@]}"
((EXIT_STATUS == 0)) || fail "aemp ping over TLS exited with $EXIT_STATUS"
expect_line "$WORK/ping_tls.out" '^pong$'
run_fg ping_plain 20 "$AEMP_BIN" ping "v@$HOST" --cookie "$COOKIE"
((EXIT_STATUS != 0 && EXIT_STATUS != 124 && EXIT_STATUS != 137)) ||
    fail "aemp ping without TLS of a TLS node exited with $EXIT_STATUS (124/137: timed out)"
! grep -q pong "$WORK/ping_plain.out" || fail "aemp ping without TLS of a TLS node printed pong"
pass
