#!/usr/bin/env bash
# test_openai.sh — `tern serve` against the official openai Python client
# and raw HTTP (tests/serve/test_openai.py): starts live servers on free
# loopback ports with stories260K, kills them at the end.
#
# Usage: test_openai.sh TERN_BINARY   (run from the repository root)
set -u
TERN=${1:?usage: $0 TERN_BINARY}
if ! python3 -c 'import openai, pytest, requests' 2>/dev/null; then
    echo "FAIL: python packages openai, pytest and requests are missing (bash scripts/install-deps.sh)"
    exit 1
fi
export TERN_BIN=$(realpath "$TERN")
exec python3 -m pytest -q -p no:cacheprovider "$(dirname "$0")/test_openai.py"
