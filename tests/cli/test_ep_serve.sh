#!/usr/bin/env bash
# test_ep_serve.sh — `mpirun -np 2 tern serve --ep 2` (data-parallel
# attention: each rank runs its own engine and KV cache, rank 0 spreads the
# requests) against one `tern serve` process, through the official openai
# client: the same greedy completions and chat answers (streamed and not,
# eight at once), after an idle pause longer than the exchange timeout
# (rank 0's heartbeat keeps rank 1 waiting, not failing); /metrics shows
# requests routed to and tokens generated on both ranks; a stream the
# client drops is cancelled on the rank that runs it; then SIGTERM to rank
# 0 shuts the job down cleanly (exit 0, rank 1 reports its steps). Two
# more jobs: SIGKILL and SIGSTOP of rank 1 while it serves a stream end the
# job with a non-zero status and a message naming rank 1, within seconds.
#
# Networking (../shared/DESIGN.md): inside a fresh network namespace with
# only lo up (unshare -n, as root); both servers bind 127.0.0.1 there.
# Without root, unshare, mpirun or the openai package the test skips (77).
#
# Usage: test_ep_serve.sh TERN_BINARY   (run from the repository root)
set -u
TERN=$(cd "$(dirname "${1:?usage: $0 TERN_BINARY}")" && pwd)/$(basename "$1")
VOCAB=$(pwd)/../shared/data/models/stories260K/stories260K.v3.derived.gguf

python3 -c 'import openai, requests' 2>/dev/null || { echo "FAIL: python packages openai and requests are missing (bash scripts/install-deps.sh)"; exit 1; }
. "$(dirname "$0")/../../scripts/mpi-loopback.sh"
tn_mpi_loopback "$0" "$@"

tmp=$(mktemp -d /tmp/tern-ep-serve.XXXXXX) || exit 1
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
    [ -f "$tmp/pid.0" ] && kill -KILL "$(cat "$tmp/pid.0")" 2>/dev/null
    [ -f "$tmp/pid.1" ] && kill -KILL "$(cat "$tmp/pid.1")" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
ok() { echo "ok: $*"; }

model=$tmp/tiny-qwen2moe.gguf
"$TERN" synth --preset tiny-qwen2moe --dtype f32 --vocab "$VOCAB" -o "$model" -t 1 >/dev/null 2>&1 || { bad "synth"; exit 1; }

"$TERN" serve -m "$model" --name m --port 18401 -t 1 -c 256 2>"$tmp/one.err" &
pids+=($!)
# Each rank records its pid, so that the test can signal rank 0 alone.
cat >"$tmp/rank.sh" <<EOF
#!/bin/bash
echo \$\$ >"$tmp/pid.\$OMPI_COMM_WORLD_RANK"
exec "$TERN" "\$@"
EOF
timeout -k 5 180 mpirun --allow-run-as-root --oversubscribe -np 2 bash "$tmp/rank.sh" \
    serve -m "$model" --name m --port 18402 -t 1 -c 256 --ep 2 --ep-timeout 2 >"$tmp/ep.out" 2>"$tmp/ep.err" &
mpipid=$!
pids+=($mpipid)

python3 - <<'EOF' || fail=1
import concurrent.futures, re, sys, time
import openai, requests

def up(port):
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    sys.exit(f"FAIL: server on port {port} did not come up")

up(18401); up(18402)
one = openai.OpenAI(base_url="http://127.0.0.1:18401/v1", api_key="none")
ep = openai.OpenAI(base_url="http://127.0.0.1:18402/v1", api_key="none")
prompts = ["Once upon a time", "The little dog", "She said that", "In the big house there was"]

def comp(c, p, stream=False):
    r = c.completions.create(model="m", prompt=p, max_tokens=24, temperature=0, stream=stream)
    return "".join(x.choices[0].text for x in r) if stream else r.choices[0].text

def chat(c, p):
    r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": p}], max_tokens=16, temperature=0)
    return r.choices[0].message.content

failed = False
def check(what, a, b):
    global failed
    if a != b or not a:
        print(f"FAIL: {what}: one process {a!r} vs --ep 2 {b!r}")
        failed = True

