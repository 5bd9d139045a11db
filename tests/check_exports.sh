#!/usr/bin/env bash
# The shared library exports the public API and nothing else: every dynamic
# symbol it defines is an aemp_* function declared in include/aemp.h (no
# internal aemp__* symbol, nothing of erl_interface, libuv or OpenSSL).
# Usage: check_exports.sh LIBAEMP_SO AEMP_H
set -euo pipefail
lib=$1
header=$2
syms=$(nm -D --defined-only "$lib" | awk '{print $3}' | sort -u)
[ -n "$syms" ] || { echo "FAIL: $lib exports nothing"; exit 1; }
bad=0
for s in $syms; do
    if [[ ! $s =~ ^aemp_[a-z] ]]; then
        echo "FAIL: $lib exports $s, which is not public API"
        bad=1
    elif ! grep -Eq "[ *]$s\(" "$header"; then
        echo "FAIL: $lib exports $s, which $header does not declare"
        bad=1
    fi
done
# and every function the header declares is there
for f in $(grep -Eo '\baemp_[a-z0-9_]+\(' "$header" | tr -d '(' | sort -u); do
    grep -qx "$f" <<<"$syms" || { echo "FAIL: $header declares $f, $lib does not export it"; bad=1; }
done
[ "$bad" = 0 ] || exit 1
echo "exports: $(wc -w <<<"$syms") aemp_* symbols, all declared in $(basename "$header")"
