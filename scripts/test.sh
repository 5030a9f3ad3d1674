#!/usr/bin/env bash
# Builds and runs every test twice: optimized (build/) and under
# AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/). Warnings are
# errors. Tests read real models and vectors from ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

echo "== optimized build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DTERN_WERROR=ON >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j"$jobs")

echo "== sanitizer build (address, undefined)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTERN_SANITIZE=ON -DTERN_WERROR=ON >/dev/null
cmake --build build-asan -j"$jobs"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j"$jobs")
echo "== all tests passed"