ref = [comp(one, p) for p in prompts]
for p, r in zip(prompts, ref):
    check(f"completion {p!r}", r, comp(ep, p))
check("streamed completion", ref[0], comp(ep, prompts[0], stream=True))
check("chat", chat(one, prompts[1]), chat(ep, prompts[1]))
# Eight at once, half streamed: they spread over both ranks' engines.
jobs = [(p, i % 2 == 1) for i, p in enumerate(prompts * 2)]
with concurrent.futures.ThreadPoolExecutor(8) as ex:
    got = list(ex.map(lambda j: comp(ep, j[0], stream=j[1]), jobs))
for (p, st), g in zip(jobs, got):
    check(f"concurrent completion {p!r} (stream={st})", ref[prompts.index(p)], g)
time.sleep(3)  # idle longer than --ep-timeout 2: the heartbeat keeps rank 1 waiting
check("completion after an idle pause", ref[2], comp(ep, prompts[2]))

def metrics():
    text = requests.get("http://127.0.0.1:18402/metrics", timeout=5).text
    v = {}
    for line in text.splitlines():
        m = re.match(r'tern:(dp_rank_\w+)\{.*rank="(\d+)"\} (\S+)$', line)
        if m:
            v[(m.group(1), int(m.group(2)))] = float(m.group(3))
        m = re.match(r'tern:(\w+)\{model_name="m"\} (\S+)$', line)
        if m:
            v[m.group(1)] = float(m.group(2))
    return v

v = metrics()
for r in (0, 1):
    routed, gen = v.get(("dp_rank_requests_routed_total", r), 0), v.get(("dp_rank_generation_tokens_total", r), 0)
    if routed < 3 or gen < 3 * 10 or v.get(("dp_rank_kv_cache_blocks_total", r), 0) <= 0:
        print(f"FAIL: rank {r}: {routed:g} requests routed, {gen:g} tokens generated (want >= 3 and >= 30)")
        failed = True
    else:
        print(f"ok: rank {r}: {routed:g} requests routed, {gen:g} tokens generated")
if v.get("generation_tokens_total") != sum(v.get(("dp_rank_generation_tokens_total", r), 0) for r in (0, 1)):
    print(f"FAIL: generation_tokens_total {v.get('generation_tokens_total')} is not the sum over the ranks")
    failed = True
if v.get(("dp_rank_engine_empty_steps_total", 1), 0) <= 0 and v.get(("dp_rank_engine_empty_steps_total", 0), 0) <= 0:
    print("FAIL: no rank ever ran an empty step (a rank without work must step along)")
    failed = True

# A dropped stream is cancelled where it runs: two long streams (one per
# rank: the least loaded rank takes the second), both dropped after a few
# tokens; every rank is idle again soon, long before 2 x 200 tokens.
before = v.get("generation_tokens_total", 0)
def drop(p):
    r = requests.post("http://127.0.0.1:18402/v1/completions", stream=True, timeout=30,
                      json={"model": "m", "prompt": p, "max_tokens": 200, "temperature": 0, "ignore_eos": True, "stream": True})
    n = 0
    for line in r.iter_lines():
        if line.startswith(b"data: {"):
            n += 1
            if n == 3:
                break
    r.close()
    return n
with concurrent.futures.ThreadPoolExecutor(2) as ex:
    ns = list(ex.map(drop, prompts[:2]))
deadline = time.time() + 10
while time.time() < deadline:
    v = metrics()
    if all(v.get(("dp_rank_requests_live", r), 1) == 0 and v.get(("dp_rank_requests_running", r), 1) == 0 for r in (0, 1)):
        break
    time.sleep(0.2)
extra = v.get("generation_tokens_total", 0) - before
live = [v.get(("dp_rank_requests_live", r)) for r in (0, 1)]
if ns != [3, 3] or live != [0, 0] or extra >= 2 * 200:
    print(f"FAIL: dropped streams: got {ns} chunks, live per rank {live}, {extra:g} tokens generated after")
    failed = True
else:
    print(f"ok: two dropped streams were cancelled on their ranks ({extra:g} tokens generated of 400 asked)")
if failed:
    sys.exit(1)
