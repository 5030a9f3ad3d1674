#!/usr/bin/env python3
"""make_goldens — writes tests/golden/*.bin, the logits tern is checked against.

For each model below (stories260K from ../shared/data, and every tiny synth
preset in several weight dtypes) this runs the independent numpy reference
(scripts/ref_forward.py) on a fixed token sequence and stores every
position's logits. Synth models are made with `tern synth` twice, and the two
files must be byte-identical (the golden records the file's size and FNV-1a
hash; tests/model/test_golden.c regenerates the model through the synth
library and refuses to compare logits if the bytes differ).

Run from the repository root after building tern:
    python3 scripts/make_goldens.py --tern build/tern

To study tern's differences (docs/correctness.md), dump tern's logits with
    TERN_GOLDEN_DUMP=/tmp/dump build/test_golden
and compare them with the reference, in float and, for Q8_0/Q4_0 weights,
with llama.cpp's rounding of activations to Q8_0 emulated:
    python3 scripts/make_goldens.py --tern build/tern --compare-dump /tmp/dump

GOLDEN FILE FORMAT (version 1, little-endian)

    offset  size         field
    0       8            magic "TNGOLDEN"
    8       4   u32      version (1)
    12      4   u32      kind: 1 = a model file under ../shared/data, 2 = synth
    16      128 char[]   kind 1: the model path relative to the repo root
                         kind 2: the synth preset name          (NUL-padded)
    144     128 char[]   kind 2: the vocabulary path relative to the repo root
    272     16  char[]   kind 2: the synth dtype ("f32", "q4_0", ...)
    288     8   u64      kind 2: the synth seed
    296     8   u64      size in bytes of the model file
    304     8   u64      FNV-1a 64 of the model file's bytes
    312     4   u32      n_tokens
    316     4   u32      n_vocab
    320     4*n_tokens   i32 token ids (one sequence, positions 0..n_tokens-1)
    ...     4*n_tokens*n_vocab  f32 logits, row t = position t
"""

import argparse
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_forward  # noqa: E402

MAGIC = b"TNGOLDEN"
VERSION = 1
KIND_FILE, KIND_SYNTH = 1, 2

STORIES = "../shared/data/models/stories260K/stories260K.v3.derived.gguf"
GREEDY = "../shared/data/models/stories260K/expected-greedy-t0.tokens.derived.txt"
VOCAB = STORIES
SEED = 42
PRESETS = ["tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-llama-rope-linear", "tiny-llama3"]
DTYPES = ["f32", "f16", "q8_0", "q4_0"]
EXTRA = [("tiny-llama", "bf16")]     # bf16 once: it shares the matmul path of every arch
# Mixture of experts: f32 and f16 only (exact-weight paths). Q8_0/Q4_0 are left
# out: rounding activations to Q8_0 can flip a near-tie in the top-k routing, and one
# flipped expert moves a logit row by far more than any fixed tolerance.
MOE_PRESETS = ["tiny-mixtral", "tiny-qwen2moe", "tiny-qwen3moe", "tiny-deepseek2", "tiny-deepseek3"]
MOE_DTYPES = ["f32", "f16"]
N_TOKENS = 16


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def synth_tokens(n_vocab):
    """BOS then ids spread over the whole vocabulary (last id included)."""
    toks = [1]
    for i in range(1, N_TOKENS - 1):
        toks.append((i * 173 + i * i * 29 + 7) % n_vocab)
    toks.append(n_vocab - 1)
    return toks


def story_tokens():
    """BOS + the first 15 tokens of the model's own greedy story: real text."""
    with open(GREEDY) as f:
        return [int(t) for t in f.read().split()[:N_TOKENS]]


def pad(s, n):
    b = s.encode()
    if len(b) >= n:
        raise ValueError(f"{s!r} does not fit in {n} bytes")
    return b + b"\0" * (n - len(b))


def write_golden(path, kind, model, vocab, dtype, seed, blob, tokens, logits):
    n, nv = logits.shape
    hdr = MAGIC + struct.pack("<II", VERSION, kind) + pad(model, 128) + pad(vocab, 128) \
        + pad(dtype, 16) + struct.pack("<QQQII", seed, len(blob), fnv1a64(blob), n, nv)
    assert len(hdr) == 320
    with open(path, "wb") as f:
        f.write(hdr)
        f.write(np.asarray(tokens, dtype="<i4").tobytes())
        f.write(np.asarray(logits, dtype="<f4").tobytes())


def synth(tern, preset, dtype, out):
    cmd = [tern, "synth", "--preset", preset, "--dtype", dtype, "--vocab", VOCAB,
           "--seed", str(SEED), "-o", out]
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    with open(out, "rb") as f:
        return f.read()


def report(name, blob, logits):
    am = np.argmax(logits, axis=1)
    print(f"{name:36s} {len(blob):9d} B  fnv {fnv1a64(blob):016x}  max|logit| "
          f"{np.abs(logits).max():8.3f}  argmax {' '.join(str(int(a)) for a in am)}")


