#!/usr/bin/env bash
# test_ep_run.sh — `tern run --ep N` under `mpirun -np N`: the forward pass
# with expert parallelism (each rank holds 1/N of the routed experts; rank 0
# runs the sequence, the others take part in every MoE layer's exchange with
# empty steps) prints exactly the greedy text of one process, for MoE
# families with and without shared experts (qwen2moe: gated shared expert;
# deepseek2: MLA, a dense first layer, an ungated shared expert; qwen3moe
# and mixtral: none; deepseek3: sigmoid + group-limited routing), at -np 2
# (all five) and -np 4 (qwen2moe, deepseek2). The prompt
# is prefilled in chunks of 3, so a chunk's last layer has no rows left
# (an empty MoE exchange on rank 0 too). Then the faults: a rank that stops
# (SIGSTOP) makes rank 0 fail within --ep-timeout naming it, and the job
# ends non-zero; a rank killed mid-run ends the job non-zero; --ep N under
# a job of another size, and --ep on a dense model, are clear errors.
#
# Networking (../shared/DESIGN.md): inside a fresh network namespace with
# only lo up (unshare -n, as root), Open MPI and UCX restricted to lo.
# Without root, unshare or mpirun the test skips (exit 77).
#
# Usage: test_ep_run.sh TERN_BINARY   (run from the repository root)
set -u
TERN=$(cd "$(dirname "${1:?usage: $0 TERN_BINARY}")" && pwd)/$(basename "$1")
VOCAB=$(pwd)/../shared/data/models/stories260K/stories260K.v3.derived.gguf

[ -f "$VOCAB" ] || { echo "FAIL: $VOCAB missing"; exit 1; }
. "$(dirname "$0")/../../scripts/mpi-loopback.sh"
tn_mpi_loopback "$0" "$@"

tmp=$(mktemp -d /tmp/tern-ep.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
ok() { echo "ok: $*"; }

# mpi NP TIME_LIMIT CMD... : sets $st and $secs; stdout/stderr in $tmp/out, $tmp/err
mpi() {
    local np=$1 lim=$2; shift 2
    local t0=$(date +%s.%N)
    timeout -k 5 "$lim" mpirun --allow-run-as-root --oversubscribe -np "$np" "$@" >"$tmp/out" 2>"$tmp/err"
    st=$?
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}')
}

sanitizer_clean() { # NAME
    if grep -q -E 'AddressSanitizer|LeakSanitizer|runtime error:' "$tmp/err"; then
        bad "$1: sanitizer report:"; cat "$tmp/err"; return 1
    fi
    return 0
}

PROMPT="Once upon a time, there was a little girl who"
RUN=(run -p "$PROMPT" -n 20 --temp 0 -t 1 -b 3)

