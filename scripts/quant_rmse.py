#!/usr/bin/env python3
"""quant_rmse — weight error of quantized GGUF files against their source,
measured with the PyPI gguf package's dequantizers (an implementation tern
did not write).

For each quantized file: per tensor type, the RMSE and relative RMSE
(sqrt(sum (xq - x)^2 / sum x^2)) over the tensors of that type that were
converted, and the total. Tensors are matched by name; tensors whose type
equals the source's (copied) are skipped. Used for the tables of
docs/quantization.md (tern's file next to llama-quantize's).

Usage: quant_rmse.py SOURCE.gguf QUANT.gguf [QUANT2.gguf ...] [--json]
"""

import argparse
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def tensors(path):
    r = GGUFReader(path)
    return {t.name: t for t in r.tensors}


def as_f64(t):
    return dequantize(t.data, t.tensor_type).astype(np.float64).reshape(-1)


def measure(src, path):
    q = tensors(path)
    by_type = {}
    for name, tq in q.items():
        ts = src.get(name)
        if ts is None or tq.tensor_type == ts.tensor_type:
            continue
        x, y = as_f64(ts), as_f64(tq)
        if x.size != y.size:
            raise SystemExit(f"{path}: {name}: {y.size} elements, source has {x.size}")
        d = by_type.setdefault(tq.tensor_type.name, [0.0, 0.0, 0])
        d[0] += float(((y - x) ** 2).sum())
        d[1] += float((x ** 2).sum())
        d[2] += x.size
    tot = [sum(v[i] for v in by_type.values()) for i in range(3)]
    by_type["TOTAL"] = tot
    return {k: {"rmse": (v[0] / max(v[2], 1)) ** 0.5, "rel": (v[0] / v[1]) ** 0.5 if v[1] else 0.0, "n": v[2]}
            for k, v in by_type.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source")
    ap.add_argument("quant", nargs="+")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    src = tensors(a.source)
    res = {p: measure(src, p) for p in a.quant}
    if a.json:
        json.dump(res, sys.stdout, indent=1)
        print()
        return
    for p, r in res.items():
        for k, v in r.items():
            print(f"{p}\t{k}\t{v['n']}\t{v['rmse']:.4e}\t{v['rel']:.4e}")


if __name__ == "__main__":
    main()
