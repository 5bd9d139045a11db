#!/usr/bin/env bash
# Quick start, part 2: installs what is missing, builds, and runs the whole
# test suite (unit tests, and interop tests against real erl and elixir
# nodes, each in its own network namespace).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== running tests"
ctest --test-dir build --output-on-failure --timeout 300 -j"$(nproc)"