for preset in ${EP_PRESETS:-tiny-qwen2moe tiny-deepseek2 tiny-qwen3moe tiny-mixtral tiny-deepseek3}; do
    model=$tmp/$preset.gguf
    "$TERN" synth --preset "$preset" --dtype f32 --vocab "$VOCAB" -o "$model" -t 1 >/dev/null 2>&1 ||
        { bad "$preset: synth failed"; continue; }
    "$TERN" "${RUN[@]}" -m "$model" >"$tmp/ref" 2>"$tmp/ref.err" || { bad "$preset: one process failed"; cat "$tmp/ref.err"; continue; }
    [ "$(wc -c <"$tmp/ref")" -gt ${#PROMPT} ] || { bad "$preset: one process generated nothing"; continue; }
    nps="2 4"
    case $preset in tiny-qwen3moe|tiny-mixtral|tiny-deepseek3) nps=2;; esac # -np 4 twice is enough (CI time)
    for np in $nps; do
        mpi "$np" 120 "$TERN" "${RUN[@]}" -m "$model" --ep "$np" --ep-timeout 30
        n_rss=$(grep -c -E "rank [0-9]+/$np: resident [0-9.]+ MiB" "$tmp/err")
        if [ "$st" -eq 0 ] && cmp -s "$tmp/ref" "$tmp/out" && [ "$n_rss" -eq "$np" ]; then
            sanitizer_clean "$preset ep $np" && ok "$preset --ep $np: same greedy text as one process (${secs}s)"
        else
            bad "$preset --ep $np: status $st, $n_rss ranks reported"
            echo "--- one process:"; cat "$tmp/ref"; echo; echo "--- --ep $np:"; cat "$tmp/out"; echo; cat "$tmp/err"
        fi
    done
done

# The x16 layout (Q4_0/Q8_0 experts repacked at load; under --ep a rank
# repacks only the experts it owns): --ep 2 (and 4) prints one process's
# text, each rank reports its 1/N of the expert matrices repacked (none
# where the ISA has no x16 kernel), and the file's layout (TERN_REPACK=0)
# gives the same greedy text.
for spec in tiny-qwen2moe:q4_0 tiny-deepseek2:q8_0; do
    preset=${spec%%:*} dt=${spec##*:}
    model=$tmp/$preset-$dt.gguf
    "$TERN" synth --preset "$preset" --dtype "$dt" --vocab "$VOCAB" -o "$model" -t 1 >/dev/null 2>&1 ||
        { bad "$preset $dt: synth failed"; continue; }
    "$TERN" "${RUN[@]}" -m "$model" >"$tmp/ref" 2>"$tmp/ref.err" || { bad "$preset $dt: one process failed"; cat "$tmp/ref.err"; continue; }
    TERN_REPACK=0 "$TERN" "${RUN[@]}" -m "$model" >"$tmp/ref0" 2>"$tmp/ref0.err" || { bad "$preset $dt: TERN_REPACK=0 failed"; continue; }
    if cmp -s "$tmp/ref" "$tmp/ref0"; then
        ok "$preset $dt: x16 layout and the file's layout give the same greedy text"
    else
        bad "$preset $dt: x16 and TERN_REPACK=0 differ"; echo "--- x16:"; cat "$tmp/ref"; echo; echo "--- file layout:"; cat "$tmp/ref0"; echo
    fi
    nps=2
    [ "$preset" = tiny-qwen2moe ] && nps="2 4"
    for np in $nps; do
        mpi "$np" 120 "$TERN" "${RUN[@]}" -m "$model" --ep "$np" --ep-timeout 30
        # every rank repacks its 1/np share of the expert matrices (or, without an x16 kernel, none)
        shares=$(grep -o -E "rank [0-9]+/$np: [0-9]+ of [0-9]+ expert matrices repacked" "$tmp/err" |
            awk -v np="$np" '{split($2, r, "/"); n[r[1]] = $3; all = $5; sum += $3} END {
                ok = length(n) == np; for (k in n) if (sum > 0 && n[k] != all / np) ok = 0
                if (ok) { s = ""; for (k = 0; k < np; k++) s = s (k ? "+" : "") n[k]; print s " of " all } }')
        if [ "$st" -eq 0 ] && cmp -s "$tmp/ref" "$tmp/out" && [ -n "$shares" ]; then
            sanitizer_clean "$preset $dt ep $np" &&
                ok "$preset $dt --ep $np: same greedy text as one process, expert matrices repacked per rank: $shares (${secs}s)"
        else
            bad "$preset $dt --ep $np: status $st, repacked '$shares'"
            echo "--- one process:"; cat "$tmp/ref"; echo; echo "--- --ep $np:"; cat "$tmp/out"; echo; cat "$tmp/err"
        fi
    done
done

model=$tmp/tiny-deepseek2.gguf
[ -f "$model" ] || "$TERN" synth --preset tiny-deepseek2 --dtype f32 --vocab "$VOCAB" -o "$model" -t 1 >/dev/null 2>&1
LONG=(run -p "$PROMPT" -n 100000 --ctx 100000 --temp 0 -t 1 --ep 2 --ep-timeout 2 -m "$model")

# A rank that stops answering (SIGSTOP once it is stepping): rank 0's
# exchange times out after 2 s naming rank 1; tern exits 1 and the job ends
# non-zero. stopper.sh SIGNAL ...: rank 1 gets SIGNAL half a second after
# its first report; the stopped process is killed when mpirun ends the
# wrapper.
cat >"$tmp/stopper.sh" <<EOF
#!/bin/bash
sig=\$1; shift
[ "\$OMPI_COMM_WORLD_RANK" = 1 ] || exec "$TERN" "\$@"
"$TERN" "\$@" 2>"$tmp/rank1.err" &
pid=\$!
trap 'kill -KILL \$pid 2>/dev/null; exit 1' TERM INT HUP
for i in \$(seq 600); do grep -q 'rank 1/2: experts' "$tmp/rank1.err" && break; sleep 0.1; done
sleep 0.5
kill -\$sig \$pid
wait \$pid
EOF
mpi 2 60 bash "$tmp/stopper.sh" STOP "${LONG[@]}"
if [ "$st" -ne 0 ] && [ "$st" -ne 124 ] && awk "BEGIN{exit !($secs < 30)}" &&
    grep -q -E 'tern run: .*failed.*timed out after 2\.[0-9] s waiting for rank 1' "$tmp/err"; then
    ok "stopped rank: job status $st after ${secs}s: $(grep -m1 -o "failed.*waiting for rank 1" "$tmp/err")"
else
    bad "stopped rank: status $st after ${secs}s"; tail -20 "$tmp/err"
fi

# A rank killed mid-run: the job ends non-zero within the bound.
mpi 2 60 bash "$tmp/stopper.sh" KILL "${LONG[@]}"
if [ "$st" -ne 0 ] && [ "$st" -ne 124 ] && awk "BEGIN{exit !($secs < 30)}"; then
    ok "killed rank: job status $st after ${secs}s"
else
    bad "killed rank: status $st after ${secs}s"; tail -20 "$tmp/err"
fi

# --ep that does not match the job, and --ep on a dense model.
mpi 2 60 "$TERN" "${RUN[@]}" -m "$model" --ep 3
if [ "$st" -ne 0 ] && grep -q -- '--ep 3 but the job has 2 processes' "$tmp/err"; then
    ok "--ep 3 under -np 2: $(grep -m1 -o 'rank [0-9]: --ep 3.*' "$tmp/err")"
else
    bad "--ep 3 under -np 2: status $st"; cat "$tmp/err"
fi
"$TERN" synth --preset tiny-llama --dtype f32 --vocab "$VOCAB" -o "$tmp/dense.gguf" -t 1 >/dev/null 2>&1
mpi 2 60 "$TERN" "${RUN[@]}" -m "$tmp/dense.gguf" --ep 2
if [ "$st" -ne 0 ] && grep -q -- '--ep needs a mixture-of-experts model' "$tmp/err"; then
    ok "--ep on a dense model is refused"
else
    bad "--ep on a dense model: status $st"; cat "$tmp/err"
fi

exit $fail
