#!/usr/bin/env bash
# After `cmake --install`, a program built with pkg-config starts without
# ldconfig or LD_LIBRARY_PATH, from any prefix (aemp.pc gives the run path).
# Usage: check_install.sh BUILD_DIR
set -euo pipefail
build=$1
prefix=$(mktemp -d /tmp/aemp-install.XXXXXX)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
pcdir=$(dirname "$(find "$prefix" -name aemp.pc | head -n 1)")
cat >"$prefix/t.c" <<'C'
#include <aemp.h>
#include <stdio.h>
int main(void)
{
    printf("%s %s\n", AEMP_VERSION, aemp_strerror(AEMP_EBUSY));
    return 0;
}
C
# a sanitizer build's library needs its runtime in the program too
san=()
libdeps=$(ldd "$(find "$prefix" -name 'libaemp.so' | head -n 1)")
if grep -q libasan <<<"$libdeps"; then
    san=(-fsanitize=address,undefined)
fi
# shellcheck disable=SC2046 # pkg-config's flags are words
cc -std=gnu11 -Wall -Wextra -Werror "${san[@]}" -o "$prefix/t" "$prefix/t.c" \
    $(PKG_CONFIG_PATH=$pcdir pkg-config --cflags --libs aemp)
deps=$(ldd "$prefix/t")
grep -q "libaemp.so.* => $prefix/" <<<"$deps" ||
    { echo "FAIL: libaemp not found in $prefix: $(grep aemp <<<"$deps")"; exit 1; }
out=$(env -u LD_LIBRARY_PATH "$prefix/t")
[[ $out == "0."*" busy"* ]] || { echo "FAIL: the program printed '$out'"; exit 1; }
echo "install: a pkg-config program starts from $prefix without ldconfig: $out"
