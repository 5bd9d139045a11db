#!/usr/bin/env bash
# Format the C sources with the repo's .clang-format, or with --check fail
# (listing the files) when any is not formatted.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.c' '*.h' 2>/dev/null || find src include cli tests examples bench interop-tests -name '*.[ch]')
if [ "${1:-}" = "--check" ]; then
    bad=()
    for f in "${files[@]}"; do
        [ -f "$f" ] || continue
        clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
    done
    if [ ${#bad[@]} -gt 0 ]; then
        echo "not formatted (run scripts/format.sh): ${bad[*]}"
        exit 1
    fi
    echo "all ${#files[@]} C files formatted"
else
    clang-format -i "${files[@]}"
fi
