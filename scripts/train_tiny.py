#!/usr/bin/env python3
"""train_tiny — trains a small Llama on tinyshakespeare, for the quality report.

    /path/to/venv/bin/python scripts/train_tiny.py --out DIR [--minutes 12] [--threads 1]

Run by hand in a venv with torch + transformers (never in CI). Writes a
Hugging Face checkpoint (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json) to DIR, which `tern convert DIR OUT.gguf --dtype f32`
turns into the F32 model that docs/quantization.md's K-quant table measures.

Why: stories260K's rows are 64 wide, so the K-quants (256-element super
blocks) do not apply to it, and random-weight models give near-meaningless
KL (their outputs are near uniform). This model is trained, and every row
length is a multiple of 256: n_embd 256, 8 heads of 32 (4 KV heads: GQA),
FFN 768 (3x), 4 layers, untied output.

Tokenizer: GPT-2's byte-level BPE cut to its first 2047 tokens (they are
closed under GPT-2's first merges, so the cut vocabulary is a valid BPE)
plus <|endoftext|> as id 2047, made from ../shared/data/vocab/gpt2-hf as
scripts/make_hf_tiny.py does for 512.

Data: ../shared/data/corpora/en/tinyshakespeare/input.txt, the first 90 %
of its bytes for training; the last 10 % (held out) and wikitext-2 test
are left for evaluation. Training samples random windows of --ctx tokens,
AdamW with warm-up and cosine decay over a fixed wall-clock budget
(--minutes), so it ends on time on a loaded machine; the held-out loss is
printed at the end. Seeded, but CPU timing decides how many steps run, so
two runs are not identical. One thread by default: on the shared 2-vCPU
machine (load ~10) two torch threads ran a step 4.7x slower than one
(OpenMP's spinning threads wait on each other).
"""

import argparse
import json
import math
import os
import sys
import time

import torch
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "shared", "data")
GPT2 = os.path.join(DATA, "vocab", "gpt2-hf")
TEXT = os.path.join(DATA, "corpora", "en", "tinyshakespeare", "input.txt")


def tokenizer_json(n_vocab):
    with open(os.path.join(GPT2, "gpt2_vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    keep = {t: i for t, i in vocab.items() if i < n_vocab - 1}
    merges = []
    with open(os.path.join(GPT2, "gpt2_merges.txt"), encoding="utf-8") as f:
        for line in f:
            if line.startswith("#version") or not line.strip():
                continue
            a, b = line.rstrip("\n").split(" ")
            if a in keep and b in keep and a + b in keep:
                merges.append(f"{a} {b}")
    keep["<|endoftext|>"] = n_vocab - 1
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": n_vocab - 1, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": keep, "merges": merges},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--embd", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)

    tj = tokenizer_json(a.vocab)
    with open(os.path.join(a.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False, sort_keys=True)
    with open(os.path.join(a.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "add_bos_token": False,
                   "tokenizer_class": "GPT2Tokenizer", "model_max_length": a.ctx}, f, sort_keys=True)
    tok = Tokenizer.from_file(os.path.join(a.out, "tokenizer.json"))

    with open(TEXT, encoding="utf-8") as f:
        text = f.read()
    cut = int(len(text) * 0.9)
    train = torch.tensor(tok.encode(text[:cut]).ids, dtype=torch.long)
    held = torch.tensor(tok.encode(text[cut:]).ids, dtype=torch.long)
    print(f"tokens: train {train.numel()}, held-out {held.numel()} ({len(text) - cut} bytes)", flush=True)

    bos = a.vocab - 1
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.embd, intermediate_size=3 * a.embd,
                      num_hidden_layers=a.layers, num_attention_heads=a.embd // 32,
                      num_key_value_heads=a.embd // 64, max_position_embeddings=a.ctx,
                      rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu", tie_word_embeddings=False,
                      attention_bias=False, mlp_bias=False, bos_token_id=bos, eos_token_id=bos,
                      initializer_range=0.02, torch_dtype="float32")
    model = LlamaForCausalLM(cfg)
    n_par = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_par}", flush=True)

    def batch(src, n):
        # Each window starts with BOS, as tern perplexity and llama-perplexity evaluate.
        idx = torch.randint(0, src.numel() - a.ctx, (n,))
        x = torch.stack([src[i:i + a.ctx] for i in idx.tolist()])
        x[:, 0] = bos
        return x

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95))
    budget = a.minutes * 60.0
    warm = 30
    t0 = time.time()
    step = 0
    model.train()
    while True:
        frac = (time.time() - t0) / budget
        if frac >= 1.0:
            break
        lr = a.lr * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        x = batch(train, a.batch)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 20 == 0:
            print(f"step {step} t {time.time() - t0:.0f}s lr {lr:.2e} loss {loss.item():.4f}", flush=True)
        step += 1

    model.eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        losses = []
        for _ in range(8):
            idx = torch.randint(0, held.numel() - a.ctx, (8,), generator=g)
            x = torch.stack([held[i:i + a.ctx] for i in idx.tolist()])
            x[:, 0] = bos
            losses.append(model(input_ids=x, labels=x).loss.item())
    hl = sum(losses) / len(losses)
    print(f"done: {step} steps in {time.time() - t0:.0f}s; held-out loss {hl:.4f} (ppl {math.exp(hl):.2f})",
          flush=True)
    model.save_pretrained(a.out, safe_serialization=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
