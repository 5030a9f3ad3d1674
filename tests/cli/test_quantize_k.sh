#!/usr/bin/env bash
# test_quantize_k.sh — `tern quantize` to the K-quants and IQ4_NL, and
# `tern imatrix`, checked with the PyPI gguf package (an implementation tern
# did not write) on the F32 model of scripts/make_kquant_model.py (n_embd
# 256, 2 layers, heavy-tailed random weights):
#   - every mix gives each tensor the type llama-quantize (b4750-era build)
#     gives it on this model, recorded below, and llama.cpp's file_type;
#   - with --pure, each type's relative weight RMSE, measured by gguf's
#     dequantizers, is at most 1.02x llama-quantize's on the same tensors
#     (llama's figures measured by hand with scripts/quant_rmse.py,
#     docs/quantization.md);
#   - --output-type sets the output tensor; the Q4_K_M file generates the
#     text of scripts/ref_forward.py (float64 on gguf-dequantized weights);
#   - tern imatrix writes llama.cpp's legacy .dat (read by the independent
#     reader scripts/imatrix_dat.py: every product of both layers plus
#     output, right widths and ncall, attn_q = attn_k = attn_v), and
#     quantizing with it lowers the importance-weighted error
#     Σ imp_c (ŵ − w)² of every K tensor that has an entry.
#
# Usage: test_quantize_k.sh TERN_BINARY   (run from the repository root)
set -u
TERN=${1:?usage: $0 TERN_BINARY}
TEXT=../shared/data/corpora/en/tinyshakespeare/input.txt
tmp=$(mktemp -d /tmp/tern-quant-k.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }

python3 scripts/make_kquant_model.py "$tmp/f32.gguf" --mix f32 || { echo "FAIL: make_kquant_model.py"; exit 1; }
head -c 60000 "$TEXT" > "$tmp/cal.txt"

MIXES="Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K IQ4_NL"
for mix in $MIXES; do
    "$TERN" quantize "$tmp/f32.gguf" "$tmp/$mix.gguf" "$mix" -t 2 >/dev/null 2>"$tmp/err" ||
        { bad "quantize $mix"; cat "$tmp/err"; }
done
for t in Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_NL; do
    "$TERN" quantize "$tmp/f32.gguf" "$tmp/pure-$t.gguf" "$t" --pure -t 2 >/dev/null 2>"$tmp/err" ||
        { bad "quantize --pure $t"; cat "$tmp/err"; }
done
"$TERN" quantize "$tmp/f32.gguf" "$tmp/ot.gguf" Q4_K_S --output-type q8_0 -t 1 >/dev/null 2>&1 || bad "--output-type"

python3 - "$tmp" <<'PY' || fail=1
import sys
sys.path.insert(0, "scripts")
from gguf import GGUFReader
import quant_rmse

