#!/usr/bin/env bash
# test_gptq_cli.sh — `tern imatrix --hessian` and `tern quantize --hessian`
# as commands: the hessian file is written next to the .dat; Q4_K_M with it
# marks the GPTQ tensors on the progress lines, runs, and its KL against the
# F32 model (same text, tern perplexity) is below the diagonal-imatrix
# file's; bad damping exits 2; a .dat or a model given as the hessian exits
# 1 naming the file; never a crash or a sanitizer report.
#
# Usage: test_gptq_cli.sh TERN_BINARY   (run from the repository root)
set -u
TERN=${1:?usage: $0 TERN_BINARY}
MODEL=../shared/data/models/stories260K/stories260K.v3.derived.gguf
TEXT=../shared/data/corpora/en/tinyshakespeare/input.txt

tmp=$(mktemp -d /tmp/tern-gptq-cli.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
ok() { echo "ok: $*"; }
head -c 20000 "$TEXT" > "$tmp/calib.txt"
tail -c 15000 "$TEXT" > "$tmp/held.txt"

check() {
    local name=$1 want=$2 pat=$3; shift 4
    "$TERN" "$@" >"$tmp/out" 2>"$tmp/err"
    local st=$?
    if [ "$st" -ge 128 ] || grep -q -E 'AddressSanitizer|LeakSanitizer|runtime error:' "$tmp/err"; then
        bad "$name: crash or sanitizer report (status $st)"; cat "$tmp/err"; return
    fi
    if [ "$st" != "$want" ]; then bad "$name: status $st, want $want"; cat "$tmp/err"; return; fi
    if ! grep -q -E -- "$pat" "$tmp/out" "$tmp/err"; then bad "$name: no '$pat' in the output"; cat "$tmp/out" "$tmp/err"; return; fi
    ok "$name"
}

check "imatrix --hessian" 0 '21 hessians' -- imatrix -m "$MODEL" -f "$tmp/calib.txt" -c 128 -o "$tmp/im.dat" --hessian "$tmp/h.gguf" -t 1
check "quantize --hessian" 0 'blk.0.attn_q.weight .* gptq' -- quantize "$MODEL" "$tmp/g.gguf" Q4_0 --imatrix "$tmp/im.dat" --hessian "$tmp/h.gguf" -t 1
grep -q 'GPTQ does not support f16' "$tmp/err" || bad "the F16 fallback of ffn_down not reported"
check "quantize --imatrix" 0 'Q4_0' -- quantize "$MODEL" "$tmp/i.gguf" Q4_0 --imatrix "$tmp/im.dat" -t 1
check "base logits" 0 '"ppl"' -- perplexity -m "$MODEL" -f "$tmp/held.txt" -c 128 --save-logits "$tmp/base.tnl" -t 1
check "gptq kl" 0 '"kl_mean"' -- perplexity -m "$tmp/g.gguf" -f "$tmp/held.txt" -c 128 --kl-base "$tmp/base.tnl" -t 1
kg=$(sed -n 's/.*"kl_mean": \([0-9.e+-]*\).*/\1/p' "$tmp/out")
check "imatrix kl" 0 '"kl_mean"' -- perplexity -m "$tmp/i.gguf" -f "$tmp/held.txt" -c 128 --kl-base "$tmp/base.tnl" -t 1
ki=$(sed -n 's/.*"kl_mean": \([0-9.e+-]*\).*/\1/p' "$tmp/out")
echo "KL on held-out text: GPTQ $kg, diagonal imatrix $ki"
awk -v g="$kg" -v i="$ki" 'BEGIN { exit !(g > 0 && g < 0.95 * i) }' || bad "GPTQ KL $kg not below 0.95 x the imatrix file's $ki"
check "gptq file runs" 0 'Once upon a time' -- run -m "$tmp/g.gguf" -p "Once upon a time" -n 8 --temp 0

check "bad damping" 2 "bad value 'x' for --gptq-damp" -- quantize "$MODEL" "$tmp/x.gguf" Q4_0 --hessian "$tmp/h.gguf" --gptq-damp x
check "dat as hessian" 1 "im.dat" -- quantize "$MODEL" "$tmp/x.gguf" Q4_0 --hessian "$tmp/im.dat"
check "model as hessian" 1 'not a hessian file' -- quantize "$MODEL" "$tmp/x.gguf" Q4_0 --hessian "$MODEL"
[ -e "$tmp/x.gguf" ] && bad "a failed quantize left its output behind"
exit $fail
