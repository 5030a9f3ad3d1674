#!/usr/bin/env bash
# ep-memory-speed.sh — expert parallelism on one machine: for EP = 1, 2, 4
# runs `tern bench` (one process, or `mpirun -np EP ... --ep EP`) on a MoE
# model and prints one markdown row per EP: resident memory per rank
# (largest rank; the weights are mmapped, so only what a rank touches is
# resident), the weight bytes a rank needs by construction (non-expert +
# its share of the routed experts, from the file's tensor table), prompt
# and decode tokens/s over all ranks, the decode step's time in MoE
# exchanges against the experts' compute, and how many sequences of CTX
# tokens fit a per-rank memory budget of BUDGET_GIB next to the larger of
# the measured resident memory and the weights a rank needs (a short bench
# does not touch every expert; a long-running server does), with the KV
# cache of MLA: kv_lora_rank + rope dims f32 per token and layer.
#
# Runs itself in a private network namespace (unshare -n, lo only), as the
# tests do. Timing on a shared 2-core machine is noisy, and EP 4 puts four
# ranks on two cores (oversubscribed): read the t/s as what this machine
# does, not what EP does on four machines.
#
# Usage: bench/ep-memory-speed.sh MODEL.gguf
#   env: TERN (build/tern), EPS ("1 2 4"), PP (32), TG (8), SEQS (4 per
#        rank), REPS (1), THREADS (2: split among the ranks), CTX (4096),
#        BUDGET_GIB (8)
set -euo pipefail
MODEL=${1:?usage: $0 MODEL.gguf}
TERN=$(realpath "${TERN:-build/tern}")
EPS=${EPS:-1 2 4}
PP=${PP:-32}
TG=${TG:-8}
SEQS=${SEQS:-4}
REPS=${REPS:-1}
THREADS=${THREADS:-2}
CTX=${CTX:-4096}
BUDGET_GIB=${BUDGET_GIB:-8}

. "$(dirname "$0")/../scripts/mpi-loopback.sh"
tn_mpi_loopback "$0" "$@"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# Static facts from the file: expert and other weight bytes, KV bytes per token.
"$TERN" info "$MODEL" >"$OUT/info" 2>&1
read -r EXP_B OTHER_B < <(awk '$1 ~ /^(token_embd|output|blk\.)/ && NF >= 5 {
    if ($1 ~ /_exps\./) e += $NF; else o += $NF } END { printf "%.0f %.0f\n", e, o }' "$OUT/info")
key() { awk -v k="$1" '$1 ~ ("\\." k "$") { print $3; exit }' "$OUT/info"; }
N_LAYER=$(key block_count)
KV_LORA=$(key attention.kv_lora_rank)
ROPE=$(key rope.dimension_count)
KV_TOK=$(( (${KV_LORA:-0} + ${ROPE:-0}) * 4 * N_LAYER ))
echo "model: $MODEL"
awk -v e="$EXP_B" -v o="$OTHER_B" -v k="$KV_TOK" -v c="$CTX" 'BEGIN {
    printf "routed experts %.2f GiB, everything else %.2f GiB; KV cache %d B/token (f32), %.1f MiB per %d-token sequence\n",
        e / 2^30, o / 2^30, k, k * c / 2^20, c }'
echo
echo "| EP | resident/rank (max) | weights/rank needed | pp$PP t/s | tg$TG x $SEQS/rank t/s | tg step: exchanges | tg step: experts | seqs of $CTX in ${BUDGET_GIB} GiB/rank |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
for ep in $EPS; do
    args=(bench -m "$MODEL" -p "$PP" -n "$TG" -r "$REPS" --seqs "$SEQS")
    if [ "$ep" -eq 1 ]; then
        "$TERN" "${args[@]}" -t "$THREADS" >"$OUT/out" 2>"$OUT/err"
    else
        t=$(( THREADS / ep )); [ "$t" -ge 1 ] || t=1
        timeout -k 5 3000 mpirun --allow-run-as-root --oversubscribe -np "$ep" \
            "$TERN" "${args[@]}" -t "$t" --ep "$ep" --ep-timeout 600 >"$OUT/out" 2>"$OUT/err"
    fi
    pp=$(awk -F'|' -v t="pp$PP" '$7 ~ t { gsub(/ /, "", $8); print $8 }' "$OUT/out")
    tg=$(awk -F'|' -v t="tg${TG}x$SEQS" '$7 ~ t { gsub(/ /, "", $8); print $8 }' "$OUT/out")
    rss=$(grep -o 'resident [0-9.]* MiB' "$OUT/err" | awk '{ if ($2 > m) m = $2 } END { printf "%.0f", m }')
    comm=$( (grep "tg${TG}x$SEQS: per step" "$OUT/err" || true) | sed -E 's/.*step ([0-9.]+) ms in MoE exchanges, ([0-9.]+) ms.*/\1 \2/' |
        awk '{ c += $1; x += $2; n++ } END { if (n) printf "%.1f ms %.1f ms", c / n, x / n; else print "- ms - ms" }')
    read -r cms _ xms _ <<<"$comm"
    awk -v ep="$ep" -v rss="$rss" -v e="$EXP_B" -v o="$OTHER_B" -v pp="$pp" -v tg="$tg" -v cms="$cms" -v xms="$xms" \
        -v k="$KV_TOK" -v c="$CTX" -v b="$BUDGET_GIB" 'BEGIN {
        need = o + e / ep; used = rss * 2^20 > need ? rss * 2^20 : need; free = b * 2^30 - used
        n = free > 0 ? int(free / (k * c)) : 0
        printf "| %d | %.0f MiB | %.0f MiB | %s | %s | %s ms | %s ms | %d |\n", ep, rss, need / 2^20, pp, tg, cms, xms, n }'
    cp "$OUT/err" "/tmp/ep-memory-speed.ep$ep.log"
done
echo
echo "(per-rank logs: /tmp/ep-memory-speed.epN.log; t/s: mean ± sd over REPS=$REPS; exchanges and experts: mean over ranks, per decode step)"
