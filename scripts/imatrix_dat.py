#!/usr/bin/env python3
"""imatrix_dat — reads llama.cpp's legacy importance-matrix .dat file (the
format `tern imatrix` writes and llama-quantize reads; written here from the
format's description, independently of tern's C reader) and compares two.

  imatrix_dat.py show FILE            entries: name, ncall, width, mean
  imatrix_dat.py compare A.dat B.dat  per entry, max relative difference
                                      of the column importances (value/ncall)
"""

import struct
import sys

import numpy as np


def read(path):
    with open(path, "rb") as f:
        b = f.read()
    off = 0

    def i32():
        nonlocal off
        if off + 4 > len(b):
            raise ValueError(f"{path}: truncated at byte {off}")
        (v,) = struct.unpack_from("<i", b, off)
        off += 4
        return v

    n = i32()
    entries = {}
    for _ in range(n):
        ln = i32()
        name = b[off:off + ln].decode()
        off += ln
        ncall, nval = i32(), i32()
        vals = np.frombuffer(b, dtype="<f4", count=nval, offset=off).astype(np.float64)
        off += 4 * nval
        entries[name] = (ncall, vals / ncall if ncall > 0 else vals)
    trailer = None
    if off + 8 <= len(b):
        chunks, dl = i32(), i32()
        trailer = (chunks, b[off:off + dl].decode())
        off += dl
    if off != len(b):
        raise ValueError(f"{path}: {len(b) - off} bytes after the data")
    return entries, trailer


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "show":
        e, t = read(sys.argv[2])
        for k, (nc, v) in e.items():
            print(f"{k}\tncall {nc}\twidth {v.size}\tmean {v.mean():.6g}")
        print("trailer:", t)
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        a, _ = read(sys.argv[2])
        b, _ = read(sys.argv[3])
        worst = 0.0
        for k in sorted(set(a) & set(b)):
            va, vb = a[k][1], b[k][1]
            if va.size != vb.size:
                print(f"{k}: width {va.size} vs {vb.size}")
                worst = float("inf")
                continue
            r = float(np.max(np.abs(va - vb) / np.maximum(np.abs(vb), 1e-30)))
            worst = max(worst, r)
            print(f"{k}\tmax rel diff {r:.3e}")
        print(f"only in {sys.argv[2]}: {sorted(set(a) - set(b))}")
        print(f"only in {sys.argv[3]}: {sorted(set(b) - set(a))}")
        print(f"worst {worst:.3e}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
