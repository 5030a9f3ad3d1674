#!/usr/bin/env python3
"""make_hf_tiny — writes tiny random Hugging Face checkpoints, one per family.

    python3 scripts/make_hf_tiny.py --out DIR [--family NAME ...]

For each family (llama, llama3, mistral, qwen2, qwen3, mixtral, qwen2_moe,
qwen3_moe, deepseek_v2, deepseek_v3) DIR/<family>/ gets what a Hugging Face checkpoint
holds: config.json (the field names transformers reads), the weights in
safetensors with transformers' tensor names, tokenizer.json and
tokenizer_config.json. numpy only (no torch, no safetensors package): the
safetensors writer is the few lines below, so CI can make the checkpoints in
about a second. The same seed gives byte-identical files (numpy's PCG64 and
our own header writer), which tests/convert/test_convert_hf.c checks through
the FNV-1a hash recorded in each golden.

Variety on purpose, so the converter's paths are all exercised:
  llama3       Llama 3.1's rope_scaling (rope_type llama3: rope_freqs.weight)
  mistral      weights stored as BF16 (the others F32)
  qwen2        sharded: two files and model.safetensors.index.json
  qwen3        tied embeddings (no lm_head.weight)
  qwen2_moe    shared expert with its sigmoid gate, norm_topk_prob false
  deepseek_v2  MLA without q LoRA, softmax routing, one leading dense layer
  deepseek_v3  MLA with q LoRA, sigmoid routing with e_score_correction_bias,
               group-limited top-k, routed_scaling_factor, YaRN RoPE

The tokenizer is GPT-2's byte-level BPE cut to its first 511 tokens (those
are closed under its first merges) plus <|endoftext|> as id 511, made from
../shared/data/vocab/gpt2-hf (not copied into the repo).
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

SEED = 1234
N_VOCAB = 512
GPT2 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "vocab", "gpt2-hf")

BASE = dict(vocab_size=N_VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=96, max_position_embeddings=256,
            rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu", tie_word_embeddings=False,
            attention_dropout=0.0, bos_token_id=N_VOCAB - 1, eos_token_id=N_VOCAB - 1,
            initializer_range=0.02, use_cache=True, torch_dtype="float32")

FAMILIES = {
    "llama": dict(arch="LlamaForCausalLM", cfg=dict(attention_bias=False, mlp_bias=False, rope_scaling=None)),
    "llama3": dict(arch="LlamaForCausalLM", model_type="llama", cfg=dict(
        attention_bias=False, mlp_bias=False, rope_theta=500000.0,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=64))),
    "mistral": dict(arch="MistralForCausalLM", dtype="bf16", cfg=dict(sliding_window=None, head_dim=16)),
    "qwen2": dict(arch="Qwen2ForCausalLM", shards=2, cfg=dict(use_sliding_window=False, sliding_window=None,
                                                               rope_theta=1000000.0)),
    "qwen3": dict(arch="Qwen3ForCausalLM", cfg=dict(head_dim=24, attention_bias=False, tie_word_embeddings=True,
                                                     use_sliding_window=False, sliding_window=None,
                                                     rope_theta=1000000.0, rms_norm_eps=1e-6)),
    "mixtral": dict(arch="MixtralForCausalLM", cfg=dict(num_local_experts=4, num_experts_per_tok=2,
                                                         sliding_window=None, router_aux_loss_coef=0.0,
                                                         output_router_logits=False)),
    "qwen2_moe": dict(arch="Qwen2MoeForCausalLM", cfg=dict(num_experts=4, num_experts_per_tok=2,
                                                            moe_intermediate_size=32,
                                                            shared_expert_intermediate_size=48,
                                                            norm_topk_prob=False, decoder_sparse_step=1,
                                                            mlp_only_layers=[], use_sliding_window=False,
                                                            sliding_window=None, output_router_logits=False,
                                                            router_aux_loss_coef=0.0)),
    "qwen3_moe": dict(arch="Qwen3MoeForCausalLM", cfg=dict(num_experts=4, num_experts_per_tok=2,
                                                            moe_intermediate_size=32, norm_topk_prob=True,
                                                            decoder_sparse_step=1, mlp_only_layers=[],
                                                            head_dim=16, attention_bias=False,
                                                            use_sliding_window=False, sliding_window=None,
                                                            output_router_logits=False, router_aux_loss_coef=0.0)),
    "deepseek_v2": dict(arch="DeepseekV2ForCausalLM", cfg=dict(
        num_key_value_heads=4, q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
        v_head_dim=16, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        n_shared_experts=1, first_k_dense_replace=1, moe_layer_freq=1, routed_scaling_factor=1.0,
        norm_topk_prob=False, topk_method="greedy", n_group=1, topk_group=1, scoring_func="softmax",
        aux_loss_alpha=0.0, seq_aux=False, attention_bias=False, rope_scaling=None)),
    "deepseek_v3": dict(arch="DeepseekV3ForCausalLM", cfg=dict(
        num_key_value_heads=4, q_lora_rank=24, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
        v_head_dim=16, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        n_shared_experts=1, first_k_dense_replace=1, moe_layer_freq=1, routed_scaling_factor=2.5,
        norm_topk_prob=True, topk_method="noaux_tc", n_group=2, topk_group=1, scoring_func="sigmoid",
        attention_bias=False, rope_interleave=True,
        rope_scaling=dict(type="yarn", factor=4.0, original_max_position_embeddings=64, mscale=1.0,
                          mscale_all_dim=1.0, beta_fast=32, beta_slow=1))),
}


# --------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------

def weights(fam, cfg, rng):
    """Returns {name: float32 array} with transformers' names and shapes."""
    E, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or E // H
    FF = cfg["intermediate_size"]
    w = {}

    def mat(name, rows, cols, scale=1.0):
        w[name] = (rng.standard_normal((rows, cols)) * (scale / np.sqrt(cols))).astype(np.float32)

    def vec(name, n, around=1.0, spread=0.2):
        w[name] = (around + spread * rng.standard_normal(n)).astype(np.float32)

    def mlp(p, ff):
        mat(p + "gate_proj.weight", ff, E)
        mat(p + "up_proj.weight", ff, E)
        mat(p + "down_proj.weight", E, ff)

    # Tied embeddings also make the logits: keep them small enough that no
    # token dominates every position.
    emb_scale = 0.25 if cfg["tie_word_embeddings"] else 1.0
    w["model.embed_tokens.weight"] = (emb_scale * rng.standard_normal((V, E))).astype(np.float32)
    for i in range(L):
        p = f"model.layers.{i}."
        vec(p + "input_layernorm.weight", E)
        vec(p + "post_attention_layernorm.weight", E)
        a = p + "self_attn."
        if fam.startswith("deepseek"):
            qk = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
            if cfg["q_lora_rank"]:
                mat(a + "q_a_proj.weight", cfg["q_lora_rank"], E)
                vec(a + "q_a_layernorm.weight", cfg["q_lora_rank"])
                mat(a + "q_b_proj.weight", H * qk, cfg["q_lora_rank"])
            else:
                mat(a + "q_proj.weight", H * qk, E)
            mat(a + "kv_a_proj_with_mqa.weight", cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"], E)
            vec(a + "kv_a_layernorm.weight", cfg["kv_lora_rank"])
            mat(a + "kv_b_proj.weight", H * (cfg["qk_nope_head_dim"] + cfg["v_head_dim"]), cfg["kv_lora_rank"])
            mat(a + "o_proj.weight", E, H * cfg["v_head_dim"])
        else:
            mat(a + "q_proj.weight", H * hd, E)
            mat(a + "k_proj.weight", KV * hd, E)
            mat(a + "v_proj.weight", KV * hd, E)
            mat(a + "o_proj.weight", E, H * hd)
            if fam in ("qwen2", "qwen2_moe"):
                for n, rows in (("q", H * hd), ("k", KV * hd), ("v", KV * hd)):
                    vec(a + n + "_proj.bias", rows, 0.0, 0.3)
            if fam in ("qwen3", "qwen3_moe"):
                vec(a + "q_norm.weight", hd)
                vec(a + "k_norm.weight", hd)
        if fam == "mixtral":
            m = p + "block_sparse_moe."
            mat(m + "gate.weight", cfg["num_local_experts"], E, 3.0)
            for x in range(cfg["num_local_experts"]):
                mat(m + f"experts.{x}.w1.weight", FF, E)
                mat(m + f"experts.{x}.w3.weight", FF, E)
                mat(m + f"experts.{x}.w2.weight", E, FF)
        elif fam in ("qwen2_moe", "qwen3_moe") or (fam.startswith("deepseek") and i >= cfg["first_k_dense_replace"]):
            n_exp = cfg.get("num_experts") or cfg.get("n_routed_experts")
            mat(p + "mlp.gate.weight", n_exp, E, 3.0)
            for x in range(n_exp):
                mlp(p + f"mlp.experts.{x}.", cfg["moe_intermediate_size"])
            if fam == "qwen2_moe":
                mlp(p + "mlp.shared_expert.", cfg["shared_expert_intermediate_size"])
                mat(p + "mlp.shared_expert_gate.weight", 1, E)
            if fam.startswith("deepseek"):
                mlp(p + "mlp.shared_experts.", cfg["moe_intermediate_size"] * cfg["n_shared_experts"])
                if cfg["topk_method"] == "noaux_tc":
                    w[p + "mlp.gate.e_score_correction_bias"] = (0.5 * rng.standard_normal(n_exp)).astype(np.float32)
        else:
            mlp(p + "mlp.", FF)
    vec("model.norm.weight", E)
    if not cfg["tie_word_embeddings"]:
        mat("lm_head.weight", V, E)
    return w


# --------------------------------------------------------------------------
# safetensors (written by hand: 8-byte header length, JSON, data)
# --------------------------------------------------------------------------

def to_bf16_bytes(a):
    u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even
    return r.tobytes()


def write_safetensors(path, tensors, dtype):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = tensors[name]
        b = to_bf16_bytes(a) if dtype == "bf16" else a.astype("<f4").tobytes()
        header[name] = {"dtype": "BF16" if dtype == "bf16" else "F32", "shape": list(a.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# --------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------

_TOKENIZER = {}


def tokenizer_files(out):
    if not _TOKENIZER:
        _TOKENIZER.update(tokenizer_json())
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(_TOKENIZER, f, ensure_ascii=False, sort_keys=True)
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "add_bos_token": False,
                   "tokenizer_class": "GPT2Tokenizer", "model_max_length": 256,
                   "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}, f, sort_keys=True)


def tokenizer_json():
    with open(os.path.join(GPT2, "gpt2_vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    keep = {t: i for t, i in vocab.items() if i < N_VOCAB - 1}
    merges = []
    with open(os.path.join(GPT2, "gpt2_merges.txt"), encoding="utf-8") as f:
        for line in f:
            if line.startswith("#version") or not line.strip():
                continue
            a, b = line.rstrip("\n").split(" ")
            if a in keep and b in keep and a + b in keep:
                merges.append(f"{a} {b}")
    keep["<|endoftext|>"] = N_VOCAB - 1
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": N_VOCAB - 1, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": keep, "merges": merges},
    }
    return tok


# --------------------------------------------------------------------------

def make(fam, out_root):
    spec = FAMILIES[fam]
    cfg = dict(BASE)
    cfg.update(spec["cfg"])
    cfg["model_type"] = spec.get("model_type", fam)
    cfg["architectures"] = [spec["arch"]]
    rng = np.random.default_rng([SEED] + list(fam.encode()))
    w = weights(fam, cfg, rng)
    out = os.path.join(out_root, fam)
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):
        if f.endswith(".safetensors") or f.endswith(".index.json"):
            os.remove(os.path.join(out, f))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    dtype = spec.get("dtype", "f32")
    shards = spec.get("shards", 1)
    if shards == 1:
        write_safetensors(os.path.join(out, "model.safetensors"), w, dtype)
    else:
        names = sorted(w)
        wmap = {}
        for s in range(shards):
            fn = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: w[n] for k, n in enumerate(names) if k % shards == s}
            write_safetensors(os.path.join(out, fn), part, dtype)
            wmap.update({n: fn for n in part})
        total = sum(a.size * 4 for a in w.values())
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": wmap}, f, indent=2, sort_keys=True)
    tokenizer_files(out)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--family", action="append", choices=sorted(FAMILIES))
    a = ap.parse_args()
    for fam in a.family or sorted(FAMILIES):
        make(fam, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
