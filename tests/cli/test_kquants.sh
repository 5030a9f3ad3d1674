#!/usr/bin/env bash
# test_kquants.sh — models in the formats of downloaded GGUF files load and
# generate the independent reference's text.
#
# scripts/make_kquant_model.py writes two small random-weight llama models
# (n_embd 256): the mix of llama.cpp's Q4_K_M (Q4_K, Q6_K for attn_v,
# ffn_down, output) and one with every other format (Q2_K, Q3_K, Q5_K, Q4_1,
# Q5_0, Q5_1, IQ4_NL, Q8_0). For each, `tern run -p "" -n 16 --temp 0` (greedy
# from BOS) must exit 0, print the same bytes with 1 and 2 threads and with
# the scalar and AVX2 kernels (TERN_ISA; a CPU without AVX2 runs scalar for
# both), and print exactly the detokenized greedy continuation
# of scripts/ref_forward.py (float64 on gguf-dequantized weights, with
# activations rounded to Q8_0 / Q8_K as tern rounds them, so the two differ
# only by summation order: the greedy choice could flip only on a near-tie
# of the top two logits, and the seeds used here have none).
#
# Usage: test_kquants.sh TERN_BINARY   (run from the repository root)
set -u
TERN=${1:?usage: $0 TERN_BINARY}
N=16
tmp=$(mktemp -d /tmp/tern-kquants.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0

for mix in q4_k_m others; do
    model=$tmp/$mix.gguf
    if ! python3 scripts/make_kquant_model.py "$model" --mix "$mix"; then
        echo "FAIL: make_kquant_model.py --mix $mix"
        exit 1
    fi
    if ! "$TERN" run -m "$model" -p "" -n $N --temp 0 -t 1 >"$tmp/out1" 2>"$tmp/err"; then
        echo "FAIL: $mix: tern run exited non-zero:"
        cat "$tmp/err"
        fail=1
        continue
    fi
    "$TERN" run -m "$model" -p "" -n $N --temp 0 -t 2 >"$tmp/out2" 2>/dev/null
    cmp -s "$tmp/out1" "$tmp/out2" || { echo "FAIL: $mix: 1 and 2 threads differ"; fail=1; }
    for isa in scalar avx2; do
        TERN_ISA=$isa "$TERN" run -m "$model" -p "" -n $N --temp 0 -t 2 >"$tmp/out_$isa" 2>/dev/null
        cmp -s "$tmp/out1" "$tmp/out_$isa" || { echo "FAIL: $mix: TERN_ISA=$isa differs"; fail=1; }
    done
    python3 - "$model" $N >"$tmp/ref" <<'PY' || { echo "FAIL: $mix: reference"; fail=1; }
import sys
sys.path.insert(0, "scripts")
import ref_forward as rf
from gguf import GGUFReader
m = rf.load(sys.argv[1])
m.act_q8 = True
toks = rf.greedy(m, [1], int(sys.argv[2]))[1:]
pieces = GGUFReader(sys.argv[1]).fields["tokenizer.ggml.tokens"].contents()
out = b""
for t in toks:
    p = pieces[t]
    if p.startswith("<0x") and p.endswith(">") and len(p) == 6:
        out += bytes([int(p[3:5], 16)])
    else:
        out += p.replace("\u2581", " ").encode()
sys.stdout.buffer.write(out)
PY
    if ! cmp -s "$tmp/out1" "$tmp/ref"; then
        echo "FAIL: $mix: tern's greedy text differs from the reference"
        od -c "$tmp/out1" | head -5
        od -c "$tmp/ref" | head -5
        fail=1
    fi
done
[ $fail -eq 0 ] && echo "ok: Q4_K_M mix and all other formats: tern = reference, threads and ISAs agree"
exit $fail
