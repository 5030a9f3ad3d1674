#!/usr/bin/env bash
# serve-vs-llama-server.sh — tern serve against llama-server on the same
# GGUF, measured by `tern loadgen` (streaming completions, token-id prompts
# of exactly --prompt-len tokens, ignore_eos) at several concurrencies. Both
# servers run at once on 127.0.0.1 with the same thread count and slots; the
# runs alternate (tern, llama, tern, llama, ...) so background load hits
# both alike. Prints one markdown row per (concurrency, server) and the
# tern/llama ratios.
#
# Usage: bench/serve-vs-llama-server.sh MODEL.gguf
#   env: TERN (build/tern), LLAMA_SERVER (llama-server binary), THREADS (2),
#        CONCS ("1 4 16"), PROMPT_LEN (64), OUTPUT_LEN (64), NUM_PER_C (2:
#        requests = NUM_PER_C x concurrency, at least 4), SLOTS (16)
set -euo pipefail
MODEL=${1:?usage: $0 MODEL.gguf}
TERN=${TERN:-build/tern}
LLAMA_SERVER=${LLAMA_SERVER:?set LLAMA_SERVER to a llama-server binary (built outside this repo)}
THREADS=${THREADS:-2}
CONCS=${CONCS:-1 4 16}
PL=${PROMPT_LEN:-64}
OL=${OUTPUT_LEN:-64}
NPC=${NUM_PER_C:-2}
SLOTS=${SLOTS:-16}
CTX=$((PL + OL + 16))
TP=$((18000 + RANDOM % 1000))
LP=$((TP + 1000))
OUT=$(mktemp -d)
cleanup() {
    [[ -n ${TPID:-} ]] && kill "$TPID" 2>/dev/null || true
    [[ -n ${LPID:-} ]] && kill "$LPID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$OUT"
}
trap cleanup EXIT

# the same KV capacity for both: SLOTS sequences of CTX tokens
"$TERN" serve -m "$MODEL" --port "$TP" -t "$THREADS" -c "$CTX" -np "$SLOTS" --kv-size $((CTX * SLOTS)) \
    2>"$OUT/tern.log" &
TPID=$!
# llama-server's -c is the total over its slots
"$LLAMA_SERVER" -m "$MODEL" --port "$LP" -t "$THREADS" -tb "$THREADS" -c $((CTX * SLOTS)) -np "$SLOTS" \
    >"$OUT/llama.log" 2>&1 &
LPID=$!
for port in "$TP" "$LP"; do
    for _ in $(seq 600); do
        curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
        sleep 0.5
    done
done

run() { # name port concurrency num
    "$TERN" loadgen --url "http://127.0.0.1:$2" --concurrency "$3" --num "$4" --prompt-len "$PL" \
        --output-len "$OL" -o json >"$OUT/$1-$3.json"
}
for port in "$TP" "$LP"; do # warm-up: page the weights in
    "$TERN" loadgen --url "http://127.0.0.1:$port" --concurrency 2 --num 2 --prompt-len 8 --output-len 4 \
        -o json >/dev/null
done
# the single-stream ceiling: tern bench's decode speed, taken between the runs below
bench_tg() {
    "$TERN" bench -m "$MODEL" -p 0 -n "$OL" -r 1 -t "$THREADS" -o json 2>/dev/null | jq -r '.[0].avg_ts*10|round/10'
}
TG_BEFORE=$(bench_tg)
echo "| concurrency | server | output tok/s | mean TTFT ms | p99 TTFT ms | mean TPOT ms | mean prompt tokens |"
echo "|---|---|---|---|---|---|---|"
for c in $CONCS; do
    n=$((c * NPC < 4 ? 4 : c * NPC))
    run tern "$TP" "$c" "$n"
    run llama "$LP" "$c" "$n"
    for s in tern llama; do
        jq -r --arg c "$c" --arg s "$s" '"| \($c) | \($s) | \(.output_token_throughput*10|round/10) | \(.ttft_ms.mean|round) | \(.ttft_ms.p99|round) | \(.tpot_ms.mean*10|round/10) | \(.mean_prompt_tokens) |"' \
            "$OUT/$s-$c.json"
    done
done
TG_AFTER=$(bench_tg)
echo
echo "tern bench tg$OL (-t $THREADS): $TG_BEFORE tok/s before the runs, $TG_AFTER after"
echo
echo "| concurrency | throughput tern/llama | mean TTFT tern/llama | p99 TTFT tern/llama | TPOT tern/llama |"
echo "|---|---|---|---|---|"
for c in $CONCS; do
    jq -rn --arg c "$c" --slurpfile t "$OUT/tern-$c.json" --slurpfile l "$OUT/llama-$c.json" \
        '"| \($c) | \($t[0].output_token_throughput/$l[0].output_token_throughput*100|round/100) | \($t[0].ttft_ms.mean/$l[0].ttft_ms.mean*100|round/100) | \($t[0].ttft_ms.p99/$l[0].ttft_ms.p99*100|round/100) | \($t[0].tpot_ms.mean/$l[0].tpot_ms.mean*100|round/100) |"'
done
