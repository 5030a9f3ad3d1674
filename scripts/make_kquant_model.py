#!/usr/bin/env python3
"""make_kquant_model — writes a small random-weight llama GGUF whose matrices
are in the quantized formats of downloaded files (the mix of llama.cpp's
Q4_K_M: Q4_K with Q6_K for attn_v, ffn_down and output; or every other
format tern computes), for tests/cli/test_kquants.sh.

The gguf package cannot quantize K-quants, so the blocks are random bytes
whose f16 scales are set so the weights have a sane magnitude (|w| ≲ 0.1);
the model is random but well defined, and scripts/ref_forward.py (which
dequantizes with the gguf package) computes its exact logits.

The vocabulary is stories260K's (512 tokens, SentencePiece). Shape: n_embd
256, 2 layers, 4 heads / 2 kv heads of 64, n_ff 512 — every row a multiple
of the 256-element K block.

--mix f32 writes the same shape with F32 weights drawn from a heavy-tailed
distribution (Student t, 5 degrees of freedom, a few outlier columns as
real models have), the source for quantization tests (tests/cli/test_quantize_k.sh).

Usage: make_kquant_model.py OUT.gguf [--mix q4_k_m|others|f32] [--seed S] [--layers N]
"""

import argparse

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFValueType, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES

VOCAB = "../shared/data/models/stories260K/stories260K.v3.derived.gguf"
N_EMBD, N_LAYER, N_HEAD, N_HEAD_KV, HEAD_DIM, N_FF = 256, 2, 4, 2, 64, 512

# type -> [(byte offset of an f16 scale field, its magnitude)] giving |w| ≲ 0.1
SCALES = {
    T.Q4_K: [(0, 0.1 / (63 * 15)), (2, 0.05 / 63)],
    T.Q5_K: [(0, 0.1 / (63 * 31)), (2, 0.05 / 63)],
    T.Q6_K: [(208, 0.1 / (128 * 32))],
    T.Q3_K: [(108, 0.1 / (32 * 4))],
    T.Q2_K: [(80, 0.1 / (15 * 3)), (82, 0.05 / 15)],
    T.Q4_1: [(0, 0.1 / 15), (2, -0.05)],
    T.Q5_0: [(0, 0.1 / 16)],
    T.Q5_1: [(0, 0.1 / 31), (2, -0.05)],
    T.IQ4_NL: [(0, 0.1 / 127)],
    T.Q8_0: [(0, 0.1 / 127)],
    T.Q4_0: [(0, 0.1 / 8)],
}

MIXES = {
    # llama.cpp's Q4_K_M: Q4_K, with Q6_K for attn_v, ffn_down and output
    "q4_k_m": {"token_embd": T.Q4_K, "output": T.Q6_K, "attn_q": T.Q4_K, "attn_k": T.Q4_K,
               "attn_v": T.Q6_K, "attn_output": T.Q4_K, "ffn_gate": T.Q4_K, "ffn_up": T.Q4_K,
               "ffn_down": T.Q6_K},
    "others": {"token_embd": T.Q5_K, "output": T.Q3_K, "attn_q": T.Q2_K, "attn_k": T.Q4_1,
               "attn_v": T.Q5_0, "attn_output": T.Q5_1, "ffn_gate": T.IQ4_NL, "ffn_up": T.Q8_0,
               "ffn_down": T.Q5_K},
}


def random_matrix(rng, qtype, n_out, n_in):
    bs, ts = GGML_QUANT_SIZES[qtype]
    nb = n_out * n_in // bs
    raw = rng.integers(0, 256, size=(nb, ts), dtype=np.uint8)
    for off, mag in SCALES[qtype]:
        v = (mag * rng.uniform(0.5, 1.0, size=nb)).astype(np.float16)
        raw[:, off:off + 2] = v.view(np.uint8).reshape(nb, 2)
    return raw.reshape(n_out, n_in // bs * ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--mix", choices=sorted(MIXES) + ["f32"], default="q4_k_m")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--layers", type=int, default=N_LAYER, help="layer count (the mix rules depend on it)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    mix = MIXES.get(args.mix)

    vocab = GGUFReader(VOCAB)
    tokens = vocab.fields["tokenizer.ggml.tokens"].contents()
    n_vocab = len(tokens)

    w = GGUFWriter(args.out, "llama")
    w.add_name(f"kquant-test-{args.mix}")
    w.add_context_length(512)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(args.layers)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(vocab.fields["tokenizer.ggml.scores"].contents())
    w.add_token_types(vocab.fields["tokenizer.ggml.token_type"].contents())
    w.add_key_value("tokenizer.ggml.bos_token_id", 1, GGUFValueType.UINT32)
    w.add_key_value("tokenizer.ggml.eos_token_id", 2, GGUFValueType.UINT32)

    def mat(name, kind, n_out, n_in):
        if mix is None:
            x = 0.02 * rng.standard_t(5, size=(n_out, n_in))
            x[:, rng.integers(0, n_in, size=4)] *= 8.0  # outlier input columns
            w.add_tensor(name, x.astype(np.float32))
            return
        q = mix[kind]
        w.add_tensor(name, random_matrix(rng, q, n_out, n_in), raw_dtype=q)

    def norm(name):
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(N_EMBD)).astype(np.float32))

    mat("token_embd.weight", "token_embd", n_vocab, N_EMBD)
    norm("output_norm.weight")
    mat("output.weight", "output", n_vocab, N_EMBD)
    for il in range(args.layers):
        p = f"blk.{il}."
        norm(p + "attn_norm.weight")
        mat(p + "attn_q.weight", "attn_q", N_HEAD * HEAD_DIM, N_EMBD)
        mat(p + "attn_k.weight", "attn_k", N_HEAD_KV * HEAD_DIM, N_EMBD)
        mat(p + "attn_v.weight", "attn_v", N_HEAD_KV * HEAD_DIM, N_EMBD)
        mat(p + "attn_output.weight", "attn_output", N_EMBD, N_HEAD * HEAD_DIM)
        norm(p + "ffn_norm.weight")
        mat(p + "ffn_gate.weight", "ffn_gate", N_FF, N_EMBD)
        mat(p + "ffn_up.weight", "ffn_up", N_FF, N_EMBD)
        mat(p + "ffn_down.weight", "ffn_down", N_EMBD, N_FF)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
