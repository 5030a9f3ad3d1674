#!/usr/bin/env bash
# quality_table.sh — tern's quantizations next to llama.cpp's of the same F32
# model, scored by the same `tern perplexity --kl-base` (so the files are
# compared, not the engines). Prints docs/quantization.md's table rows.
#
#   LLAMA_CPP=DIR scripts/quality_table.sh F32.gguf TEXT [CALIB]
#
# For every TYPE: `tern quantize F32 tn-TYPE.gguf TYPE` and
# `llama-quantize F32 ll-TYPE.gguf TYPE`, then for both files `tern
# perplexity -m FILE -f TEXT --ctx $CTX --kl-base base.tnl` (base.tnl from
# `--save-logits` on F32). With CALIB, `tern imatrix -m F32 -f CALIB` makes
# one importance matrix that both quantizers get for the IMATRIX_TYPES rows
# ("+ imatrix"). A type llama-quantize refuses (rows that do not fill its
# blocks) gets a row saying so.
#
# Columns: file bytes; bits per weight = 8 · (bytes of every tensor) /
# (elements of every tensor); weight relative RMSE √(Σ(x̂−x)²/Σx²) over the
# converted tensors (scripts/quant_rmse.py, PyPI gguf's dequantizers; "—"
# when $PYTHON cannot import gguf); PPL; KL(F32 ‖ file) mean, 99.9 % and
# max; top-1 agreement with F32.
#
# After the table, a paired comparison of the KL means (scripts/kl_paired.py
# on each file's per-position KL, `--kl-out`): for every row both quantizers
# made, llama-quantize's and tern's mean KL ± standard error over windows,
# and tern − llama ± its paired standard error (same windows), with z.
#
# Environment (defaults in brackets):
#   LLAMA_CPP      llama.cpp's bin dir (llama-quantize, llama-perplexity) [required]
#   TERN           tern binary [build/tern]
#   OUT            work dir for files and logs [${TMPDIR:-/tmp}/tern-quality]
#   CTX            window length [256]
#   CHUNKS         windows to score [all the text holds]
#   THREADS        threads for every tool [1]
#   TYPES          [F16 BF16 Q8_0 Q6_K Q5_K_M Q5_K_S Q5_1 Q5_0 Q4_K_M Q4_K_S
#                   Q4_1 IQ4_NL Q4_0 Q3_K_L Q3_K_M Q3_K_S Q2_K]
#   IMATRIX_TYPES  [the same without F16 BF16 Q8_0]
#   CALIB_BYTES    first bytes of CALIB used for the imatrix [300000]
#   LLAMA_PPL_TYPES  types whose llama.cpp file is also scored by
#                  llama-perplexity (its own PPL and KL, a cross-check) [Q4_K_M]
#   PYTHON         a python3 with the gguf package, for the RMSE column [python3]
#   GPTQ           1: the "+ imatrix" tern rows use GPTQ: `tern imatrix` also
#                  writes OUT/hessian.gguf (--hessian) from the same CALIB text
#                  and tern quantize gets --hessian next to --imatrix (files
#                  tn-TYPE-imat-gptq.gguf); llama-quantize keeps the .dat [0]
#   GPTQ_DAMP      --gptq-damp for those rows [tern's default, 0.01]
#   REUSE          1: score the tn-*/ll-* files already in OUT instead of
#                  quantizing again (the same model scored on another TEXT) [0]
set -euo pipefail

F32=${1:?usage: LLAMA_CPP=DIR $0 F32.gguf TEXT [CALIB]}
TEXT=${2:?usage: LLAMA_CPP=DIR $0 F32.gguf TEXT [CALIB]}
CALIB=${3:-}
: "${LLAMA_CPP:?set LLAMA_CPP to the llama.cpp bin dir (llama-quantize, llama-perplexity)}"
TERN=${TERN:-build/tern}
OUT=${OUT:-${TMPDIR:-/tmp}/tern-quality}
CTX=${CTX:-256}
CHUNKS=${CHUNKS:-}
THREADS=${THREADS:-1}
TYPES=${TYPES:-F16 BF16 Q8_0 Q6_K Q5_K_M Q5_K_S Q5_1 Q5_0 Q4_K_M Q4_K_S Q4_1 IQ4_NL Q4_0 Q3_K_L Q3_K_M Q3_K_S Q2_K}
IMATRIX_TYPES=${IMATRIX_TYPES-Q6_K Q5_K_M Q5_K_S Q5_1 Q5_0 Q4_K_M Q4_K_S Q4_1 IQ4_NL Q4_0 Q3_K_L Q3_K_M Q3_K_S Q2_K}
CALIB_BYTES=${CALIB_BYTES:-300000}
LLAMA_PPL_TYPES=${LLAMA_PPL_TYPES-Q4_K_M}
PYTHON=${PYTHON:-python3}
REUSE=${REUSE:-0}
GPTQ=${GPTQ:-0}
GPTQ_DAMP=${GPTQ_DAMP:-}
SCRIPTS=$(cd "$(dirname "$0")" && pwd)