def read_golden(path):
    with open(path, "rb") as f:
        b = f.read()
    if b[:8] != MAGIC or struct.unpack("<I", b[8:12])[0] != VERSION:
        raise ValueError(f"{path}: not a version {VERSION} golden")
    g = {"kind": struct.unpack("<I", b[12:16])[0]}
    for key, off, n in (("model", 16, 128), ("vocab", 144, 128), ("dtype", 272, 16)):
        g[key] = b[off:off + n].split(b"\0")[0].decode()
    g["seed"], g["size"], g["fnv"], n, nv = struct.unpack("<QQQII", b[288:320])
    g["tokens"] = np.frombuffer(b[320:320 + 4 * n], dtype="<i4").tolist()
    g["logits"] = np.frombuffer(b[320 + 4 * n:], dtype="<f4").reshape(n, nv).astype(np.float64)
    return g


def row_rel(x, ref):
    """max over rows of max|x - ref| / max|ref|: the test's measure."""
    return float((np.abs(x - ref).max(axis=1) / np.abs(ref).max(axis=1)).max())


def compare_dump(args):
    import glob
    with tempfile.TemporaryDirectory(prefix="tern-golden-") as tmp:
        for gpath in sorted(glob.glob(os.path.join(args.out, "*.bin"))):
            name = os.path.basename(gpath)[:-4]
            if args.only not in name:
                continue
            g = read_golden(gpath)
            path = g["model"]
            if g["kind"] == KIND_SYNTH:
                path = os.path.join(tmp, "m.gguf")
                cmd = [args.tern, "synth", "--preset", g["model"], "--dtype", g["dtype"], "--vocab",
                       g["vocab"], "--seed", str(g["seed"]), "-o", path]
                subprocess.run(cmd, check=True, capture_output=True)
            m = ref_forward.load(path)
            ref = ref_forward.forward(m, g["tokens"])
            emul = None
            if m.quantized:
                m.act_q8 = True
                emul = ref_forward.forward(m, g["tokens"])
            for dump in sorted(glob.glob(os.path.join(args.compare_dump, name + ".*.f32"))):
                isa = dump[len(os.path.join(args.compare_dump, name)) + 1:-4]
                x = np.fromfile(dump, dtype="<f4").reshape(ref.shape).astype(np.float64)
                line = f"{name:30s} {isa:7s} vs float reference {row_rel(x, ref):.3e}"
                if emul is not None:
                    worst = np.abs(x - emul).max(axis=1) / np.abs(emul).max(axis=1)
                    line += (f"   vs activations-to-Q8_0 reference {worst.max():.3e}"
                             f" (median row {np.median(worst):.1e})")
                print(line)
    return 0


def main():
    ap = argparse.ArgumentParser(description="writes tests/golden/*.bin")
    ap.add_argument("--tern", default="build/tern", help="the tern binary (for `tern synth`)")
    ap.add_argument("--out", default="tests/golden")
    ap.add_argument("--only", default="", help="only goldens whose name contains this")
    ap.add_argument("--compare-dump", metavar="DIR",
                    help="compare tern's logits dumped by test_golden (TERN_GOLDEN_DUMP=DIR) "
                         "with the reference instead of writing goldens")
    args = ap.parse_args()
    if args.compare_dump:
        return compare_dump(args)
    os.makedirs(args.out, exist_ok=True)

    name = "stories260K-f32"
    if args.only in name:
        errs = ref_forward.selftest(STORIES, GREEDY)
        if errs:
            sys.exit("reference self-test failed: " + "; ".join(errs))
        with open(STORIES, "rb") as f:
            blob = f.read()
        m = ref_forward.load(STORIES)
        toks = story_tokens()
        logits = ref_forward.forward(m, toks)
        write_golden(os.path.join(args.out, name + ".bin"), KIND_FILE, STORIES, "", "f32", 0,
                     blob, toks, logits)
        report(name, blob, logits)

    todo = [(p, d) for p in PRESETS for d in DTYPES] + EXTRA + [(p, d) for p in MOE_PRESETS for d in MOE_DTYPES]
    with tempfile.TemporaryDirectory(prefix="tern-golden-") as tmp:
        for preset, dtype in todo:
            name = f"{preset}-{dtype}"
            if args.only not in name:
                continue
            a = synth(args.tern, preset, dtype, os.path.join(tmp, "a.gguf"))
            b = synth(args.tern, preset, dtype, os.path.join(tmp, "b.gguf"))
            if a != b:
                sys.exit(f"{name}: tern synth is not deterministic (same seed, different bytes)")
            m = ref_forward.load(os.path.join(tmp, "a.gguf"))
            logits = ref_forward.forward(m, synth_tokens(m.n_vocab))
            write_golden(os.path.join(args.out, name + ".bin"), KIND_SYNTH, preset, VOCAB, dtype,
                         SEED, a, synth_tokens(m.n_vocab), logits)
            report(name, a, logits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
