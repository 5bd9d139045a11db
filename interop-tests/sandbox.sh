#!/usr/bin/env bash
# sandbox.sh UNSHARE_OPTION... -- COMMAND [ARG...]
#
# Runs `unshare UNSHARE_OPTION... COMMAND ARG...` (every interop and fault
# test is started this way by ctest), also on machines where / is not a
# mount point: a chroot, or a container whose root is a plain directory.
# There util-linux unshare cannot give a new mount namespace a private root
# (`unshare: cannot change root filesystem propagation: Invalid argument`:
# mount(2) refuses MS_PRIVATE on a directory that is not a mount point), and
# `mount --bind / /` does not help: the process's root stays the directory
# under the new mount.
#
# So, only where `unshare --mount` fails, this script first enters a mount
# namespace of its own with propagation unchanged, makes a tmpfs sub-mount
# (/run, /tmp or /dev/shm, the first that is one) private in it, binds the
# whole tree (`mount --rbind / DIR`, DIR = .aemp-root on that sub-mount) and
# chroots into DIR. There / is the root of a mount, paths are the same as
# before, and unshare works as on any machine. Nothing of it is seen outside
# the namespace: it dies with the command. Where none of those directories
# is a mount point, DIR is /tmp/.aemp-root on the root file system; the bind
# then propagates to the parent namespace if the root there is a shared
# mount (as under systemd); docs/testing.md says so.
#
# Elsewhere (the usual case) it is exactly `exec unshare ...`.
set -euo pipefail

if [[ ${1:-} == --in-private-root ]]; then
    # Second stage, in a mount namespace of our own (propagation unchanged).
    cwd=$2
    shift 2
    base=""
    for m in /run /tmp /dev/shm; do
        if mountpoint -q "$m"; then
            base=$m
            mount --make-rprivate "$m"
            break
        fi
    done
    dir=${base:-/tmp}/.aemp-root
    mkdir -p "$dir"
    mount --rbind / "$dir"
    mount --make-rprivate "$dir"
    # shellcheck disable=SC2016 # expanded by the inner shell
    exec chroot "$dir" /bin/sh -c 'cd "$1" 2>/dev/null || cd /; shift; exec unshare "$@"' \
        sh "$cwd" "$@"
fi

opts=()
while (($#)) && [[ $1 != -- ]]; do
    opts+=("$1")
    shift
done
if [[ ${1:-} != -- || $# -lt 2 ]]; then
    echo "usage: $0 UNSHARE_OPTION... -- COMMAND [ARG...]" >&2
    exit 2
fi
shift

if unshare --mount true 2>/dev/null; then
    exec unshare "${opts[@]}" -- "$@"
fi
if ! mountpoint -q /; then
    exec unshare --mount --propagation unchanged -- \
        bash "${BASH_SOURCE[0]}" --in-private-root "$PWD" "${opts[@]}" -- "$@"
fi
# / is a mount point and unshare --mount still fails: no root, or a kernel
# without mount namespaces. Let unshare say why.
exec unshare "${opts[@]}" -- "$@"
