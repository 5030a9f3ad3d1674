#!/usr/bin/env bash
# test_ep_serve.sh — `mpirun -np 2 tern serve --ep 2` against one `tern
# serve` process, through the official openai client: the same greedy
# completions and chat answers (streamed and not, and four at once), after
# an idle pause longer than the exchange timeout (rank 0's heartbeat keeps
# rank 1 waiting, not failing); then SIGTERM to rank 0 shuts the job down
# cleanly (exit 0, rank 1 reports the steps it took part in).
#
# Networking (../shared/DESIGN.md): inside a fresh network namespace with
# only lo up (unshare -n, as root); both servers bind 127.0.0.1 there.
# Without root, unshare, mpirun or the openai package the test skips (77).
#
# Usage: test_ep_serve.sh TERN_BINARY   (run from the repository root)
set -u
TERN=$(cd "$(dirname "${1:?usage: $0 TERN_BINARY}")" && pwd)/$(basename "$1")
SUPP=$(pwd)/tests/dist/lsan_mpi.supp
VOCAB=$(pwd)/../shared/data/models/stories260K/stories260K.v3.derived.gguf

if [ "${TERN_IN_NETNS:-}" != 1 ]; then
    command -v mpirun >/dev/null || { echo "SKIP: no mpirun"; exit 77; }
    [ "$(id -u)" -eq 0 ] || { echo "SKIP: a network namespace needs root"; exit 77; }
    unshare -n true 2>/dev/null || { echo "SKIP: unshare -n is not permitted here"; exit 77; }
    python3 -c 'import openai, requests' 2>/dev/null || { echo "FAIL: python packages openai and requests are missing (bash scripts/install-deps.sh)"; exit 1; }
    exec unshare -n env TERN_IN_NETNS=1 bash "$0" "$@"
fi

ip link set lo up || { echo "FAIL: cannot bring lo up"; exit 1; }
export OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo UCX_NET_DEVICES=lo
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader,tcp
export ASAN_OPTIONS=${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}fast_unwind_on_malloc=0
export LSAN_OPTIONS=suppressions=$SUPP:print_suppressions=0

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
    serve -m "$model" --name m --port 18402 -t 1 -c 256 --ep 2 --ep-timeout 3 >"$tmp/ep.out" 2>"$tmp/ep.err" &
mpipid=$!
pids+=($mpipid)

python3 - <<'EOF' || fail=1
import concurrent.futures, sys, time
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
with concurrent.futures.ThreadPoolExecutor(4) as ex:
    got = list(ex.map(lambda p: comp(ep, p), prompts))
for p, r, g in zip(prompts, ref, got):
    check(f"concurrent completion {p!r}", r, g)
time.sleep(5)  # idle longer than --ep-timeout 3: the heartbeat keeps rank 1 waiting
check("completion after an idle pause", ref[2], comp(ep, prompts[2]))
if failed:
    sys.exit(1)
print(f"ok: --ep 2 serves the same greedy text as one process ({len(prompts)} completions, streamed, chat, 4 concurrent, after a 5 s idle pause)")
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
exit $fail
