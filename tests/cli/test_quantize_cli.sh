#!/usr/bin/env bash
# test_quantize_cli.sh — `tern quantize` and `tern perplexity` as commands:
# a Q8_0 file with --stats prints a TOTAL RMSE line and generates text; the
# perplexity summary and JSON line are on stdout; a run compared with its own
# saved logits shows 100 % top-1; bad arguments exit 2, bad inputs exit 1
# with a message, never a crash or a sanitizer report.
#
# Usage: test_quantize_cli.sh TERN_BINARY   (run from the repository root)
set -u
TERN=${1:?usage: $0 TERN_BINARY}
MODEL=../shared/data/models/stories260K/stories260K.v3.derived.gguf
TEXT=../shared/data/corpora/en/tinyshakespeare/input.txt

tmp=$(mktemp -d /tmp/tern-quant-cli.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
ok() { echo "ok: $*"; }
head -c 5000 "$TEXT" > "$tmp/text.txt"
printf 'Once upon a time' > "$tmp/short.txt"

# check NAME WANT_STATUS PATTERN_IN_STDOUT_OR_STDERR -- ARGS...
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

check "quantize q8_0 --stats" 0 '^TOTAL +q8_0 .*e-0[34]' -- quantize "$MODEL" "$tmp/q8.gguf" q8_0 --stats -t 1
grep -q 'ffn_down.*f16 .*fallback' "$tmp/err" || bad "fallback not reported on stderr"
check "quantized model runs" 0 'Once upon a time' -- run -m "$tmp/q8.gguf" -p "Once upon a time" -n 8 --temp 0
check "perplexity saves logits" 0 '^\{"ppl": [0-9]' -- perplexity -m "$MODEL" -f "$tmp/text.txt" -c 64 --chunks 2 --save-logits "$tmp/base.tnl" -t 1
grep -q '^Final estimate: PPL = ' "$tmp/out" || bad "no final estimate line"
check "self comparison" 0 'top-1 agreement +100.000 %' -- perplexity -m "$MODEL" -f "$tmp/text.txt" --kl-base "$tmp/base.tnl" -t 1
check "q8_0 vs base" 0 '"kl_mean": 0\.0' -- perplexity -m "$tmp/q8.gguf" -f "$tmp/text.txt" --kl-base "$tmp/base.tnl" -t 1

check "unknown type" 2 "unknown type 'q9'" -- quantize "$MODEL" "$tmp/x.gguf" q9
check "missing args" 2 'required' -- quantize "$MODEL"
check "missing input" 1 'nonexistent' -- quantize /nonexistent.gguf "$tmp/x.gguf" q8_0
check "perplexity usage" 2 'required' -- perplexity -m "$MODEL"
check "short text" 1 'fewer than one window' -- perplexity -m "$MODEL" -f "$tmp/short.txt" -c 64
check "base is not logits" 1 'not a TNLOGITS file' -- perplexity -m "$MODEL" -f "$tmp/text.txt" --kl-base "$MODEL"
exit $fail