for f in "$F32" "$TEXT" "$TERN" "$LLAMA_CPP/llama-quantize" "$LLAMA_CPP/llama-perplexity"; do
    [ -e "$f" ] || { echo "quality_table.sh: $f: not found" >&2; exit 1; }
done
mkdir -p "$OUT"
CH=()
[ -n "$CHUNKS" ] && CH=(--chunks "$CHUNKS")
HAVE_GGUF=0
"$PYTHON" -c 'import gguf' 2>/dev/null && HAVE_GGUF=1

# json FILE KEY: a number from tern perplexity's one-line JSON summary.
json() { sed -n 's/.*"'"$2"'": \([-0-9.e+]*\).*/\1/p' "$1" | tail -1; }

# bpw FILE: 8 · tensor bytes / tensor elements, from `tern info`'s total line.
bpw() {
    "$TERN" info "$1" | sed -n 's/^total: [0-9]* tensors, \([0-9]*\) parameters, \([0-9]*\) bytes$/\1 \2/p' |
        awk '{ printf "%.2f", 8 * $2 / $1 }'
}

rmse() {
    if [ "$HAVE_GGUF" = 1 ]; then
        "$PYTHON" "$SCRIPTS/quant_rmse.py" "$F32" "$1" --json |
            "$PYTHON" -c 'import json,sys; d=json.load(sys.stdin); print("%.2f %%" % (100*list(d.values())[0]["TOTAL"]["rel"]))'
    else
        echo "—"
    fi
}

# score NAME FILE: perplexity against the base logits, one table row.
score() {
    local label=$1 who=$2 file=$3 log=$OUT/$(basename "$3" .gguf).ppl
    "$TERN" perplexity -m "$file" -f "$TEXT" --ctx "$CTX" "${CH[@]}" -t "$THREADS" --kl-base "$OUT/base.tnl" \
        --kl-out "$log.kl" > "$log" 2> "$log.err"
    printf '| %s | %s | %s | %s | %s | %.3f | %.5f | %.4f | %.4f | %.2f %% |\n' "$label" "$who" \
        "$(stat -c %s "$file")" "$(bpw "$file")" "$(rmse "$file")" "$(json "$log" ppl)" "$(json "$log" kl_mean)" \
        "$(json "$log" kl_p999)" "$(json "$log" kl_max)" "$(awk -v t="$(json "$log" top1)" 'BEGIN{print 100*t}')"
}

# row TYPE SUFFIX [IMATRIX]: both quantizers, both scored.
row() {
    local t=$1 sfx=$2 im=${3:-} label=$1 tsfx=$2 hs=()
    [ -n "$im" ] && label="$t + imatrix"
    if [ -n "$im" ] && [ "$GPTQ" = 1 ]; then
        tsfx=$sfx-gptq
        label="$t + imatrix (tern: GPTQ)"
        hs=(--hessian "$OUT/hessian.gguf" ${GPTQ_DAMP:+--gptq-damp "$GPTQ_DAMP"})
    fi
    local tn=$OUT/tn-$t$tsfx.gguf ll=$OUT/ll-$t$sfx.gguf
    if [ "$REUSE" = 1 ] && [ -e "$tn" ]; then
        :
    elif [ -n "$im" ]; then
        "$TERN" quantize "$F32" "$tn" "$t" -t "$THREADS" --imatrix "$im" "${hs[@]}" > "$OUT/tn-$t$tsfx.log" 2>&1
    else
        "$TERN" quantize "$F32" "$tn" "$t" -t "$THREADS" > "$OUT/tn-$t$sfx.log" 2>&1
    fi
    score "$label" tern "$tn"
    if { [ "$REUSE" = 1 ] && [ -e "$ll" ]; } ||
        "$LLAMA_CPP/llama-quantize" ${im:+--imatrix "$im"} "$F32" "$ll" "$t" "$THREADS" > "$OUT/ll-$t$sfx.log" 2>&1; then
        score "$label" llama-quantize "$ll"
        "$PYTHON" "$SCRIPTS/kl_paired.py" --per-window $((CTX - 1 - CTX / 2)) --markdown "$label" \
            "$OUT/ll-$t$sfx.ppl.kl" "$OUT/tn-$t$tsfx.ppl.kl" >> "$OUT/paired.md"
    else
        rm -f "$ll" # llama-quantize leaves a partial file behind
        printf '| %s | llama-quantize | refused: %s | | | | | | | |\n' "$label" \
            "$(grep -m1 -i -E 'error|unsupported|failed' "$OUT/ll-$t$sfx.log" | tr -d '|' | cut -c1-80)"
    fi
}

