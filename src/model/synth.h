/*
 * synth — random-weight models of real shapes.
 *
 * Key idea: a model's speed depends on its shapes and dtypes, not on what
 * its weights learned, so a file with the exact hyper-parameters, tensor
 * names and tensor types of e.g. TinyLlama-1.1B, filled with deterministic
 * random numbers and carrying a real vocabulary, benchmarks exactly like the
 * trained model and can be made on any machine in seconds. The files use
 * llama.cpp's architecture names, metadata keys and tensor names, so both
 * tern and llama.cpp load them.
 *
 * WEIGHTS
 * Every row of every tensor has its own random stream, derived from the
 * seed, the tensor's index in the file and the row number (splitmix64), so
 * any tensor, or any row, can be produced on its own and the file does not
 * depend on the order or the number of threads that produce it. Values are
 * approximately normal (a sum of four 16-bit uniforms): matrices have
 * variance 1 / n_in, so activations keep unit scale through every layer;
 * norm weights are 1 plus small noise, biases small. Matrices (token
 * embedding and output included) are stored in the requested dtype; norms,
 * biases and rope frequency factors are always F32. Tensors are produced at
 * write time (tn_gguf_add_tensor_fn), one at a time, so a 7B F16 model never
 * sits in memory whole: peak memory is about the largest tensor.
 */
#ifndef TERN_MODEL_SYNTH_H
#define TERN_MODEL_SYNTH_H

#include "model/model.h"

/* The shape of a model family member. Dimensions use the model's names:
 * every matrix's inner dimension (n_embd, n_ff, n_head * head_dim) is a
 * multiple of 32 so that Q8_0 and Q4_0 apply. */
typedef struct tn_synth_preset {
    const char *name;        /* "tinyllama-1.1b" */
    const char *desc;        /* one line: the real model it mimics */
    tn_arch arch;            /* llama, qwen2, qwen3, qwen2moe, qwen3moe or deepseek2 */
    int32_t n_ctx_train;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;        /* written as attention.key_length/value_length if != n_embd / n_head */
    int32_t n_ff;
    float norm_eps;
    float rope_freq_base;
    float rope_scale_linear; /* 0: none; else rope.scaling.type "linear" with this factor */
    bool rope_freqs_llama3;  /* writes rope_freqs.weight (Llama 3.1 frequency factors) */
    bool qkv_bias;           /* qwen2: blk.N.attn_{q,k,v}.bias */
    bool qk_norm;            /* qwen3: blk.N.attn_{q,k}_norm.weight */
    bool tied;               /* no output.weight: the output reuses token_embd */
    /* Mixture of experts (n_expert 0: dense). For llama (Mixtral) the experts'
     * width is n_ff; qwen2moe/qwen3moe write n_ff_exp as
     * expert_feed_forward_length. */
    int32_t n_expert;
    int32_t n_expert_used;
    int32_t n_ff_exp;
    int32_t n_ff_shexp;      /* shared expert width (0: none) */
    bool shexp_gate;         /* qwen2moe: blk.N.ffn_gate_inp_shexp.weight */
    /* deepseek2: head_dim is key_length (qk_nope + n_rot); experts as above
     * plus n_expert_shared experts of width n_ff_exp. */
    int32_t n_rot;           /* qk_rope_head_dim */
    int32_t head_dim_v;
    int32_t q_lora_rank;     /* 0: plain attn_q */
    int32_t kv_lora_rank;
    int32_t n_layer_dense_lead;
    int32_t n_expert_shared;
    int32_t n_expert_groups; /* 0 or 1: no group limit */
    int32_t n_group_used;
    bool sigmoid_gating;     /* expert_gating_func 2, with blk.N.exp_probs_b.bias */
    bool expert_weights_norm;
    float expert_weights_scale; /* 0: not written (1) */
    float rope_yarn_factor;  /* 0: none; else rope.scaling.type "yarn" */
    int32_t rope_yarn_orig_ctx;
    float rope_yarn_log_mul;
} tn_synth_preset;

/* Progress report, called after each tensor is produced (on the thread that
 * called tn_synth_write): i of n tensors done, the tensor's name, and the
 * bytes produced so far out of the total tensor bytes. */
typedef void (*tn_synth_progress_fn)(void *ud, int64_t i, int64_t n, const char *name,
                                     uint64_t bytes_done, uint64_t bytes_total);

typedef struct tn_synth_opts {
    const char *preset;      /* a name from tn_synth_presets() */
    const char *dtype;       /* matrices: "f32", "f16", "bf16", "q8_0" or "q4_0" (any case) */
    const char *vocab_path;  /* a GGUF file with tokenizer.* metadata (tensors ignored) */
    const char *out_path;    /* the GGUF v3 file to write (replaced if it exists) */
    uint64_t seed;
    int n_threads;           /* rows are produced on this many threads (0: all cores); the file does not change */
    tn_synth_progress_fn progress; /* optional */
    void *progress_ud;
} tn_synth_opts;

/* The built-in presets (static storage); *n gets their count. */
const tn_synth_preset *tn_synth_presets(size_t *n);

/* The preset with this name, or NULL. */
const tn_synth_preset *tn_synth_find_preset(const char *name);

/* Number of weights of a preset with a vocabulary of n_vocab tokens. */
int64_t tn_synth_n_params(const tn_synth_preset *p, int64_t n_vocab);

/* Writes the model described by o. Metadata: general.architecture,
 * general.name, general.file_type (llama.cpp's numbering), the <arch>.*
 * hyper-parameters, tern.synth.preset/seed, and every tokenizer.* key of the
 * vocabulary file copied as is; n_vocab is its token count. Errors, with
 * tn_last_error() saying which: TN_ERR_NOT_FOUND for an unknown preset,
 * TN_ERR_INVALID for an unknown dtype name or a missing option,
 * TN_ERR_UNSUPPORTED for a known dtype synth cannot produce, TN_ERR_FORMAT
 * for a vocabulary without tokenizer.ggml.tokens, and whatever opening the
 * vocabulary or writing the output failed with. If the write itself fails,
 * the GGUF writer removes the partial file; on earlier failures out_path is
 * not touched. Thread-safe (no shared state). */
tn_status tn_synth_write(const tn_synth_opts *o) TN_MUST_CHECK;

#endif /* TERN_MODEL_SYNTH_H */
