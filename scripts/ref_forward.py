#!/usr/bin/env python3
"""ref_forward — an independent numpy forward pass for llama / qwen2 / qwen3
and the mixture-of-experts families (Mixtral = llama with experts, qwen2moe,
qwen3moe).

This is the yardstick tern's logits are compared against
(tests/model/test_golden.c, docs/correctness.md). It was written from the
published math of these models and the semantics of the Hugging Face
modeling code (LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM), not
from tern's C, and it shares no code with tern: the GGUF file is read with
the PyPI `gguf` package (GGUFReader) and quantized tensors are expanded with
`gguf.quants.dequantize`. Everything is computed in float64 on dequantized
weights; activations are never quantized.

THE MODEL (one decoder layer, x is the residual stream, one row per token)

    h   = rmsnorm(x) * attn_norm
    q   = h Wqᵀ (+ bq)    k = h Wkᵀ (+ bk)    v = h Wvᵀ (+ bv)      (qwen2 biases)
    q,k = per-head rmsnorm * q_norm / k_norm                       (qwen3 only)
    q,k = rope(q, pos), rope(k, pos)
    a   = softmax(q kᵀ / sqrt(head_dim) + causal mask) v   per head, GQA:
          query head h reads kv head h // (n_head / n_head_kv)
    x   = x + a Woᵀ
    h   = rmsnorm(x) * ffn_norm
    x   = x + (silu(h Wgᵀ) * (h Wuᵀ)) Wdᵀ
  logits = (rmsnorm(x) * output_norm) Woutᵀ, Wout = token_embd when tied.

MIXTURE OF EXPERTS (MixtralSparseMoeBlock, Qwen2MoeSparseMoeBlock,
Qwen3MoeSparseMoeBlock): the FFN line above becomes, per token,
    p   = softmax(h Wrouterᵀ)                    over all n_expert experts
    E   = the top-k experts by p; w_e = p_e
    w  /= sum(w)          Mixtral always; Qwen only when norm_topk_prob
    x   = x + sum_{e in E} w_e * ffn_e(h)        ffn_e the SwiGLU FFN above
        (+ sigmoid(h · w_shared_gate) * ffn_shared(h)      qwen2moe)

DEEPSEEK2 (DeepseekV2ForCausalLM / DeepseekV3ForCausalLM), the EXPANDED form:
    q      = rmsnorm(h Wq_aᵀ) * q_a_norm  Wq_bᵀ   (or h Wqᵀ)  per head [q_nope, q_pe]
    c,kpe  = h Wkv_aᵀ;   c = rmsnorm(c) * kv_a_norm
    k_nope, v = per head split of c Wkv_bᵀ
    q_pe, kpe = rope (interleaved pairs: HF permutes to halves then rotate_half)
    k      = [k_nope, kpe broadcast to every head]
    a      = softmax(q kᵀ * scale) v,  scale = key_length^-0.5 * mscale²
  YaRN (DeepseekV2YarnRotaryEmbedding): inv_freq blends base^(-2i/d) and
  that / factor with a linear ramp between the correction dims of
  beta_fast = 32 and beta_slow = 1 over original_max_position_embeddings;
  mscale = 0.1 * mscale_all_dim * ln(factor) + 1 (GGUF stores
  0.1 * mscale_all_dim as yarn_log_multiplier).
  MoE gate (MoEGate): scores = softmax (V2) or sigmoid (V3) of the logits;
  V3 chooses on scores + e_score_correction_bias; with n_group > 1 only the
  topk_group best groups (V2: group max; V3: sum of the group's top 2) are
  eligible; weights = scores of the chosen (no bias), normalized when
  norm_topk_prob, times routed_scaling_factor; shared experts added unscaled.
  The first first_k_dense_replace layers have a dense FFN.

ROPE
  inv_freq[i] = base^(-2i / n_rot) for i < n_rot/2, divided by rope_freqs[i]
  when the file carries Llama 3's rope_freqs tensor; the angle is
  pos * inv_freq[i] / factor with linear scaling (rope.scaling.type
  "linear"). Only the first n_rot dims of a head rotate.
  - llama: convert_hf_to_gguf stores q/k in Meta's original row order (it
    undoes Hugging Face's permutation), in which the rotated pairs are the
    ADJACENT dims (2i, 2i+1). On these rows, rotating adjacent pairs is
    exactly HF's rotate_half on the HF rows.
  - qwen2/qwen3: weights are stored in HF order; the pairs are (i, i+n_rot/2)
    ("NEOX"), which is HF's rotate_half itself.

Usage:
    ref_forward.py MODEL.gguf --tokens 1,2,3     prints argmax per position
    ref_forward.py MODEL.gguf --greedy 64        greedy decoding from BOS
    ref_forward.py stories260K.gguf --selftest expected-greedy-t0.tokens.derived.txt
As a module: load(path) -> Model, forward(model, tokens) -> (n, n_vocab).
"""

