#!/usr/bin/env bash
# test_bench_cli.sh — `tern bench`'s -d/--n-depth (tests start from a cache
# that already holds D tokens): the rows are named "pp16 @ d40" /
# "tg4 @ d40", the JSON carries n_depth, --seqs works with it, and bad
# values are usage errors (status 2) with a message.
#
# Usage: test_bench_cli.sh TERN_BINARY   (run from the repository root)
set -u
TERN=${1:?usage: $0 TERN_BINARY}
MODEL=../shared/data/models/stories260K/stories260K.v3.derived.gguf

tmp=$(mktemp -d /tmp/tern-bench-cli.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
ok() { echo "ok: $*"; }

"$TERN" bench -m "$MODEL" -p 16 -n 4 -d 40 -r 1 -t 2 -o json >"$tmp/out.json" 2>"$tmp/err"
st=$?
if [ $st -ne 0 ]; then bad "bench -d 40: status $st"; cat "$tmp/err"; fi
grep -q -E 'AddressSanitizer|LeakSanitizer|runtime error:' "$tmp/err" && { bad "sanitizer report"; cat "$tmp/err"; }
python3 - "$tmp/out.json" <<'PY' && ok "json rows pp16 @ d40, tg4 @ d40 with n_depth 40" || bad "json rows"
import json, sys
rows = json.load(open(sys.argv[1]))
assert [r["test"] for r in rows] == ["pp16 @ d40", "tg4 @ d40"], rows
assert all(r["n_depth"] == 40 and r["avg_ts"] > 0 for r in rows), rows
PY

"$TERN" bench -m "$MODEL" -p 0 -n 3 -d 20 --seqs 2 -r 1 -t 1 >"$tmp/out.md" 2>"$tmp/err"
st=$?
if [ $st -eq 0 ] && grep -q '| *tg3x2 @ d20 |' "$tmp/out.md"; then ok "markdown row tg3x2 @ d20"; else
    bad "--seqs 2 -d 20: status $st"; cat "$tmp/out.md" "$tmp/err"; fi

for v in -1 x 2000000; do
    "$TERN" bench -m "$MODEL" -d "$v" >/dev/null 2>"$tmp/err"
    st=$?
    if [ $st -eq 2 ] && grep -q -- "bad value '$v' for -d" "$tmp/err"; then ok "-d $v rejected"; else
        bad "-d $v: status $st"; cat "$tmp/err"; fi
done
exit $fail
