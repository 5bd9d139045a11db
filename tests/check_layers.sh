#!/usr/bin/env bash
# Each layer of src/ calls only its own layer and those below it
# (docs/design.md): for every object file of the library, each aemp symbol
# it uses but does not define must be defined in its own folder or a folder
# further down this list. What a lower layer has to tell a higher one goes
# through the callbacks and handler tables it was given, never by name.
# Usage: check_layers.sh OBJECT_DIR (the aemp_obj objects, src/<layer>/*.o)
set -euo pipefail
dir=$1
layers=(util term epmd profile dist node proc svc api)
declare -A rank=() defined_in=()
for i in "${!layers[@]}"; do rank[${layers[$i]}]=$i; done
mapfile -t objs < <(find "$dir" -name '*.o' -path '*/src/*' | sort)
[ ${#objs[@]} -gt 0 ] || { echo "FAIL: no object files under $dir"; exit 1; }
layer_of() {
    local l=${1%/*}
    echo "${l##*/}"
}
for o in "${objs[@]}"; do
    l=$(layer_of "$o")
    [ -n "${rank[$l]:-}" ] || { echo "FAIL: $o is in no known layer ($l)"; exit 1; }
    while read -r s; do defined_in[$s]=$l; done < <(nm --defined-only "$o" | awk '$2 ~ /[TDBR]/ {print $3}' | grep '^aemp' || true)
done
bad=0
for o in "${objs[@]}"; do
    l=$(layer_of "$o")
    while read -r s; do
        d=${defined_in[$s]:-}
        [ -n "$d" ] || continue
        if ((rank[$d] > rank[$l])); then
            echo "FAIL: $l/$(basename "$o") calls $s of the layer above it ($d)"
            bad=1
        fi
    done < <(nm --undefined-only "$o" | awk '{print $2}' | grep '^aemp' || true)
done
[ "$bad" = 0 ] || exit 1
echo "layers: ${#objs[@]} objects, every call goes to its own layer or below (${layers[*]})"