echo "base: $TERN perplexity -m $F32 -f $TEXT --ctx $CTX ${CH[*]} --save-logits $OUT/base.tnl" >&2
"$TERN" perplexity -m "$F32" -f "$TEXT" --ctx "$CTX" "${CH[@]}" -t "$THREADS" --save-logits "$OUT/base.tnl" \
    > "$OUT/base.ppl" 2> "$OUT/base.ppl.err"
: > "$OUT/paired.md"
echo "| type | quantizer | file bytes | bits/weight | weight rel. RMSE | PPL | KL mean | KL 99.9% | KL max | top-1 |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '| F32 | — | %s | %s | — | %.3f ± %.3f | — | — | — | — |\n' "$(stat -c %s "$F32")" "$(bpw "$F32")" \
    "$(json "$OUT/base.ppl" ppl)" "$(json "$OUT/base.ppl" ppl_err)"
for t in $TYPES; do
    row "$t" ""
done
if [ -n "$CALIB" ] && [ -n "$IMATRIX_TYPES" ]; then
    hsave=()
    [ "$GPTQ" = 1 ] && hsave=(--hessian "$OUT/hessian.gguf")
    if [ "$REUSE" != 1 ] || [ ! -e "$OUT/imatrix.dat" ] || { [ "$GPTQ" = 1 ] && [ ! -e "$OUT/hessian.gguf" ]; }; then
        head -c "$CALIB_BYTES" "$CALIB" > "$OUT/calib.txt"
        echo "imatrix: $TERN imatrix -m $F32 -f <first $CALIB_BYTES bytes of $CALIB> --ctx $CTX -o $OUT/imatrix.dat ${hsave[*]}" >&2
        "$TERN" imatrix -m "$F32" -f "$OUT/calib.txt" --ctx "$CTX" -t "$THREADS" -o "$OUT/imatrix.dat" "${hsave[@]}" \
            > "$OUT/imatrix.log" 2>&1
    fi
    for t in $IMATRIX_TYPES; do
        row "$t" "-imat" "$OUT/imatrix.dat"
    done
fi

echo
echo "Paired KL, standard errors over the $(json "$OUT/base.ppl" n_chunks) windows:"
echo
echo "| type | llama-quantize KL | tern KL | tern − llama (paired) | z |"
echo "|---|---|---|---|---|"
cat "$OUT/paired.md"

# Cross-check: llama-perplexity's own PPL and KL on llama.cpp's file (its
# base from its own F32 run), next to tern perplexity's on the same file.
for t in $LLAMA_PPL_TYPES; do
    [ -e "$OUT/ll-$t.gguf" ] || continue
    lch=()
    [ -n "$CHUNKS" ] && lch=(--chunks "$CHUNKS")
    if [ ! -e "$OUT/ll-base.kld" ]; then
        "$LLAMA_CPP/llama-perplexity" -m "$F32" -f "$TEXT" -c "$CTX" "${lch[@]}" -t "$THREADS" \
            --kl-divergence-base "$OUT/ll-base.kld" > "$OUT/ll-base.lppl" 2>&1 || true
    fi
    "$LLAMA_CPP/llama-perplexity" -m "$OUT/ll-$t.gguf" -f "$TEXT" -c "$CTX" "${lch[@]}" -t "$THREADS" \
        --kl-divergence-base "$OUT/ll-base.kld" --kl-divergence > "$OUT/ll-$t.lppl" 2>&1 || true
    ppl_q=$(grep -m1 -E '^Mean PPL\(Q\)' "$OUT/ll-$t.lppl" | tr -s ' ' || true)
    kld=$(grep -m1 -E '^Mean +KLD' "$OUT/ll-$t.lppl" | tr -s ' ' || true)
    top=$(grep -m1 -E '^Same top p' "$OUT/ll-$t.lppl" | tr -s ' ' || true)
    base=$(grep -m1 'Final estimate' "$OUT/ll-base.lppl" || true)
    echo
    echo "llama-perplexity on ll-$t.gguf: $ppl_q, $kld, $top; on F32: $base"
done