tmp = sys.argv[1]
bad = 0
# llama-quantize's choice on this model (2 layers, GQA 2): tensor -> type, per mix
def mix(base, out="Q6_K", **over):
    names = ["token_embd"] + [f"blk.{i}.{k}" for i in range(2) for k in
             ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")]
    d = {n: base for n in names}
    d["output"] = out
    for k, v in over.items():
        for i, t in enumerate(v):
            d[f"blk.{i}.{k}"] = t
    return d
WANT = {
    "Q2_K": (10, mix("Q2_K", attn_v=["Q3_K"] * 2, ffn_down=["Q3_K"] * 2, attn_output=["Q3_K"] * 2)),
    "Q3_K_S": (11, mix("Q3_K")),
    "Q3_K_M": (12, mix("Q3_K", attn_v=["Q5_K"] * 2, ffn_down=["Q4_K"] * 2, attn_output=["Q4_K"] * 2)),
    "Q3_K_L": (13, mix("Q3_K", attn_v=["Q5_K"] * 2, ffn_down=["Q5_K"] * 2, attn_output=["Q5_K"] * 2)),
    "Q4_K_S": (14, mix("Q4_K", attn_v=["Q5_K"] * 2)),
    "Q4_K_M": (15, mix("Q4_K", attn_v=["Q4_K", "Q6_K"], ffn_down=["Q4_K", "Q6_K"])),
    "Q5_K_S": (16, mix("Q5_K")),
    "Q5_K_M": (17, mix("Q5_K", attn_v=["Q5_K", "Q6_K"], ffn_down=["Q5_K", "Q6_K"])),
    "Q6_K": (18, mix("Q6_K")),
    "IQ4_NL": (25, mix("IQ4_NL")),
}
for m, (ft, want) in WANT.items():
    r = GGUFReader(f"{tmp}/{m}.gguf")
    got = {t.name[:-7]: t.tensor_type.name for t in r.tensors if "norm" not in t.name}
    if got != want:
        print(f"FAIL: {m}: types differ from llama-quantize's:",
              {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v})
        bad = 1
    if r.fields["general.file_type"].contents() != ft:
        print(f"FAIL: {m}: file_type {r.fields['general.file_type'].contents()}, want {ft}")
        bad = 1
# llama-quantize --pure on this model, relative RMSE (gguf dequantizers)
LLAMA = {"Q2_K": 0.34391, "Q3_K": 0.18937, "Q4_K": 0.096346, "Q5_K": 0.048677, "Q6_K": 0.027954, "IQ4_NL": 0.11093}
src = quant_rmse.tensors(f"{tmp}/f32.gguf")
for t, ref in LLAMA.items():
    rel = quant_rmse.measure(src, f"{tmp}/pure-{t}.gguf")["TOTAL"]["rel"]
    ok = 0 < rel <= 1.02 * ref
    print(f"{'ok' if ok else 'FAIL'}: --pure {t}: relative RMSE {rel:.5f} (llama-quantize {ref:.5f})")
    bad |= not ok
ot = {t.name: t.tensor_type.name for t in GGUFReader(f"{tmp}/ot.gguf").tensors}
if ot["output.weight"] != "Q8_0" or ot["blk.0.attn_q.weight"] != "Q4_K":
    print("FAIL: --output-type q8_0:", ot["output.weight"], ot["blk.0.attn_q.weight"])
    bad = 1
sys.exit(bad)
PY

# the Q4_K_M file runs and says what the reference says
"$TERN" run -m "$tmp/Q4_K_M.gguf" -p "" -n 12 --temp 0 -t 2 >"$tmp/out" 2>"$tmp/err" || { bad "run Q4_K_M"; cat "$tmp/err"; }
python3 - "$tmp/Q4_K_M.gguf" 12 >"$tmp/ref" <<'PY' || bad "reference"
import sys
sys.path.insert(0, "scripts")
import ref_forward as rf
from gguf import GGUFReader
m = rf.load(sys.argv[1])
m.act_q8 = True
toks = rf.greedy(m, [1], int(sys.argv[2]))[1:]
pieces = GGUFReader(sys.argv[1]).fields["tokenizer.ggml.tokens"].contents()
out = b""
for t in toks:
    p = pieces[t]
    out += bytes([int(p[3:5], 16)]) if p.startswith("<0x") and len(p) == 6 else p.replace("\u2581", " ").encode()
sys.stdout.buffer.write(out)
PY
cmp -s "$tmp/out" "$tmp/ref" || { bad "Q4_K_M greedy text differs from the reference"; od -c "$tmp/out" | head -3; od -c "$tmp/ref" | head -3; }

# imatrix
"$TERN" imatrix -m "$tmp/f32.gguf" -f "$tmp/cal.txt" -o "$tmp/im.dat" -c 128 --chunks 4 -t 2 2>"$tmp/err" ||
    { bad "imatrix"; cat "$tmp/err"; }
"$TERN" quantize "$tmp/f32.gguf" "$tmp/im-Q4_K_M.gguf" Q4_K_M --imatrix "$tmp/im.dat" -t 2 >/dev/null 2>"$tmp/err" ||
    { bad "quantize --imatrix"; cat "$tmp/err"; }
"$TERN" quantize "$tmp/f32.gguf" "$tmp/im-Q2_K.gguf" Q2_K --imatrix "$tmp/im.dat" -t 2 >/dev/null 2>"$tmp/err" ||
    { bad "quantize --imatrix Q2_K"; cat "$tmp/err"; }
python3 - "$tmp" <<'PY' || fail=1
import sys
sys.path.insert(0, "scripts")
import numpy as np
import imatrix_dat
import quant_rmse

tmp = sys.argv[1]
bad = 0
ent, trailer = imatrix_dat.read(f"{tmp}/im.dat")
want = {f"blk.{i}.{k}.weight": w for i in range(2) for k, w in
        (("attn_q", 256), ("attn_k", 256), ("attn_v", 256), ("attn_output", 256),
         ("ffn_gate", 256), ("ffn_up", 256), ("ffn_down", 512))}
want["output.weight"] = 256
if {k: v[1].size for k, v in ent.items()} != want:
    print("FAIL: imatrix entries/widths:", {k: v[1].size for k, v in ent.items()})
    bad = 1
if any(v[0] != 4 for v in ent.values()) or trailer is None or trailer[0] != 4:
    print("FAIL: ncall / chunks:", {k: v[0] for k, v in ent.items()}, trailer)
    bad = 1
if not np.array_equal(ent["blk.1.attn_q.weight"][1], ent["blk.1.attn_v.weight"][1]):
    print("FAIL: attn_q and attn_v see the same input")
    bad = 1
if not all(np.all(np.isfinite(v[1])) and np.all(v[1] >= 0) and v[1].max() > 0 for v in ent.values()):
    print("FAIL: importances not finite / positive")
    bad = 1
src = quant_rmse.tensors(f"{tmp}/f32.gguf")
for mixname in ("Q4_K_M", "Q2_K"):
    plain = quant_rmse.tensors(f"{tmp}/{mixname}.gguf")
    weighted = quant_rmse.tensors(f"{tmp}/im-{mixname}.gguf")
    n_better = n = 0
    for name, (_, imp) in ent.items():
        if name not in plain or plain[name].tensor_type != weighted[name].tensor_type:
            continue
        x = quant_rmse.as_f64(src[name]).reshape(-1, imp.size)
        e0 = (((quant_rmse.as_f64(plain[name]).reshape(x.shape) - x) ** 2) * imp).sum()
        e1 = (((quant_rmse.as_f64(weighted[name]).reshape(x.shape) - x) ** 2) * imp).sum()
        n += 1
        n_better += e1 < e0
        if not e1 < 0.99 * e0:
            print(f"FAIL: {mixname} {name}: weighted error {e0:.4e} -> {e1:.4e} with the imatrix")
            bad = 1
    print(f"{'ok' if n_better == n and n >= 14 else 'FAIL'}: {mixname}: imatrix lowers the weighted error of {n_better}/{n} tensors")
    bad |= not (n_better == n and n >= 14)
sys.exit(bad)
PY
[ $fail -eq 0 ] && echo "ok: K-quant mixes, error bounds, output type, generation, imatrix"
exit $fail
