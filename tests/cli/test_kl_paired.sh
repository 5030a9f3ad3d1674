#!/usr/bin/env bash
# test_kl_paired.sh — `tern perplexity --kl-out` and scripts/kl_paired.py:
# the per-position KL files of stories260K's Q8_0 and Q4_0 against the F32
# run hold one value per scored position, their means are the KL means
# perplexity prints; kl_paired.py's window means give the same means, Q4_0
# − Q8_0 is positive and many paired standard errors from 0 (Q4_0 is far
# coarser), a file against itself differs by exactly 0, and files of
# different runs are refused.
#
# Usage: test_kl_paired.sh TERN_BINARY   (run from the repository root)
set -u
TERN=${1:?usage: $0 TERN_BINARY}
MODEL=../shared/data/models/stories260K/stories260K.v3.derived.gguf
TEXT=../shared/data/corpora/en/tinyshakespeare/input.txt
PAIRED=scripts/kl_paired.py

tmp=$(mktemp -d /tmp/tern-kl-paired.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
ok() { echo "ok: $*"; }
head -c 20000 "$TEXT" > "$tmp/text.txt"

run() { "$TERN" "$@" > "$tmp/out" 2> "$tmp/err" || { bad "tern $*"; cat "$tmp/err"; exit 1; }; }
run perplexity -m "$MODEL" -f "$tmp/text.txt" -c 64 --chunks 8 --save-logits "$tmp/base.tnl" -t 1
for t in q8_0 q4_0; do
    run quantize "$MODEL" "$tmp/$t.gguf" $t -t 1
    run perplexity -m "$tmp/$t.gguf" -f "$tmp/text.txt" -c 64 --chunks 8 --kl-base "$tmp/base.tnl" --kl-out "$tmp/$t.kl" -t 1
    sed -n 's/.*"kl_mean": \([-0-9.e+]*\).*/\1/p' "$tmp/out" | tail -1 > "$tmp/$t.mean"
    n=$(wc -l < "$tmp/$t.kl")
    [ "$n" = $((8 * (64 - 1 - 32))) ] && ok "$t: $n positions" || bad "$t: $n positions, want $((8 * 31))"
done
if ! "$TERN" perplexity -m "$MODEL" -f "$tmp/text.txt" -c 64 --chunks 8 --kl-out "$tmp/x.kl" > /dev/null 2> "$tmp/err"; then
    grep -q 'base' "$tmp/err" && ok "--kl-out without --kl-base refused" || bad "no message: $(cat "$tmp/err")"
else
    bad "--kl-out without --kl-base accepted"
fi

python3 "$PAIRED" --per-window 31 "$tmp/q8_0.kl" "$tmp/q4_0.kl" > "$tmp/paired" || bad "kl_paired.py failed"
cat "$tmp/paired"
python3 - "$tmp" <<'PY' || fail=1
import re, sys
d = sys.argv[1]
line = open(f"{d}/paired").read()
nums = [float(x) for x in re.findall(r"[-+]?\d+\.\d+", line)]
ma, sa, mb, sb, md, sd, z = nums[:7]
m8, m4 = (float(open(f"{d}/{t}.mean").read()) for t in ("q8_0", "q4_0"))
errs = []
if abs(ma - m8) > 2e-6 + 1e-3 * m8 or abs(mb - m4) > 2e-6 + 1e-3 * m4:
    errs.append(f"window means {ma} {mb} vs perplexity's {m8} {m4}")
if not (md > 0 and abs(md - (mb - ma)) < 2e-6 and z > 3 and sd > 0):
    errs.append(f"difference {md} ± {sd} (z {z}) not a clear, paired Q4_0 > Q8_0")
print("\n".join(errs) if errs else "ok: paired figures agree with perplexity's")
sys.exit(1 if errs else 0)
PY
python3 "$PAIRED" --per-window 31 "$tmp/q4_0.kl" "$tmp/q4_0.kl" | grep -q -- '+0.000000 ± 0.000000' &&
    ok "self difference 0" || bad "self difference not 0"
head -n 31 "$tmp/q4_0.kl" > "$tmp/short.kl"
if python3 "$PAIRED" --per-window 31 "$tmp/q8_0.kl" "$tmp/short.kl" > /dev/null 2> "$tmp/err"; then
    bad "files of different lengths accepted"
else
    grep -q 'not the same run' "$tmp/err" && ok "different runs refused" || bad "message: $(cat "$tmp/err")"
fi
exit $fail
