#!/usr/bin/env bash
# compare-llamacpp.sh — tern bench and llama.cpp's llama-bench on the same
# GGUF files in one run, alternating, with the ratio per row.
#
#   LLAMA_BENCH=/path/to/llama-bench bench/compare-llamacpp.sh [options] MODEL.gguf...
#
#   -p N      prompt tokens of the pp test (default 512; 0: no pp)
#   -n N      generated tokens of the tg test (default 64; 0: no tg)
#   -r N      repetitions inside each tool's run (default 3)
#   -t N      threads (default 2)
#   -k N      rounds (default 2): each round runs every (model, test) once
#             with each tool, the order of the two tools flipping from round
#             to round, so a drift of the machine (a shared VM's bandwidth
#             moves within minutes) hits both alike
#   TERN=...  the tern binary (default build/tern)
#
# Each cell is the best of the rounds' mean tokens/s (best, not mean: on a
# shared machine interference only ever slows a run down). The ratio is
# tern / llama.cpp. Needs python3 for the JSON. Prints a Markdown table on
# stdout; the tools' progress goes to stderr. This script never builds
# llama.cpp: point LLAMA_BENCH at an existing build.
set -euo pipefail

p=512 n=64 r=3 t=2 k=2
while getopts "p:n:r:t:k:h" o; do
  case $o in
    p) p=$OPTARG ;; n) n=$OPTARG ;; r) r=$OPTARG ;; t) t=$OPTARG ;; k) k=$OPTARG ;;
    *) sed -n '2,22p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "usage: LLAMA_BENCH=... $0 [-p N] [-n N] [-r N] [-t N] [-k N] MODEL.gguf..." >&2; exit 2; }
tern=${TERN:-build/tern}
lb=${LLAMA_BENCH:-}
[ -x "$tern" ] || { echo "$0: tern binary '$tern' not found (build first or set TERN)" >&2; exit 1; }
[ -n "$lb" ] && [ -x "$lb" ] || { echo "$0: set LLAMA_BENCH to an llama-bench binary" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# run TOOL MODEL TEST(pp|tg) ROUND: one measurement into $out as JSON
run() {
  local tool=$1 model=$2 test=$3 round=$4 pp=0 tg=0 f
  [ "$test" = pp ] && pp=$p || tg=$n
  f="$out/$tool.$(basename "$model").$test.$round.json"
  if [ "$tool" = tern ]; then
    "$tern" bench -m "$model" -p "$pp" -n "$tg" -r "$r" -t "$t" -o json >"$f"
  else
    "$lb" -m "$model" -p "$pp" -n "$tg" -r "$r" -t "$t" -o json >"$f"
  fi
}

tests=()
[ "$p" -gt 0 ] && tests+=(pp)
[ "$n" -gt 0 ] && tests+=(tg)
for ((round = 0; round < k; round++)); do
  for model in "$@"; do
    for test in "${tests[@]}"; do
      if ((round % 2 == 0)); then order="tern llama"; else order="llama tern"; fi
      for tool in $order; do
        echo "round $((round + 1))/$k: $tool $(basename "$model") $test" >&2
        run "$tool" "$model" "$test" "$round"
      done
    done
  done
done

python3 - "$out" "$p" "$n" "$t" "$@" <<'EOF'
import json, os, sys
out, p, n, t, models = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
best = {}
for f in sorted(os.listdir(out)):
    tool, rest = f.split('.', 1)
    for row in json.load(open(os.path.join(out, f))):
        if tool == 'tern':
            test, model, desc = row['test'], os.path.basename(row['model_path']), row['model']
        else:
            test = 'pp%d' % row['n_prompt'] if row['n_prompt'] else 'tg%d' % row['n_gen']
            model, desc = os.path.basename(row['model_filename']), row['model_type']
        key = (model, test)
        cur = best.setdefault(key, {})
        cur[tool] = max(cur.get(tool, 0.0), row['avg_ts'])
        if tool == 'tern':
            cur['desc'] = desc
print('| model | test | threads | tern t/s | llama.cpp t/s | tern / llama.cpp |')
print('|---|---|--:|--:|--:|--:|')
for m in models:
    for test in ('pp' + p, 'tg' + n):
        c = best.get((os.path.basename(m), test))
        if not c or 'tern' not in c or 'llama' not in c:
            continue
        print('| %s | %s | %s | %.2f | %.2f | %.2f |' % (c.get('desc', m), test, t, c['tern'], c['llama'],
                                                         c['tern'] / c['llama']))
EOF
