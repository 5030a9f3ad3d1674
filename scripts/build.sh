#!/usr/bin/env bash
# Builds tern optimized into build/ (the `tern` binary is build/tern).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DTERN_WERROR=ON >/dev/null
cmake --build build -j"$(nproc)"
