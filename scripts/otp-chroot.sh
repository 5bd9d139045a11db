#!/usr/bin/env bash
# Newer OTP releases for the interop tests, as minimal Debian chroots.
#
#   scripts/otp-chroot.sh build RELEASE     build the chroot once (cached), print its path
#   scripts/otp-chroot.sh root RELEASE      print its path; fail unless it is complete
#   scripts/otp-chroot.sh erlc RELEASE OUTDIR SOURCE...
#                                           build (cached), then compile the Erlang
#                                           SOURCEs into OUTDIR with that release's erlc
#   scripts/otp-chroot.sh run RELEASE COMMAND [ARG...]
#                                           run COMMAND in the chroot (by hand:
#                                           `run 27 erl -version`)
#   scripts/otp-chroot.sh list              the releases and their Debian suites
#
# RELEASE is an OTP major release: 27 (Debian 13 "trixie": OTP 27, Elixir
# 1.18) or 29 (Debian "sid": OTP 29). The host's own OTP 25 needs no chroot.
#
# A chroot is `debootstrap --variant=minbase SUITE` from the mirror the
# machine's apt sources name, plus `apt-get install erlang-nox elixir`
# inside. It lives in $AEMP_OTP_CACHE/SUITE (default /var/cache/aemp-otp),
# is built in SUITE.tmp and renamed when complete, and holds a stamp file
# (.aemp-otp-stamp: suite, OTP and Elixir versions, build time) written
# only on success: a chroot with a stamp is reused as it is, anything else
# is built anew. A lock file per suite keeps two builds of one suite apart.
# Every failure says why and exits non-zero.
#
# Environment:
#   AEMP_OTP_CACHE   cache folder (default /var/cache/aemp-otp)
#   AEMP_OTP_MIRROR  Debian mirror (default: the one the host's apt sources
#                    use for its own suite)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SANDBOX=$SCRIPT_DIR/../interop-tests/sandbox.sh
CACHE=${AEMP_OTP_CACHE:-/var/cache/aemp-otp}
STAMP=.aemp-otp-stamp
# OTP release -> the Debian suite that ships it (checked after the build).
declare -A SUITE_OF=([27]=trixie [29]=sid)

say() { echo "otp-chroot: $*" >&2; }
die() {
    say "$*"
    exit 1
}

suite_of() {
    local rel=$1
    [[ -n ${SUITE_OF[$rel]:-} ]] ||
        die "unknown OTP release '$rel' (known: ${!SUITE_OF[*]}; the host's OTP 25 needs no chroot)"
    echo "${SUITE_OF[$rel]}"
}

# The mirror of the host's own Debian suite, from /etc/apt/sources.list
# (one-line format) and /etc/apt/sources.list.d/*.list and *.sources
# (deb822).
host_mirror() {
    local codename f
    if [[ -n ${AEMP_OTP_MIRROR:-} ]]; then
        echo "$AEMP_OTP_MIRROR"
        return
    fi
    # shellcheck disable=SC1091 # the machine's file
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [[ -n $codename ]] || die "no VERSION_CODENAME in /etc/os-release; set AEMP_OTP_MIRROR"
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        awk -v want="$codename" '
            # one-line: deb [options] URI SUITE COMPONENTS...
            /^[ \t]*deb[ \t]/ {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == want) { print $i; exit }
            }
            # deb822 stanzas: Types/URIs/Suites, separated by blank lines
            /^[ \t]*$/ { uris = ""; suites = ""; deb = 0 }
            tolower($1) == "types:" { deb = ($0 ~ /[ \t]deb([ \t]|$)/) }
            tolower($1) == "uris:" { uris = $2 }
            tolower($1) == "suites:" { suites = " " substr($0, index($0, ":") + 1) " " }
            deb && uris != "" && suites ~ (" " want " ") { print uris; exit }
        ' "$f"
    done | head -n 1 | grep . ||
        die "no apt source for '$codename' in /etc/apt/sources.list*; set AEMP_OTP_MIRROR"
}

# erlang_release DIR: the OTP major release installed in the chroot DIR.
erlang_release() {
    chroot "$1" /usr/bin/erl -noshell -eval \
        'io:format("~s~n", [erlang:system_info(otp_release)]), halt().' </dev/null
}

elixir_version() {
    chroot "$1" /usr/bin/env HOME=/tmp LC_ALL=C.UTF-8 /usr/bin/elixir --version </dev/null 2>/dev/null |
        sed -n 's/^Elixir \([^ ]*\).*/\1/p'
}

complete() {
    [[ -f $1/$STAMP && -x $1/usr/bin/erl && -x $1/usr/bin/elixir ]]
}

# apt-get in the chroot DIR, in a mount namespace of its own (proc and /dev
# for dpkg's maintainer scripts vanish with it). The index of a suite like
# sid may be past its Valid-Until date on a snapshot mirror.
chroot_apt() {
    local dir=$1
    shift
    bash "$SANDBOX" --mount -- /bin/sh -c '
        dir=$1; shift
        mount -t proc proc "$dir/proc" && mount --rbind /dev "$dir/dev" &&
        exec chroot "$dir" /usr/bin/env DEBIAN_FRONTEND=noninteractive LC_ALL=C \
            PATH=/usr/sbin:/usr/bin:/sbin:/bin apt-get -o Acquire::Check-Valid-Until=false -q "$@"
    ' sh "$dir" "$@"
}

