#!/usr/bin/env python3
"""make_hf_goldens — Hugging Face transformers' logits for the tiny checkpoints.

Run by hand (NOT in CI: it needs torch and transformers), from the repo root:

    $VENV/bin/python scripts/make_hf_goldens.py [--family NAME ...]   # VENV: torch + transformers

For each family of scripts/make_hf_tiny.py this makes the checkpoint in a
temporary directory, loads it with transformers' AutoModelForCausalLM in
float32 on the CPU (eager attention), feeds a fixed 8-token prompt, lets
model.generate() add 4 greedy tokens through transformers' KV cache, then
runs one forward pass over the 12 tokens and writes every position's
logits to tests/golden/hf/<family>.bin. The generated tokens must equal the
argmax of that forward pass at the positions before them (transformers'
cached decode and its full forward agree), or the script stops.

tests/convert/test_convert_hf.c remakes the checkpoint with make_hf_tiny.py,
converts it with tern's converter and compares tern's logits with these.

FILE FORMAT: tests/model/test_golden.c's TNGOLDEN version 1 (documented in
scripts/make_goldens.py) with kind 3 = a make_hf_tiny.py checkpoint:

    16   128  family name (make_hf_tiny.py --family)
    144  128  the transformers version that computed the logits
    272  16   "f32"
    288  8    make_hf_tiny.SEED
    296  8    total bytes of the checkpoint's *.safetensors files (sorted by name)
    304  8    FNV-1a 64 over those bytes, file after file
"""

import argparse
import os
import struct
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_hf_tiny  # noqa: E402

PROMPT = [31, 258, 101, 300, 77, 450, 12, 499]
N_DECODE = 4
KIND_HF = 3
OUT_DIR = os.path.join("tests", "golden", "hf")


def fnv1a64(data, h=0xcbf29ce484222325):
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def checkpoint_hash(d):
    size, h = 0, 0xcbf29ce484222325
    for fn in sorted(os.listdir(d)):
        if fn.endswith(".safetensors"):
            b = open(os.path.join(d, fn), "rb").read()
            size += len(b)
            h = fnv1a64(b, h)
    return size, h


def fixed(s, n):
    b = s.encode()
    assert len(b) < n, s
    return b + b"\0" * (n - len(b))


def golden(fam, tmp):
    import torch
    import transformers

    d = make_hf_tiny.make(fam, tmp)
    model, info = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager",
                                                                     output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        raise SystemExit(f"{fam}: transformers did not load the checkpoint exactly: {bad}")
    model.eval()
    with torch.no_grad():
        ids = torch.tensor([PROMPT])
        gen = model.generate(ids, max_new_tokens=N_DECODE, do_sample=False, use_cache=True,
                             pad_token_id=make_hf_tiny.N_VOCAB - 1, eos_token_id=None)
        seq = gen[0].tolist()
        logits = model(gen).logits[0].float().numpy()
    assert len(seq) == len(PROMPT) + N_DECODE, seq
    for t in range(len(PROMPT) - 1, len(seq) - 1):
        if int(np.argmax(logits[t])) != seq[t + 1]:
            raise SystemExit(f"{fam}: generate() chose {seq[t + 1]} at {t + 1}, the full forward's argmax is "
                             f"{int(np.argmax(logits[t]))}")
    size, h = checkpoint_hash(d)
    hdr = (b"TNGOLDEN" + struct.pack("<II", 1, KIND_HF) + fixed(fam, 128) +
           fixed("transformers " + transformers.__version__, 128) + fixed("f32", 16) +
           struct.pack("<QQQII", make_hf_tiny.SEED, size, h, len(seq), logits.shape[1]))
    assert len(hdr) == 320
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, fam + ".bin")
    with open(path, "wb") as f:
        f.write(hdr)
        f.write(np.asarray(seq, dtype="<i4").tobytes())
        f.write(logits.astype("<f4").tobytes())
    print(f"{path}: tokens {seq}, |logit| max {np.abs(logits).max():.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", action="append", choices=sorted(make_hf_tiny.FAMILIES))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for fam in a.family or sorted(make_hf_tiny.FAMILIES):
            golden(fam, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
