#!/usr/bin/env bash
# serve-step-time.sh — what a single stream's decode step costs in tern serve
# beyond the forward call: the wall time between consecutive forward calls
# (the engine's serial host work: scheduling, sampling, events), read from
# /metrics (engine_host_seconds_total, engine_steps_total) around one
# streamed request driven by `tern loadgen`, with the request's TPOT and
# `tern bench`'s tg at the same depth (the prompt's length) run right after. The runs alternate between the HTTP loop thread under
# SCHED_BATCH (tern serve's default, "batch") and put back to SCHED_OTHER
# with chrt ("other"), in alternating order, so background load hits both
# alike.
#
# Usage: bench/serve-step-time.sh MODEL.gguf
#   env: TERN (build/tern), THREADS (2), PROMPT_LEN (64), OUTPUT_LEN (64), REPS (3),
#        NO_BENCH (unset; 1: skip the tern bench runs, faster pairs)
set -euo pipefail
MODEL=${1:?usage: $0 MODEL.gguf}
TERN=${TERN:-build/tern}
T=${THREADS:-2}
PL=${PROMPT_LEN:-64}
OL=${OUTPUT_LEN:-64}
REPS=${REPS:-3}
CTX=$((PL + OL + 16))
PORT=$((18000 + RANDOM % 1000))
"$TERN" serve -m "$MODEL" --port "$PORT" -t "$T" -c "$CTX" -np 16 --kv-size $((CTX * 16)) 2>/dev/null &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
    sleep 0.5
done
m() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v n="tern:$1" 'index($0, n "{") == 1 {print $2}'; }
"$TERN" loadgen --url "http://127.0.0.1:$PORT" --concurrency 1 --num 1 --prompt-len 8 --output-len 4 -o json >/dev/null
echo "| run | loop thread | host ms per step | TPOT ms | tern bench tg${OL} @ d${PL} ms/token | TPOT / bench |"
echo "|---|---|---|---|---|---|"
for i in $(seq "$REPS"); do
    order="batch other"
    ((i % 2)) || order="other batch"
    for pol in $order; do
        if [[ $pol == batch ]]; then chrt -b -p 0 "$PID"; else chrt -o -p 0 "$PID"; fi
        h0=$(m engine_host_seconds_total); s0=$(m engine_steps_total)
        tpot=$("$TERN" loadgen --url "http://127.0.0.1:$PORT" --concurrency 1 --num 1 --prompt-len "$PL" \
            --output-len "$OL" -o json | jq '.tpot_ms.mean')
        h1=$(m engine_host_seconds_total); s1=$(m engine_steps_total)
        tg=nan
        [[ -n ${NO_BENCH:-} ]] ||
            tg=$("$TERN" bench -m "$MODEL" -p 0 -n "$OL" -d "$PL" -r 1 -t "$T" -o json 2>/dev/null | jq '1000 / .[0].avg_ts')
        # OL steps (the prompt's, then OL - 1 decode steps), OL - 1 gaps between them (the gap
        # before the prompt's step was idle and is not counted)
        awk -v i="$i" -v p="$pol" -v h0="$h0" -v h1="$h1" -v s0="$s0" -v s1="$s1" -v tpot="$tpot" -v tg="$tg" \
            'BEGIN { h = (h1 - h0) / (s1 - s0 - 1) * 1e3
                     printf "| %d | %s | %.3f | %.2f | %.2f | %.3f |\n", i, p, h, tpot, tg, tpot / tg }'
    done
done