build_suite() {
    local rel=$1 suite dir tmp mirror t0 got ex
    suite=$(suite_of "$rel")
    dir=$CACHE/$suite
    tmp=$dir.tmp
    if complete "$dir"; then
        echo "$dir"
        return
    fi
    [[ $(id -u) -eq 0 ]] || die "building the $suite chroot needs root"
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap"
        apt-get update -qq >&2 || die "apt-get update failed (needed for debootstrap)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2 ||
            die "cannot install debootstrap"
    fi
    mirror=$(host_mirror)
    t0=$(date +%s)
    say "building the $suite chroot (OTP $rel) in $dir from $mirror"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    # debootstrap mounts proc and sys in the target: in a namespace of its
    # own, so a failed build leaves no mount behind.
    if ! bash "$SANDBOX" --mount -- debootstrap --variant=minbase \
        --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
        "$suite" "$tmp" "$mirror" >"$CACHE/$suite.log" 2>&1; then
        tail -n 20 "$CACHE/$suite.log" >&2
        if grep -Eqi 'signature|signed|NO_PUBKEY|keyring|gpgv' "$CACHE/$suite.log"; then
            die "debootstrap $suite failed (log: $CACHE/$suite.log): the Release signature does" \
                "not verify with /usr/share/keyrings/debian-archive-keyring.gpg; a suite signed by" \
                "a newer key needs a newer debian-archive-keyring on the host"
        fi
        die "debootstrap $suite failed (log: $CACHE/$suite.log); is $mirror reachable?" \
            "(AEMP_OTP_MIRROR names another mirror)"
    fi
    cp /etc/hosts "$tmp/etc/hosts"
    [[ ! -r /etc/resolv.conf ]] || cp -L /etc/resolv.conf "$tmp/etc/resolv.conf" 2>/dev/null || true
    say "debootstrap $suite done after $(($(date +%s) - t0)) s; installing erlang-nox elixir"
    if ! { chroot_apt "$tmp" update && chroot_apt "$tmp" install -y --no-install-recommends \
        erlang-nox elixir && chroot_apt "$tmp" clean; } >>"$CACHE/$suite.log" 2>&1; then
        tail -n 20 "$CACHE/$suite.log" >&2
        die "apt-get install erlang-nox elixir in the $suite chroot failed (log: $CACHE/$suite.log)"
    fi
    got=$(erlang_release "$tmp") || die "erl does not run in the $suite chroot"
    [[ $got == "$rel" ]] ||
        die "the $suite chroot has OTP $got, not OTP $rel: Debian moved on; update SUITE_OF in $0"
    ex=$(elixir_version "$tmp")
    [[ -n $ex ]] || die "elixir does not run in the $suite chroot"
    printf 'suite %s\notp %s\nerts %s\nelixir %s\nmirror %s\nbuilt %s in %s s\n' \
        "$suite" "$got" "$(chroot "$tmp" /usr/bin/erl -noshell -eval \
            'io:format("~s~n", [erlang:system_info(version)]), halt().' </dev/null)" \
        "$ex" "$mirror" "$(date -u +%FT%TZ)" "$(($(date +%s) - t0))" >"$tmp/$STAMP"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    say "the $suite chroot is ready after $(($(date +%s) - t0)) s: OTP $got, Elixir $ex"
    echo "$dir"
}

# locked RELEASE COMMAND...: COMMAND under the suite's lock.
locked() {
    local suite
    suite=$(suite_of "$1")
    mkdir -p "$CACHE"
    exec 9>"$CACHE/$suite.lock"
    flock -w 1800 9 || die "timed out waiting for another build of the $suite chroot"
    shift
    "$@"
}

cmd=${1:-}
case $cmd in
build)
    [[ $# -eq 2 ]] || die "usage: $0 build RELEASE"
    locked "$2" build_suite "$2"
    ;;
root)
    [[ $# -eq 2 ]] || die "usage: $0 root RELEASE"
    dir=$CACHE/$(suite_of "$2")
    complete "$dir" || die "no complete OTP $2 chroot in $dir: run scripts/otp-chroot.sh build $2"
    echo "$dir"
    ;;
erlc)
    [[ $# -ge 4 ]] || die "usage: $0 erlc RELEASE OUTDIR SOURCE..."
    rel=$2 out=$3
    shift 3
    dir=$(locked "$rel" build_suite "$rel")
    # The sources and the output go through a folder inside the chroot:
    # no mount needed.
    tmpd=$(mktemp -d "$dir/tmp/aemp-erlc.XXXXXX")
    trap 'rm -rf "$tmpd"' EXIT
    cp "$@" "$tmpd/"
    mods=()
    for src in "$@"; do
        mods+=("/tmp/${tmpd##*/}/${src##*/}")
    done
    chroot "$dir" /usr/bin/erlc -Wall -Werror -o "/tmp/${tmpd##*/}" "${mods[@]}" </dev/null ||
        die "erlc of OTP $rel failed on: $*"
    mkdir -p "$out"
    cp "$tmpd"/*.beam "$out/"
    say "compiled with OTP $rel erlc into $out: $(cd "$out" && echo *.beam)"
    sed 's/^/otp-chroot: /' "$dir/$STAMP" >&2
    ;;
run)
    [[ $# -ge 3 ]] || die "usage: $0 run RELEASE COMMAND [ARG...]"
    dir=$(bash "$0" root "$2")
    shift 2
    exec chroot "$dir" /usr/bin/env HOME=/tmp LC_ALL=C.UTF-8 PATH=/usr/bin:/bin "$@"
    ;;
list)
    for rel in "${!SUITE_OF[@]}"; do
        dir=$CACHE/${SUITE_OF[$rel]}
        state=missing
        ! complete "$dir" || state="ready ($(paste -sd ' ' "$dir/$STAMP"))"
        echo "OTP $rel: Debian ${SUITE_OF[$rel]}, $dir: $state"
    done | sort
    ;;
*)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
