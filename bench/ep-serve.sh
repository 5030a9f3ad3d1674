#!/usr/bin/env bash
# ep-serve.sh — `tern serve --ep N` with data-parallel attention, on one
# machine: for EP = 1, 2, 4 starts `mpirun -np EP tern serve --ep EP` with
# the same KV cache per rank (--kv-size KV tokens), sends PER_RANK x EP
# streamed completions at once (tern loadgen: PLEN prompt tokens, OLEN
# generated, ignore_eos; NUM overrides the count), samples /metrics every
# 0.25 s, and prints one markdown row per EP: the KV cache per rank,
# requests sent and succeeded, the most running at once (all ranks, and the
# largest rank), wall time and output tokens/s, resident memory of the
# largest rank at the end of the load (VmRSS), and the time the ranks' MoE
# layers spent in the exchanges (counts, dispatch, combine) against the
# experts' compute (sums over the run, largest rank), from each rank's
# report at exit. Keep PLEN + OLEN within one KV block (16) and PLEN under
# 16, so that no two requests share a cached prefix block: then KV / 16
# requests fit a rank at once.
#
# EP 1 also runs under mpirun (--ep 1: one rank, exchanges with itself), so
# every row goes through the same code. Runs itself in a private network
# namespace (unshare -n, lo only), as the tests do. On a shared 2-core
# machine EP 4 puts four ranks on two cores (oversubscribed): the times say
# what this machine does, not what EP does on four machines.
#
# Usage: bench/ep-serve.sh MODEL.gguf
#   env: TERN (build/tern), EPS ("1 2 4"), KV (64 tokens per rank), CTX (32),
#        PER_RANK (4), NUM (PER_RANK x EP), PLEN (10), OLEN (4), THREADS (2:
#        split among the ranks), LOGS (a folder to keep each run's logs in),
#        PORT (18480), TIMEOUT (1800 s per run), EP_TIMEOUT (900 s: --ep-timeout)
set -euo pipefail
MODEL=$(realpath "${1:?usage: $0 MODEL.gguf}")
TERN=$(realpath "${TERN:-build/tern}")
EPS=${EPS:-1 2 4}
KV=${KV:-64}
CTX=${CTX:-32}
PER_RANK=${PER_RANK:-4}
PLEN=${PLEN:-10}
OLEN=${OLEN:-4}
THREADS=${THREADS:-2}
PORT=${PORT:-18480}
TIMEOUT=${TIMEOUT:-1800}

. "$(dirname "$0")/../scripts/mpi-loopback.sh"
tn_mpi_loopback "$0" "$@"
OUT=$(mktemp -d)
mpipid=
cleanup() {
    [ -n "$mpipid" ] && kill -KILL "$mpipid" 2>/dev/null
    for f in "$OUT"/pid.*; do [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null; done
    rm -rf "$OUT"
}
trap cleanup EXIT
cat >"$OUT/rank.sh" <<EOF
#!/bin/bash
echo \$\$ >"$OUT/pid.\$OMPI_COMM_WORLD_RANK"
exec "$TERN" "\$@"
EOF

echo "model: $MODEL; requests at once: prompt $PLEN + $OLEN generated tokens; KV $KV tokens per rank, -c $CTX"
echo
echo "| EP | KV/rank | requests (ok) | running at once (all ranks) | running at once (largest rank) | wall s | output t/s | resident/rank (max) | MoE exchanges s | MoE experts s |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for ep in $EPS; do
    num=${NUM:-$(( PER_RANK * ep ))}
    rm -f "$OUT"/pid.*
    t=$(( THREADS / ep )); [ "$t" -ge 1 ] || t=1
    timeout -k 5 "$TIMEOUT" mpirun --allow-run-as-root --oversubscribe -np "$ep" bash "$OUT/rank.sh" \
        serve -m "$MODEL" --name m --port "$PORT" -t "$t" -c "$CTX" --kv-size "$KV" -np 64 --http-timeout 3600 \
        --ep "$ep" --ep-timeout "${EP_TIMEOUT:-900}" >"$OUT/out" 2>"$OUT/err" &
    mpipid=$!
    until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; do
        kill -0 "$mpipid" 2>/dev/null || { echo "EP $ep: the server did not start:" >&2; tail -5 "$OUT/err" >&2; exit 1; }
        sleep 1
    done
    python3 - "$PORT" "$ep" "$TERN" "$num" "$PLEN" "$OLEN" "$OUT/loadgen.json" >"$OUT/row" <<'EOF'
import json, re, subprocess, sys, threading, time, urllib.request
port, ep, tern, num, plen, olen, keep = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
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
                    "--output-len", olen, "--model", "m", "--timeout", "3600", "-o", "json"], capture_output=True, text=True)
wall = time.time() - t0
stop = True
th.join()
open(keep, "w").write(r.stdout + r.stderr)
j = json.loads(r.stdout or "{}")
print(f"{peak_all:.0f} {peak_rank:.0f} {wall:.1f} {j.get('output_token_throughput', 0):.2f} {j.get('succeeded', 0)}")
EOF
    rss=$(for f in "$OUT"/pid.*; do awk '/^VmRSS:/ { print $2 }' "/proc/$(cat "$f")/status"; done |
        awk '{ if ($1 > m) m = $1 } END { printf "%.0f", m / 1024 }')
    kill -TERM "$(cat "$OUT/pid.0")"
    wait "$mpipid" || true
    mpipid=
    read -r peak_all peak_rank wall tps ok <"$OUT/row"
    read -r xs cs < <(grep -o 'exchanges [0-9.]* s, experts [0-9.]* s' "$OUT/err" |
        awk '{ if ($2 > x) x = $2; if ($5 > c) c = $5 } END { printf "%.1f %.1f\n", x, c }')
    echo "| $ep | $KV | $num ($ok) | $peak_all | $peak_rank | $wall | $tps | $rss MiB | $xs | $cs |"
    if [ -n "${LOGS:-}" ]; then
        mkdir -p "$LOGS"
        cp "$OUT/err" "$LOGS/ep$ep.err"
        cp "$OUT/loadgen.json" "$LOGS/ep$ep.loadgen"
    fi
done