print(f"ok: --ep 2 serves the same greedy text as one process ({len(prompts)} completions, streamed, chat, 8 concurrent, after a 3 s idle pause)")
EOF

kill -TERM "${pids[0]}"; wait "${pids[0]}" 2>/dev/null

# SIGTERM to rank 0: a clean shutdown of the whole job.
kill -TERM "$(cat "$tmp/pid.0")"
wait "$mpipid"; st=$?
steps=$(grep -o -E 'rank 1: [0-9]+ steps' "$tmp/ep.err" | grep -o -E '[0-9]+ steps')
if [ "$st" -eq 0 ] && [ -n "$steps" ] && [ "${steps%% *}" -gt 0 ] &&
    ! grep -q -E 'AddressSanitizer|LeakSanitizer|runtime error:' "$tmp/ep.err"; then
    ok "SIGTERM to rank 0: job exit 0, rank 1 took part in $steps"
else
    bad "SIGTERM to rank 0: status $st, rank 1: ${steps:-no report}"; cat "$tmp/ep.err"
fi
[ "$fail" -eq 0 ] || { echo "--- ep server log:"; cat "$tmp/ep.err"; }

# Faults, each in a job of its own while rank 1 runs a stream: SIGKILL of
# rank 1 (mpirun ends the job) and SIGSTOP of rank 1 (rank 0's round times
# out after --ep-timeout 2 naming rank 1, and it exits 1). Either way the
# job ends by itself, non-zero, with a message that names rank 1.
fault() { # SIGNAL PORT PATTERN
    rm -f "$tmp/pid.0" "$tmp/pid.1"
    timeout -k 5 60 mpirun --allow-run-as-root --oversubscribe -np 2 bash "$tmp/rank.sh" \
        serve -m "$model" --name m --port "$2" -t 1 -c 256 --ep 2 --ep-timeout 2 >"$tmp/fault.out" 2>"$tmp/fault.err" &
    mpipid=$!
    pids+=($mpipid)
    python3 - "$2" <<'EOF' || fail=1
import sys, threading, time, requests
base = f"http://127.0.0.1:{sys.argv[1]}"
deadline = time.time() + 60
while time.time() < deadline:
    try:
        if requests.get(base + "/health", timeout=1).status_code == 200:
            break
    except requests.RequestException:
        pass
    time.sleep(0.1)
else:
    sys.exit("FAIL: the --ep 2 server for the fault did not come up")
# Two long streams, read in the background: the second lands on rank 1 (the least loaded).
def read(p):
    try:
        r = requests.post(base + "/v1/completions", stream=True, timeout=30,
                          json={"model": "m", "prompt": p, "max_tokens": 200, "temperature": 0, "ignore_eos": True, "stream": True})
        for _ in r.iter_lines():
            pass
    except requests.RequestException:
        pass
for p in ("Once upon a time", "The little dog"):
    threading.Thread(target=read, args=(p,), daemon=True).start()
time.sleep(0.5)
EOF
    for _ in $(seq 100); do [ -f "$tmp/pid.1" ] && break; sleep 0.1; done
    local t0; t0=$(date +%s)
    kill -"$1" "$(cat "$tmp/pid.1")"
    wait "$mpipid"; local st=$?
    local dt=$(( $(date +%s) - t0 ))
    kill -KILL "$(cat "$tmp/pid.1")" 2>/dev/null
    if [ "$st" -ne 0 ] && [ "$st" -ne 124 ] && [ "$dt" -le 20 ] && grep -q -E "$3" "$tmp/fault.err"; then
        ok "SIG$1 of rank 1: job exit $st after ${dt} s: $(grep -o -E "$3" "$tmp/fault.err" | head -1 | cut -c1-240)"
    else
        bad "SIG$1 of rank 1: status $st after ${dt} s"; cat "$tmp/fault.err"
    fi
}
fault KILL 18403 'process rank 1 .* exited on signal 9.*|rank 0: the expert-parallel job lost a rank: .*rank 1.*'
fault STOP 18404 'rank 0: the expert-parallel job lost a rank: .*timed out after 2\.[0-9] s waiting for rank 1'
exit $fail
