#!/usr/bin/env bash
# Installs what is missing (Debian 12, as root or with sudo) and builds aemp
# into build/. Sourced by demo.sh and test.sh; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config libuv1-dev libssl-dev erlang-nox erlang-dev
          libcriterion-dev elixir iproute2 util-linux clang libclang-rt-14-dev clang-format
          iptables debootstrap)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

echo "== building"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAEMP_WERROR=ON >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
