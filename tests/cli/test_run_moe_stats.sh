#!/usr/bin/env bash
# test_run_moe_stats.sh — `tern run --moe-stats FILE` on tiny-deepseek2
# (layer 0 dense, layer 1 MoE with 8 experts top-2): the JSON holds only
# layer 1, whose counts sum to top-2 x (1 + decode steps) (the last layer
# computes only the rows whose logits are wanted: the prompt's last one and
# one per decode step);
# the CSV carries the same numbers; a dense model is an error naming that.
#
# Usage: test_run_moe_stats.sh TERN_BINARY   (run from the repository root)
set -u
TERN=${1:?usage: $0 TERN_BINARY}
VOCAB=../shared/data/models/stories260K/stories260K.v3.derived.gguf
tmp=$(mktemp -d /tmp/tern-run-moe.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
"$TERN" synth --preset tiny-deepseek2 --dtype f32 --vocab "$VOCAB" -o "$tmp/m.gguf" -t 1 > /dev/null 2>&1 || exit 1
run() { "$TERN" run -m "$1" -p "Once upon a time" -n 6 -t 1 --seed 1 --moe-stats "$2" > /dev/null 2> "$tmp/err"; }
if ! run "$tmp/m.gguf" "$tmp/s.json" || ! run "$tmp/m.gguf" "$tmp/s.csv"; then
    echo "FAIL: tern run --moe-stats: $(cat "$tmp/err")"; exit 1
fi
steps=$(sed -n 's/.*(\([0-9]*\) decode steps).*/\1/p' "$tmp/err")
[ -n "$steps" ] || { echo "FAIL: no decode step count in: $(cat "$tmp/err")"; exit 1; }
python3 - "$tmp/s.json" "$tmp/s.csv" "$steps" <<'PY' || exit 1
import csv, json, sys
js = json.load(open(sys.argv[1]))
assert js["n_layer"] == 2 and js["n_expert"] == 8 and js["window_calls"] == 64, js
assert [l["layer"] for l in js["layers"]] == [1], js  # layer 0 is dense
l = js["layers"][0]
rows_computed = 1 + int(sys.argv[3])
assert sum(l["total"]) == 2 * rows_computed and l["window"] == l["total"], (l, rows_computed)
assert abs(l["imbalance"] - max(l["window"]) * 8 / (2 * rows_computed)) < 1e-5, l
rows = list(csv.DictReader(open(sys.argv[2])))
assert [int(r["layer"]) for r in rows] == [1] * 8, rows
assert [int(r["total_tokens"]) for r in rows] == l["total"], rows  # same seed, same run
print("ok: json and csv routing statistics")
PY
if "$TERN" run -m "$VOCAB" -p "Once" -n 2 -t 1 --moe-stats "$tmp/d.json" > /dev/null 2> "$tmp/err"; then
    echo "FAIL: a dense model with --moe-stats succeeded"; exit 1
fi
grep -q "no MoE layers" "$tmp/err" || { echo "FAIL: dense model error: $(cat "$tmp/err")"; exit 1; }
echo "ok: dense model refused"
