#!/usr/bin/env bash
# test_moe_stats.sh — MoE routing statistics of `tern serve` in /metrics and
# in the --moe-stats file (tests/serve/test_moe_stats.py), on a tiny random
# qwen3moe model made with `tern synth`.
#
# Usage: test_moe_stats.sh TERN_BINARY   (run from the repository root)
set -u
TERN=${1:?usage: $0 TERN_BINARY}
if ! python3 -c 'import pytest, requests' 2>/dev/null; then
    echo "FAIL: python packages pytest and requests are missing (bash scripts/install-deps.sh)"
    exit 1
fi
export TERN_BIN=$(realpath "$TERN")
exec python3 -m pytest -q -p no:cacheprovider "$(dirname "$0")/test_moe_stats.py"