import argparse
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType
from gguf import quants as gq

ARCHS = ("llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "deepseek2")


class Model:
    """Hyper-parameters (attributes) and float64 weights (dict w)."""


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


# Weight types whose matrix products tern (like llama.cpp) computes on
# activations rounded to Q8_0 (blocks of 32) or to Q8_K (blocks of 256).
ACT_Q8_0_TYPES = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL")
ACT_Q8_K_TYPES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")


def _tensor(reader, name, quantized=None):
    """A tensor as float64 ndarray in GGUF row order: shape (ne[1], ne[0])
    for matrices, (ne[0],) for vectors; None when absent."""
    for t in reader.tensors:
        if t.name == name:
            qt = t.tensor_type
            if qt == GGMLQuantizationType.F32:
                a = np.asarray(t.data, dtype=np.float32)
            else:
                try:
                    a = gq.dequantize(np.asarray(t.data), qt)
                except NotImplementedError:
                    raise ValueError(f"{name}: tensor type {qt.name} not supported by the reference")
            if quantized is not None and qt.name in ACT_Q8_0_TYPES:
                quantized.add(name)
            if quantized is not None and qt.name in ACT_Q8_K_TYPES:
                quantized.add(name)
                quantized.add(name + "#q8_K")
            shape = tuple(int(s) for s in reversed(t.shape))   # outermost first
            return np.asarray(a, dtype=np.float64).reshape(shape)
    return None


def load(path):
    r = GGUFReader(path)
    m = Model()
    m.path = path
    m.arch = _field(r, "general.architecture")
    if m.arch not in ARCHS:
        raise ValueError(f"{path}: architecture {m.arch!r} not supported by the reference")
    a = m.arch
    m.n_embd = int(_field(r, f"{a}.embedding_length"))
    m.n_layer = int(_field(r, f"{a}.block_count"))
    m.n_head = int(_field(r, f"{a}.attention.head_count"))
    m.n_head_kv = int(_field(r, f"{a}.attention.head_count_kv", m.n_head))
    m.head_dim = int(_field(r, f"{a}.attention.key_length", m.n_embd // m.n_head))
    m.n_ff = int(_field(r, f"{a}.feed_forward_length"))
    m.n_rot = int(_field(r, f"{a}.rope.dimension_count", m.head_dim))
    m.eps = float(_field(r, f"{a}.attention.layer_norm_rms_epsilon"))
    m.rope_base = float(_field(r, f"{a}.rope.freq_base", 10000.0))
    m.rope_factor = 1.0
    stype = _field(r, f"{a}.rope.scaling.type")
    if stype == "linear":
        m.rope_factor = float(_field(r, f"{a}.rope.scaling.factor"))
    elif stype == "yarn" and a == "deepseek2":
        pass
    elif stype not in (None, "none"):
        raise ValueError(f"{path}: rope scaling {stype!r} not supported by the reference")
    elif _field(r, f"{a}.rope.scale_linear") is not None:
        m.rope_factor = float(_field(r, f"{a}.rope.scale_linear"))
    m.neox = a in ("qwen2", "qwen3", "qwen2moe", "qwen3moe")
    m.n_expert = int(_field(r, f"{a}.expert_count", 0))
    m.n_expert_used = int(_field(r, f"{a}.expert_used_count", 0))
    # HF defaults: Mixtral renormalizes its top-k; Qwen2-MoE's config has
    # norm_topk_prob false, Qwen3-MoE's true. A file may say otherwise.
    m.norm_topk = bool(_field(r, f"{a}.expert_weights_norm", a not in ("qwen2moe", "deepseek2")))
    m.sigmoid = int(_field(r, f"{a}.expert_gating_func", 1)) == 2
    m.routed_scale = float(_field(r, f"{a}.expert_weights_scale", 1.0))
    m.n_group = int(_field(r, f"{a}.expert_group_count", 1))
    m.topk_group = int(_field(r, f"{a}.expert_group_used_count", m.n_group))
    m.mla = a == "deepseek2"
    m.yarn = None
    if m.mla:
        m.kv_lora = int(_field(r, f"{a}.attention.kv_lora_rank"))
        m.v_dim = int(_field(r, f"{a}.attention.value_length"))
        m.n_dense = int(_field(r, f"{a}.leading_dense_block_count", 0))
        if stype == "yarn":
            m.yarn = (float(_field(r, f"{a}.rope.scaling.factor")),
                      int(_field(r, f"{a}.rope.scaling.original_context_length")),
                      float(_field(r, f"{a}.rope.scaling.yarn_log_multiplier", 0.0)))

    m.quantized = set()      # names of Q8_0 / Q4_0 weights (for act_q8)
    m.act_q8 = False
    w = {}
    for name in ("token_embd.weight", "output_norm.weight", "output.weight", "rope_freqs.weight"):
        w[name] = _tensor(r, name, m.quantized)
    if w["output.weight"] is None:
        w["output.weight"] = w["token_embd.weight"]          # tied embeddings
        if "token_embd.weight" in m.quantized:
            m.quantized.add("output.weight")
        if "token_embd.weight#q8_K" in m.quantized:
            m.quantized.add("output.weight#q8_K")
    for il in range(m.n_layer):
        for s in ("attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
                  "attn_output.weight", "attn_q.bias", "attn_k.bias", "attn_v.bias",
                  "attn_q_norm.weight", "attn_k_norm.weight", "ffn_norm.weight",
                  "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight",
                  "ffn_gate_inp.weight", "ffn_gate_exps.weight", "ffn_up_exps.weight",
                  "ffn_down_exps.weight", "ffn_gate_inp_shexp.weight", "ffn_gate_shexp.weight",
                  "ffn_up_shexp.weight", "ffn_down_shexp.weight", "exp_probs_b.bias",
                  "attn_q_a.weight", "attn_q_a_norm.weight", "attn_q_b.weight", "attn_kv_a_mqa.weight",
                  "attn_kv_a_norm.weight", "attn_kv_b.weight"):
            w[f"blk.{il}.{s}"] = _tensor(r, f"blk.{il}.{s}", m.quantized)
    m.w = w
    m.n_vocab = w["token_embd.weight"].shape[0]
    return m


def rmsnorm(x, weight, eps):
    """x / sqrt(mean(x²) + eps) over the last axis, times weight."""
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y * weight if weight is not None else y


def yarn_inv_freq(m):
    """DeepseekV2YarnRotaryEmbedding's frequencies (see the docstring)."""
    factor, orig, _ = m.yarn
    d = m.n_rot
    extra = 1.0 / m.rope_base ** (np.arange(0, d, 2, dtype=np.float64) / d)
    inter = extra / factor

    def corr_dim(rot):
        return d * np.log(orig / (rot * 2 * np.pi)) / (2 * np.log(m.rope_base))
    low = max(np.floor(corr_dim(32.0)), 0)
    high = min(np.ceil(corr_dim(1.0)), d - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(d // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    mask = 1.0 - ramp
    return inter * (1 - mask) + extra * mask


def rope_angles(m, positions):
    """(n, n_rot/2) rotation angles."""
    half = m.n_rot // 2
    if m.yarn is not None:
        return np.outer(np.asarray(positions, dtype=np.float64), yarn_inv_freq(m))
    inv_freq = m.rope_base ** (-np.arange(half, dtype=np.float64) * 2.0 / m.n_rot)
    if m.w["rope_freqs.weight"] is not None:
        inv_freq = inv_freq / m.w["rope_freqs.weight"][:half]
    return np.outer(np.asarray(positions, dtype=np.float64) / m.rope_factor, inv_freq)


def rope(m, x, ang):
    """x: (n, heads, head_dim); rotates the first n_rot dims of every head."""
    half = m.n_rot // 2
    cos = np.cos(ang)[:, None, :]
    sin = np.sin(ang)[:, None, :]
    y = x.copy()
    if m.neox:
        a, b = x[..., :half], x[..., half:m.n_rot]
        y[..., :half] = a * cos - b * sin
        y[..., half:m.n_rot] = a * sin + b * cos
    else:
        a, b = x[..., 0:m.n_rot:2], x[..., 1:m.n_rot:2]
        y[..., 0:m.n_rot:2] = a * cos - b * sin
        y[..., 1:m.n_rot:2] = a * sin + b * cos
    return y


def quantize_act_q8_0(x):
    """Rounds each row of x to Q8_0 and back, as llama.cpp's reference
    quantizer does for the activations of a Q8_0/Q4_0 matrix product:
    per block of 32, d = max|x| / 127 (float32, stored as float16),
    q = round-half-away(x / d) in [-127, 127], x' = f16(d) * q."""
    n, k = x.shape
    b = x.astype(np.float32).reshape(n, k // 32, 32)
    amax = np.abs(b).max(axis=2, keepdims=True)
    d = amax / np.float32(127)
    idv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), np.float32(0))
    v = b * idv
    q = np.trunc(v + np.copysign(np.float32(0.5), v))                # roundf
    return (d.astype(np.float16).astype(np.float64) * q).reshape(n, k)


def quantize_act_q8_K(x):
    """Rounds each row of x to Q8_K and back, as tern's activation quantizer
    for K-quant weights does: per block of 256, the value of largest
    magnitude (sign kept) maps to -127: iscale = -127 / max (float32),
    q = min(127, round-half-away(iscale * x)), x' = float32(1 / iscale) * q."""
    n, k = x.shape
    b = x.astype(np.float32).reshape(n, k // 256, 256)
    idx = np.abs(b).argmax(axis=2)[..., None]
    mx = np.take_along_axis(b, idx, axis=2)
    with np.errstate(divide="ignore"):
        iscale = np.where(mx != 0, np.float32(-127) / np.where(mx != 0, mx, 1), np.float32(0)).astype(np.float32)
    v = (iscale * b).astype(np.float32)
    q = np.minimum(np.trunc(v + np.copysign(np.float32(0.5), v)), 127)
    with np.errstate(divide="ignore"):
        d = np.where(iscale != 0, np.float32(1) / np.where(iscale != 0, iscale, 1), np.float32(0)).astype(np.float32)
    return (d.astype(np.float64) * q).reshape(n, k)


def matmul(m, x, name):
    """x Wᵀ for the weight called name (activations rounded to Q8_0, or to
    Q8_K for K-quant weights, first when m.act_q8 is set and the weight is
    quantized)."""
    if m.act_q8 and name + "#q8_K" in m.quantized:
        x = quantize_act_q8_K(x)
    elif m.act_q8 and name in m.quantized:
        x = quantize_act_q8_0(x)
    return x @ m.w[name].T


def silu(x):
    return x / (1.0 + np.exp(-x))


def mm(m, x, W, name):
    """x Wᵀ for an explicit matrix W (an expert's slice of the stacked
    tensor called name), with the same activation rounding as matmul."""
    if m.act_q8 and name + "#q8_K" in m.quantized:
        x = quantize_act_q8_K(x)
    elif m.act_q8 and name in m.quantized:
        x = quantize_act_q8_0(x)
    return x @ W.T


def moe_ffn(m, h, p):
    """The sparse MoE block for the normed rows h (n, n_embd) of layer prefix p."""
    w = m.w
    n = h.shape[0]
    logits = matmul(m, h, p + "ffn_gate_inp.weight")                # (n, n_expert)
    if m.sigmoid:
        probs = 1.0 / (1.0 + np.exp(-logits))
    else:
        z = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    choice = probs.copy()
    if w.get(p + "exp_probs_b.bias") is not None:
        choice = choice + w[p + "exp_probs_b.bias"]
    out = np.zeros_like(h)
    for i in range(n):
        c = choice[i].copy()
        if m.n_group > 1:
            g = c.reshape(m.n_group, -1)
            gs = np.sort(g, axis=1)[:, -2:].sum(axis=1) if m.sigmoid else g.max(axis=1)
            keep = np.argsort(-gs, kind="stable")[:m.topk_group]
            mask = np.full(m.n_group, True)
            mask[keep] = False
            g[mask] = -np.inf
            c = g.reshape(-1)
        top = np.argsort(-c, kind="stable")[:m.n_expert_used]
        wt = probs[i, top]
        if m.norm_topk:
            wt = wt / wt.sum()
        wt = wt * m.routed_scale
        for e, we in zip(top, wt):
            hi = h[i:i + 1]
            g = silu(mm(m, hi, w[p + "ffn_gate_exps.weight"][e], p + "ffn_gate_exps.weight")) * \
                mm(m, hi, w[p + "ffn_up_exps.weight"][e], p + "ffn_up_exps.weight")
            out[i] += we * mm(m, g, w[p + "ffn_down_exps.weight"][e], p + "ffn_down_exps.weight")[0]
    if w[p + "ffn_gate_shexp.weight"] is not None:
        g = silu(matmul(m, h, p + "ffn_gate_shexp.weight")) * matmul(m, h, p + "ffn_up_shexp.weight")
        sh = matmul(m, g, p + "ffn_down_shexp.weight")
        if w[p + "ffn_gate_inp_shexp.weight"] is not None:
            gate = h @ w[p + "ffn_gate_inp_shexp.weight"].reshape(-1)
            sh = sh / (1.0 + np.exp(-gate))[:, None]
        out = out + sh
    return out


def mla_attention(m, h, p, ang, mask):
    """DeepSeek's attention in the expanded (Hugging Face) form."""
    w = m.w
    n = h.shape[0]
    nope = m.head_dim - m.n_rot
    if w[p + "attn_q_a.weight"] is not None:
        q = matmul(m, rmsnorm(matmul(m, h, p + "attn_q_a.weight"), w[p + "attn_q_a_norm.weight"], m.eps),
                   p + "attn_q_b.weight")
    else:
        q = matmul(m, h, p + "attn_q.weight")
    q = q.reshape(n, m.n_head, m.head_dim)
    kva = matmul(m, h, p + "attn_kv_a_mqa.weight")
    c = rmsnorm(kva[:, :m.kv_lora], w[p + "attn_kv_a_norm.weight"], m.eps)
    kv = matmul(m, c, p + "attn_kv_b.weight").reshape(n, m.n_head, nope + m.v_dim)
    k_nope, v = kv[:, :, :nope], kv[:, :, nope:]
    # rope on the last n_rot dims only, adjacent pairs (m.neox is False here)
    q_pe = rope(m, q[:, :, nope:], ang)
    k_pe = rope(m, kva[:, None, m.kv_lora:], ang)
    qf = np.concatenate([q[:, :, :nope], q_pe], axis=2)
    kf = np.concatenate([k_nope, np.broadcast_to(k_pe, (n, m.n_head, m.n_rot))], axis=2)
    scale = 1.0 / np.sqrt(m.head_dim)
    if m.yarn is not None and m.yarn[0] > 1:
        ms = m.yarn[2] * np.log(m.yarn[0]) + 1.0
        scale = scale * ms * ms
    out = np.empty((n, m.n_head, m.v_dim))
    for hd in range(m.n_head):
        s = (qf[:, hd, :] @ kf[:, hd, :].T) * scale + mask
        s = s - s.max(axis=1, keepdims=True)
        pr = np.exp(s)
        pr = pr / pr.sum(axis=1, keepdims=True)
        out[:, hd, :] = pr @ v[:, hd, :]
    return matmul(m, out.reshape(n, m.n_head * m.v_dim), p + "attn_output.weight")


def forward(m, tokens, positions=None):
    """Logits (len(tokens), n_vocab) float64 of one sequence (causal)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    n = len(tokens)
    if positions is None:
        positions = np.arange(n)
    w = m.w
    x = w["token_embd.weight"][tokens].copy()                  # (n, n_embd)
    ang = rope_angles(m, positions)
    mask = np.triu(np.full((n, n), -np.inf), k=1)             # j > i masked
    group = m.n_head // m.n_head_kv
    scale = 1.0 / np.sqrt(m.head_dim)
    for il in range(m.n_layer):
        p = f"blk.{il}."
        h = rmsnorm(x, w[p + "attn_norm.weight"], m.eps)
        if m.mla:
            x = x + mla_attention(m, h, p, ang, mask)
            h = rmsnorm(x, w[p + "ffn_norm.weight"], m.eps)
            if w[p + "ffn_gate_inp.weight"] is not None:
                x = x + moe_ffn(m, h, p)
            else:
                g = silu(matmul(m, h, p + "ffn_gate.weight")) * matmul(m, h, p + "ffn_up.weight")
                x = x + matmul(m, g, p + "ffn_down.weight")
            continue
        q = matmul(m, h, p + "attn_q.weight")
        k = matmul(m, h, p + "attn_k.weight")
        v = matmul(m, h, p + "attn_v.weight")
        if w[p + "attn_q.bias"] is not None:
            q = q + w[p + "attn_q.bias"]
            k = k + w[p + "attn_k.bias"]
            v = v + w[p + "attn_v.bias"]
        q = q.reshape(n, m.n_head, m.head_dim)
        k = k.reshape(n, m.n_head_kv, m.head_dim)
        v = v.reshape(n, m.n_head_kv, m.head_dim)
        if w[p + "attn_q_norm.weight"] is not None:
            q = rmsnorm(q, w[p + "attn_q_norm.weight"], m.eps)
            k = rmsnorm(k, w[p + "attn_k_norm.weight"], m.eps)
        q = rope(m, q, ang)
        k = rope(m, k, ang)
        out = np.empty((n, m.n_head, m.head_dim))
        for hd in range(m.n_head):
            kh = k[:, hd // group, :]
            vh = v[:, hd // group, :]
            s = (q[:, hd, :] @ kh.T) * scale + mask              # (n, n)
            s = s - s.max(axis=1, keepdims=True)
            pr = np.exp(s)
            pr = pr / pr.sum(axis=1, keepdims=True)
            out[:, hd, :] = pr @ vh
        x = x + matmul(m, out.reshape(n, m.n_head * m.head_dim), p + "attn_output.weight")
        h = rmsnorm(x, w[p + "ffn_norm.weight"], m.eps)
        if w[p + "ffn_gate_inp.weight"] is not None:
            x = x + moe_ffn(m, h, p)
            continue
        g = silu(matmul(m, h, p + "ffn_gate.weight")) * matmul(m, h, p + "ffn_up.weight")
        x = x + matmul(m, g, p + "ffn_down.weight")
    x = rmsnorm(x, w["output_norm.weight"], m.eps)
    return matmul(m, x, "output.weight")


def greedy(m, first, n_steps):
    """Greedy continuation (recomputes the whole prefix each step: slow but simple)."""
    toks = list(first)
    for _ in range(n_steps):
        toks.append(int(np.argmax(forward(m, toks)[-1])))
    return toks


def to_hf_order(w, n_heads):
    """Meta/GGUF llama q or k rows -> Hugging Face rows: per head, the
    interleaved pairs (2i, 2i+1) become (i, i + head_dim/2). This is the
    permutation of transformers' convert_llama_weights_to_hf."""
    rows, cols = w.shape
    hd = rows // n_heads
    return w.reshape(n_heads, hd // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def selftest(path, expected_tokens_path, n_steps=64):
    """Checks the reference on stories260K two ways: (1) greedy decoding from
    BOS reproduces llama2.c's run.c output (an independent implementation on
    the same trained weights); (2) the llama model with q/k permuted to HF
    order and NEOX rotation gives the same logits as NORM rotation on GGUF
    order (so the qwen path's rotation is the llama path's in disguise).
    Returns a list of failure messages."""
    errs = []
    m = load(path)
    with open(expected_tokens_path) as f:
        want = [int(t) for t in f.read().split()][:n_steps + 1]
    got = greedy(m, want[:1], len(want) - 1)
    if got != want:
        i = next(i for i in range(len(want)) if got[i] != want[i])
        errs.append(f"greedy differs from llama2.c at step {i}: {got[i]} vs {want[i]}")
    toks = want[:16]
    base = forward(m, toks)
    if m.n_rot != m.head_dim:
        errs.append("selftest (2) needs n_rot == head_dim")
        return errs
    for il in range(m.n_layer):
        m.w[f"blk.{il}.attn_q.weight"] = to_hf_order(m.w[f"blk.{il}.attn_q.weight"], m.n_head)
        m.w[f"blk.{il}.attn_k.weight"] = to_hf_order(m.w[f"blk.{il}.attn_k.weight"], m.n_head_kv)
    m.neox = True
    d = np.abs(forward(m, toks) - base).max()
    if not d < 1e-9:
        errs.append(f"NEOX on HF order differs from NORM on GGUF order by {d:.3e}")
    return errs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--tokens", help="comma-separated token ids")
    ap.add_argument("--greedy", type=int, default=0, help="greedy steps from --tokens (default BOS=1)")
    ap.add_argument("--act-q8", action="store_true",
                    help="round matmul activations of quantized weights as tern does (Q8_0 / Q8_K)")
    ap.add_argument("--selftest", metavar="EXPECTED_TOKENS",
                    help="check the reference on stories260K against llama2.c's greedy token ids")
    args = ap.parse_args()
    if args.selftest:
        errs = selftest(args.model, args.selftest)
        for e in errs:
            print("FAIL:", e)
        print("selftest", "failed" if errs else "passed")
        return 1 if errs else 0
    m = load(args.model)
    m.act_q8 = args.act_q8
    toks = [int(t) for t in args.tokens.split(",")] if args.tokens else [1]
    if args.greedy:
        print(" ".join(str(t) for t in greedy(m, toks, args.greedy)))
        return 0
    logits = forward(m, toks)
    for i, row in enumerate(logits):
        print(f"pos {i:3d} tok {toks[i]:6d} argmax {int(np.argmax(row)):6d} max {row.max():.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
