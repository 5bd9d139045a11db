#!/bin/sh
# The erl, erlc, epmd and elixir of a newer OTP release, run from its Debian
# chroot (scripts/otp-chroot.sh). lib.sh links $WORK/bin/TOOL to this script
# when AEMP_OTP is set, puts $WORK/bin first in PATH and exports
# AEMP_OTP_ROOT, the chroot; the test's private mount namespace has /tmp
# (the work dir and HOME), /dev, /proc, /etc/hosts and the folders of the
# Erlang modules bound into it, at the same paths. The tool keeps this
# process (exec all the way), so its pid is the one the test started, and
# the working directory is kept when it exists in the chroot.
: "${AEMP_OTP_ROOT:?AEMP_OTP_ROOT must name the OTP chroot}"
tool=${0##*/}
# shellcheck disable=SC2016 # expanded by the shell in the chroot
exec chroot "$AEMP_OTP_ROOT" /usr/bin/env PATH=/usr/bin:/bin LANG=C.UTF-8 \
    /bin/sh -c 'cd "$1" 2>/dev/null || cd "$HOME" 2>/dev/null || cd /; shift; exec "$@"' \
    sh "$PWD" "/usr/bin/$tool" "$@"
