#!/usr/bin/env python3
"""make_quant_goldens — writes tests/kern/quant_goldens/*.bin, the blocks
tern's dequantizers and quantizers are checked against.

The independent implementation is the numpy code of the `gguf` package from
PyPI (gguf.quants). For each format:
  - dequantization: random block bytes whose f16 scales are overwritten with
    sane values (a range of magnitudes, both signs, zero and subnormal
    scales in the first blocks), and what gguf.quants.dequantize makes of
    them;
  - quantization, where the package has a quantizer (Q8_0, Q4_0, Q4_1, Q5_0,
    Q5_1): random floats (blocks of different scales, an all-zero block, a
    constant block) and the blocks gguf.quants.quantize makes of them.
tests/kern/test_quants.c compares tn_dequantize_row and tn_quantize_row with
these bit for bit. The output is deterministic (fixed seed): rerunning the
script rewrites identical files.

Run from the repository root:
    python3 scripts/make_quant_goldens.py

FILE FORMAT (version 1, little-endian), one file per format, <name>.bin

    offset  size              field
    0       8                 magic "TNQUANTG"
    8       4   u32           version (1)
    12      4   u32           GGML type code
    16      4   u32           nd: blocks in the dequantization section
    20      4   u32           nq: blocks in the quantization section (0: none)
    24      nd*type_size      block bytes
    ...     nd*block_size*4   f32 dequantized values
    ...     nq*block_size*4   f32 values to quantize
    ...     nq*type_size      their blocks
"""

import os
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES

OUT = "tests/kern/quant_goldens"

# type -> (file name, byte offsets of the f16 scale fields, blocks to dequantize)
FORMATS = {
    T.Q8_0: ("q8_0", [0], 8),
    T.Q4_0: ("q4_0", [0], 8),
    T.Q4_1: ("q4_1", [0, 2], 8),
    T.Q5_0: ("q5_0", [0], 8),
    T.Q5_1: ("q5_1", [0, 2], 8),
    T.IQ4_NL: ("iq4_nl", [0], 8),
    T.Q2_K: ("q2_k", [80, 82], 2),
    T.Q3_K: ("q3_k", [108], 2),
    T.Q4_K: ("q4_k", [0, 2], 2),
    T.Q5_K: ("q5_k", [0, 2], 2),
    T.Q6_K: ("q6_k", [208], 2),
}
HAS_QUANTIZER = {T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1}


def sane_scale(rng, block, field):
    """An f16 scale: mostly 1e-4..1e-1 of either sign; block 0 field 0 is
    zero, block 1 field 0 is subnormal, block 1 field 1 is negative."""
    if block == 0 and field == 0:
        return np.float16(0.0)
    if block == 1 and field == 0:
        return np.uint16(rng.integers(1, 1024)).view(np.float16)
    v = 10.0 ** rng.uniform(-4, -1) * (1 if rng.random() < 0.5 else -1)
    if block == 1 and field == 1:
        v = -abs(v)
    return np.float16(v)


def dequant_section(rng, qtype, offsets, nb):
    bs, ts = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(nb, ts), dtype=np.uint8)
    for b in range(nb):
        for f, off in enumerate(offsets):
            raw[b, off:off + 2] = np.frombuffer(sane_scale(rng, b, f).tobytes(), dtype=np.uint8)
    vals = quants.dequantize(raw.reshape(-1), qtype).astype(np.float32).reshape(-1)
    assert vals.size == nb * bs
    return raw.tobytes() + vals.tobytes()


def quant_section(rng, qtype, nb):
    bs, ts = GGML_QUANT_SIZES[qtype]
    x = np.empty((nb, bs), dtype=np.float32)
    for b in range(nb):
        x[b] = rng.standard_normal(bs) * 10.0 ** rng.uniform(-3, 2)
        if b % 3 == 1:
            x[b] += rng.uniform(-2, 2)  # an offset, for the formats with a minimum
    x[0] = 0.0
    x[1] = 0.625
    q = quants.quantize(x.reshape(1, -1), qtype).reshape(-1)
    assert q.size == nb * ts
    return x.tobytes() + q.tobytes()


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261129)
    for qtype, (name, offsets, nd) in FORMATS.items():
        nq = 8 if qtype in HAS_QUANTIZER else 0
        body = dequant_section(rng, qtype, offsets, nd)
        if nq:
            body += quant_section(rng, qtype, nq)
        path = os.path.join(OUT, name + ".bin")
        with open(path, "wb") as f:
            f.write(b"TNQUANTG" + struct.pack("<4I", 1, int(qtype), nd, nq) + body)
        print(f"{path}: {nd} blocks dequantized, {nq} quantized", file=sys.stderr)


if __name__ == "__main__":
    main()
