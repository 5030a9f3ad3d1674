#!/usr/bin/env bash
# ep-serve.sh — `tern serve --ep N` with data-parallel attention, on one
# machine: for EP = 1, 2, 4 starts `mpirun -np EP tern serve --ep EP` with
# the same KV cache per rank (--kv-size KV tokens), sends NUM streamed
# completions at once (tern loadgen: PLEN prompt tokens, OLEN generated,
# ignore_eos), samples /metrics every 0.25 s, and prints one markdown row
# per EP: the KV cache per rank, the most requests running at once (all
# ranks, and the largest rank), wall time and output tokens/s, resident
# memory of the largest rank, and the time the ranks' MoE layers spent in
# the exchanges (counts, dispatch, combine) against the experts' compute
# (sums over the run, largest rank), read from each rank's report at exit.
#
# EP 1 also runs under mpirun (--ep 1: one rank, exchanges with itself), so
# every row goes through the same code. Runs itself in a private network
# namespace (unshare -n, lo only), as the tests do. On a shared 2-core
# machine EP 4 puts four ranks on two cores (oversubscribed): the times say
# what this machine does, not what EP does on four machines.
#
# Usage: bench/ep-serve.sh MODEL.gguf
#   env: TERN (build/tern), EPS ("1 2 4"), KV (256 tokens per rank), CTX (128),
#        NUM (20), PLEN (32), OLEN (8), THREADS (2: split among the ranks),
#        PORT (18480), TIMEOUT (1800 s per run), EP_TIMEOUT (900 s: --ep-timeout)
set -euo pipefail
MODEL=$(realpath "${1:?usage: $0 MODEL.gguf}")
TERN=$(realpath "${TERN:-build/tern}")
EPS=${EPS:-1 2 4}
KV=${KV:-256}
CTX=${CTX:-128}
NUM=${NUM:-20}
PLEN=${PLEN:-32}
OLEN=${OLEN:-8}
THREADS=${THREADS:-2}
PORT=${PORT:-18480}
TIMEOUT=${TIMEOUT:-1800}

if [ "${TERN_IN_NETNS:-}" != 1 ]; then
    exec unshare -n env TERN_IN_NETNS=1 bash "$0" "$@"
fi
ip link set lo up
export OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo UCX_NET_DEVICES=lo
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader,tcp
OUT=$(mktemp -d)
mpipid=
cleanup() {
    [ -n "$mpipid" ] && kill -KILL "$mpipid" 2>/dev/null
    for f in "$OUT"/pid.*; do [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null; done
    [ -n "${KEEP:-}" ] && cp -r "$OUT" "$KEEP"; rm -rf "$OUT"
}
trap cleanup EXIT
cat >"$OUT/rank.sh" <<EOF
#!/bin/bash
echo \$\$ >"$OUT/pid.\$OMPI_COMM_WORLD_RANK"
exec "$TERN" "\$@"
EOF

echo "model: $MODEL; $NUM requests at once, prompt $PLEN + $OLEN generated tokens, KV $KV tokens per rank, -c $CTX"
echo
echo "| EP | KV/rank | running at once (all ranks) | running at once (largest rank) | wall s | output t/s | resident/rank (max) | MoE exchanges s | MoE experts s |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for ep in $EPS; do
    rm -f "$OUT"/pid.*
    t=$(( THREADS / ep )); [ "$t" -ge 1 ] || t=1
    timeout -k 5 "$TIMEOUT" mpirun --allow-run-as-root --oversubscribe -np "$ep" bash "$OUT/rank.sh" \
        serve -m "$MODEL" --name m --port "$PORT" -t "$t" -c "$CTX" --kv-size "$KV" -np 64 \
        --ep "$ep" --ep-timeout "${EP_TIMEOUT:-900}" >"$OUT/out" 2>"$OUT/err" &
    mpipid=$!
    until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; do
        kill -0 "$mpipid" 2>/dev/null || { echo "EP $ep: the server did not start:" >&2; tail -5 "$OUT/err" >&2; exit 1; }
        sleep 1
    done
    python3 - "$PORT" "$ep" "$TERN" "$NUM" "$PLEN" "$OLEN" >"$OUT/row" <<'EOF'
import json, re, subprocess, sys, threading, time, urllib.request
port, ep, tern, num, plen, olen = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
base = f"http://127.0.0.1:{port}"
def scrape():
    v = {}
    for line in urllib.request.urlopen(base + "/metrics", timeout=10).read().decode().splitlines():
        m = re.match(r'tern:dp_rank_requests_running\{.*rank="(\d+)"\} (\S+)$', line)
        if m:
            v[int(m.group(1))] = float(m.group(2))
        m = re.match(r'tern:num_requests_running\{model_name="m"\} (\S+)$', line)
        if m:
            v["all"] = float(m.group(1))
    return v
peak_all, peak_rank, stop = 0, 0, False
def sample():
    global peak_all, peak_rank
    while not stop:
        v = scrape()
        peak_all = max(peak_all, v.get("all", 0))
        peak_rank = max([peak_rank] + [x for k, x in v.items() if k != "all"] + ([v.get("all", 0)] if ep == 1 else []))
        time.sleep(0.25)
th = threading.Thread(target=sample)
th.start()
t0 = time.time()
r = subprocess.run([tern, "loadgen", "--url", base, "--concurrency", num, "--num", num, "--prompt-len", plen,
                    "--output-len", olen, "--model", "m", "-o", "json"], capture_output=True, text=True)
wall = time.time() - t0
stop = True
th.join()
j = json.loads(r.stdout or "{}")
print(f"{peak_all:.0f} {peak_rank:.0f} {wall:.1f} {j.get('output_token_throughput', 0):.2f} {j.get('ok', j.get('completed', '?'))}")
EOF
    kill -TERM "$(cat "$OUT/pid.0")"
    wait "$mpipid" || true
    mpipid=
    read -r peak_all peak_rank wall tps _ <"$OUT/row"
    rss=$(grep -o 'resident [0-9.]* MiB' "$OUT/err" | awk '{ if ($2 > m) m = $2 } END { printf "%.0f", m }')
    read -r xs cs < <(grep -o 'exchanges [0-9.]* s, experts [0-9.]* s' "$OUT/err" |
        awk '{ if ($2 > x) x = $2; if ($5 > c) c = $5 } END { printf "%.1f %.1f\n", x, c }')
    echo "| $ep | $KV | $peak_all | $peak_rank | $wall | $tps | $rss MiB | $xs | $cs |"
    grep -E 'rank [0-9]+: [0-9]+ steps with tokens' "$OUT/err" | sed 's/^/    /' >&2 || true
done
