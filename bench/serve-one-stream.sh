#!/usr/bin/env bash
# serve-one-stream.sh — one stream of tern serve against tern bench, split
# by client. Per round, on one running server with the prompt cached:
# a non-streamed and a streamed curl completion (the server's forward call
# per step, from /metrics), a `tern loadgen` request (its TPOT, and the
# forward call per step), then `tern bench` at the same depth. Prints one
# row per round and the ratios to bench; rounds follow each other seconds
# apart so the VM's drift hits both sides alike.
#
# Usage: bench/serve-one-stream.sh MODEL.gguf
#   env: TERN (build/tern), THREADS (2), PROMPT_LEN (64 words), OUTPUT_LEN (128), ROUNDS (4)
set -euo pipefail
MODEL=${1:?usage: $0 MODEL.gguf}
TERN=${TERN:-build/tern}
T=${THREADS:-2}
PL=${PROMPT_LEN:-64}
OL=${OUTPUT_LEN:-128}
PORT=$((18000 + RANDOM % 1000))
"$TERN" serve -m "$MODEL" --port "$PORT" -t "$T" -c $((2 * (PL + OL + 16))) -np 2 --kv-size $((4 * (PL + OL + 16))) \
    2>/dev/null &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
    sleep 0.5
done
m() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v n="tern:$1" 'index($0, n "{") == 1 {print $2}'; }
# tern loadgen's prompt: PL times " hello"; curl sends the same text
P=$(printf ' hello%.0s' $(seq "$PL"))
complete() {
    curl -sN "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
        -d "{\"prompt\":\"$P\",\"max_tokens\":$1,\"ignore_eos\":true,\"temperature\":0,\"stream\":$2}" >/dev/null
}
# forward ms per step of the command "$@"
fwd() {
    local f0 s0 f1 s1
    f0=$(m engine_forward_seconds_total); s0=$(m engine_steps_total)
    "$@" >/dev/null
    f1=$(m engine_forward_seconds_total); s1=$(m engine_steps_total)
    awk -v a="$f0" -v b="$f1" -v c="$s0" -v d="$s1" 'BEGIN { printf "%.2f", (b - a) / (d - c) * 1e3 }'
}
complete 2 false # caches the prompt
LG=("$TERN" loadgen --url "http://127.0.0.1:$PORT" --concurrency 1 --num 1 --prompt-len "$PL" --output-len "$OL" -o json)
echo "| round | curl non-streamed fwd ms | curl streamed fwd ms | loadgen fwd ms | loadgen TPOT ms | bench ms/token | ratios to bench (curl, curl stream, loadgen TPOT) |"
echo "|---|---|---|---|---|---|---|"
for i in $(seq "${ROUNDS:-4}"); do
    a=$(fwd complete "$OL" false)
    b=$(fwd complete "$OL" true)
    f0=$(m engine_forward_seconds_total); s0=$(m engine_steps_total)
    tpot=$("${LG[@]}" | jq '.tpot_ms.mean')
    f1=$(m engine_forward_seconds_total); s1=$(m engine_steps_total)
    c=$(awk -v a="$f0" -v b="$f1" -v x="$s0" -v y="$s1" 'BEGIN { printf "%.2f", (b - a) / (y - x) * 1e3 }')
    tg=$("$TERN" bench -m "$MODEL" -p 0 -n "$OL" -d "$PL" -r 1 -t "$T" -o json 2>/dev/null | jq '1000 / .[0].avg_ts')
    awk -v i="$i" -v a="$a" -v b="$b" -v c="$c" -v p="$tpot" -v t="$tg" \
        'BEGIN { printf "| %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.3f, %.3f, %.3f |\n", i, a, b, c, p, t, a / t, b / t, p / t }'
done
