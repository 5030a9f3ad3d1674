/*
 * synth.c — random-weight models of real shapes (see synth.h).
 *
 * The file is planned first, as a table of tensors (name, shape, dtype, how
 * its values are drawn), then handed to the GGUF writer with one fill
 * callback per tensor; the writer asks for each tensor's bytes when it
 * reaches it, into one reused buffer, so memory holds the largest tensor
 * once (262 MB for Llama 2 7B's F16 embedding) plus one row of floats per
 * thread. A tensor's rows are split over the thread pool; since every row
 * has its own random stream the bytes do not depend on the thread count.
 *
 * RANDOM STREAMS
 * Row r of tensor t (t = its index in the file) starts its own splitmix64
 * stream at mix(mix(mix(seed) ^ t * K1) ^ r * K2). Each draw of 64 bits
 * gives one value: the sum of its four 16-bit fields, centred, has mean 0
 * and variance ~1/3 and a bell shape bounded at about 3.5 standard
 * deviations (Irwin-Hall with n = 4), so no libm call touches the random
 * values and files are byte-identical on every IEEE machine.
 */
#include "model/synth.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- presets ------------------------------------------------------------- */

static const tn_synth_preset presets[] = {
    /* real shapes */
    {.name = "tinyllama-1.1b", .desc = "TinyLlama-1.1B (llama, GQA 32/4)", .arch = TN_ARCH_LLAMA,
     .n_ctx_train = 2048, .n_embd = 2048, .n_layer = 22, .n_head = 32, .n_head_kv = 4, .head_dim = 64, .n_ff = 5632,
     .norm_eps = 1e-5f, .rope_freq_base = 10000.0f},
    {.name = "llama-2-7b", .desc = "Llama 2 7B (llama, MHA 32/32)", .arch = TN_ARCH_LLAMA, .n_ctx_train = 4096,
     .n_embd = 4096, .n_layer = 32, .n_head = 32, .n_head_kv = 32, .head_dim = 128, .n_ff = 11008,
     .norm_eps = 1e-5f, .rope_freq_base = 10000.0f},
    {.name = "llama-3.1-8b", .desc = "Llama 3.1 8B (llama, GQA 32/8, rope_freqs)", .arch = TN_ARCH_LLAMA,
     .n_ctx_train = 131072, .n_embd = 4096, .n_layer = 32, .n_head = 32, .n_head_kv = 8, .head_dim = 128,
     .n_ff = 14336, .norm_eps = 1e-5f, .rope_freq_base = 500000.0f, .rope_freqs_llama3 = true},
    {.name = "qwen2.5-0.5b", .desc = "Qwen2.5-0.5B (qwen2, GQA 14/2, QKV biases, tied)", .arch = TN_ARCH_QWEN2,
     .n_ctx_train = 32768, .n_embd = 896, .n_layer = 24, .n_head = 14, .n_head_kv = 2, .head_dim = 64, .n_ff = 4864,
     .norm_eps = 1e-6f, .rope_freq_base = 1000000.0f, .qkv_bias = true, .tied = true},
    {.name = "qwen3-0.6b", .desc = "Qwen3-0.6B (qwen3, GQA 16/8, head_dim 128, q/k norms, tied)",
     .arch = TN_ARCH_QWEN3, .n_ctx_train = 40960, .n_embd = 1024, .n_layer = 28, .n_head = 16, .n_head_kv = 8,
     .head_dim = 128, .n_ff = 3072, .norm_eps = 1e-6f, .rope_freq_base = 1000000.0f, .qk_norm = true, .tied = true},
    /* tiny test shapes */
    {.name = "tiny-llama", .desc = "test: llama, 64 wide, 2 layers, GQA 4/2, separate output",
     .arch = TN_ARCH_LLAMA, .n_ctx_train = 512, .n_embd = 64, .n_layer = 2, .n_head = 4, .n_head_kv = 2,
     .head_dim = 16, .n_ff = 96, .norm_eps = 1e-5f, .rope_freq_base = 10000.0f},
    {.name = "tiny-llama-rope-linear", .desc = "test: tiny-llama with linear rope scaling, factor 2",
     .arch = TN_ARCH_LLAMA, .n_ctx_train = 512, .n_embd = 64, .n_layer = 2, .n_head = 4, .n_head_kv = 2,
     .head_dim = 16, .n_ff = 96, .norm_eps = 1e-5f, .rope_freq_base = 10000.0f, .rope_scale_linear = 2.0f},
    {.name = "tiny-llama3", .desc = "test: tiny-llama with Llama 3.1 rope_freqs, rope base 500000",
     .arch = TN_ARCH_LLAMA, .n_ctx_train = 512, .n_embd = 64, .n_layer = 2, .n_head = 4, .n_head_kv = 2,
     .head_dim = 16, .n_ff = 96, .norm_eps = 1e-5f, .rope_freq_base = 500000.0f, .rope_freqs_llama3 = true},
    {.name = "tiny-qwen2", .desc = "test: qwen2, 64 wide, 2 layers, GQA 4/2, QKV biases, tied",
     .arch = TN_ARCH_QWEN2, .n_ctx_train = 512, .n_embd = 64, .n_layer = 2, .n_head = 4, .n_head_kv = 2,
     .head_dim = 16, .n_ff = 128, .norm_eps = 1e-6f, .rope_freq_base = 1000000.0f, .qkv_bias = true, .tied = true},
    {.name = "tiny-qwen3", .desc = "test: qwen3, 64 wide, 2 layers, GQA 4/2, head_dim 32, q/k norms, tied",
     .arch = TN_ARCH_QWEN3, .n_ctx_train = 512, .n_embd = 64, .n_layer = 2, .n_head = 4, .n_head_kv = 2,
     .head_dim = 32, .n_ff = 128, .norm_eps = 1e-6f, .rope_freq_base = 1000000.0f, .qk_norm = true, .tied = true},
    /* mixture of experts, real shapes (layers cut so Q8_0 fits 24 GiB) */
    {.name = "mixtral-like", .desc = "Mixtral 8x7B shapes (llama + 8 experts, top-2), 14 of 32 layers: ~20 GiB Q8_0",
     .arch = TN_ARCH_LLAMA, .n_ctx_train = 32768, .n_embd = 4096, .n_layer = 14, .n_head = 32, .n_head_kv = 8,
     .head_dim = 128, .n_ff = 14336, .norm_eps = 1e-5f, .rope_freq_base = 1000000.0f, .n_expert = 8,
     .n_expert_used = 2},
    {.name = "qwen3-30b-a3b-like", .desc = "Qwen3-30B-A3B shapes (128 experts, top-8), 32 of 48 layers: ~20 GiB Q8_0",
     .arch = TN_ARCH_QWEN3MOE, .n_ctx_train = 40960, .n_embd = 2048, .n_layer = 32, .n_head = 32, .n_head_kv = 4,
     .head_dim = 128, .n_ff = 6144, .norm_eps = 1e-6f, .rope_freq_base = 1000000.0f, .qk_norm = true,
     .n_expert = 128, .n_expert_used = 8, .n_ff_exp = 768},
    {.name = "deepseek-v2-lite", .desc = "DeepSeek-V2-Lite (deepseek2: MLA kv_lora 512, 64 experts top-6 + 2 shared, YaRN)",
     .arch = TN_ARCH_DEEPSEEK2, .n_ctx_train = 163840, .n_embd = 2048, .n_layer = 27, .n_head = 16, .n_head_kv = 16,
     .head_dim = 192, .n_ff = 10944, .norm_eps = 1e-6f, .rope_freq_base = 10000.0f, .n_expert = 64,
     .n_expert_used = 6, .n_ff_exp = 1408, .n_rot = 64, .head_dim_v = 128, .kv_lora_rank = 512,
     .n_layer_dense_lead = 1, .n_expert_shared = 2, .expert_weights_scale = 1.0f, .rope_yarn_factor = 40.0f,
     .rope_yarn_orig_ctx = 4096, .rope_yarn_log_mul = 0.0707f},
    /* mixture of experts, tiny test shapes */
    {.name = "tiny-mixtral", .desc = "test: llama + 4 experts (Mixtral), top-2, 64 wide, 2 layers, GQA 4/2",
     .arch = TN_ARCH_LLAMA, .n_ctx_train = 512, .n_embd = 64, .n_layer = 2, .n_head = 4, .n_head_kv = 2,
     .head_dim = 16, .n_ff = 96, .norm_eps = 1e-5f, .rope_freq_base = 10000.0f, .n_expert = 4, .n_expert_used = 2},
    {.name = "tiny-qwen2moe", .desc = "test: qwen2moe, 8 experts top-2 (no renorm), gated shared expert, biases, tied",
     .arch = TN_ARCH_QWEN2MOE, .n_ctx_train = 512, .n_embd = 64, .n_layer = 2, .n_head = 4, .n_head_kv = 2,
     .head_dim = 16, .n_ff = 128, .norm_eps = 1e-6f, .rope_freq_base = 1000000.0f, .qkv_bias = true,
     .tied = true, .n_expert = 8, .n_expert_used = 2, .n_ff_exp = 32, .n_ff_shexp = 64, .shexp_gate = true},
    {.name = "tiny-qwen3moe", .desc = "test: qwen3moe, 8 experts top-3 (renormalized), q/k norms, head_dim 32, tied",
     .arch = TN_ARCH_QWEN3MOE, .n_ctx_train = 512, .n_embd = 64, .n_layer = 2, .n_head = 4, .n_head_kv = 2,
     .head_dim = 32, .n_ff = 128, .norm_eps = 1e-6f, .rope_freq_base = 1000000.0f, .qk_norm = true, .tied = true,
     .n_expert = 8, .n_expert_used = 3, .n_ff_exp = 32},
    {.name = "tiny-deepseek2", .desc = "test: deepseek2 (V2): MLA with q LoRA, 1 dense layer, 8 experts top-2 + 1 shared, YaRN",
     .arch = TN_ARCH_DEEPSEEK2, .n_ctx_train = 512, .n_embd = 64, .n_layer = 2, .n_head = 4, .n_head_kv = 4,
     .head_dim = 48, .n_ff = 96, .norm_eps = 1e-6f, .rope_freq_base = 10000.0f, .n_expert = 8, .n_expert_used = 2,
     .n_ff_exp = 32, .n_rot = 16, .head_dim_v = 32, .q_lora_rank = 32, .kv_lora_rank = 32, .n_layer_dense_lead = 1,
     .n_expert_shared = 1, .expert_weights_scale = 1.5f, .rope_yarn_factor = 4.0f, .rope_yarn_orig_ctx = 128,
     .rope_yarn_log_mul = 0.0707f},
    {.name = "tiny-deepseek3", .desc = "test: deepseek2 (V3 routing): plain attn_q, sigmoid + bias, 4 groups (2 used), top-3",
     .arch = TN_ARCH_DEEPSEEK2, .n_ctx_train = 512, .n_embd = 64, .n_layer = 3, .n_head = 4, .n_head_kv = 4,
     .head_dim = 48, .n_ff = 96, .norm_eps = 1e-6f, .rope_freq_base = 10000.0f, .n_expert = 8, .n_expert_used = 3,
     .n_ff_exp = 32, .n_rot = 16, .head_dim_v = 32, .kv_lora_rank = 32, .n_layer_dense_lead = 1,
     .n_expert_shared = 1, .n_expert_groups = 4, .n_group_used = 2, .sigmoid_gating = true,
     .expert_weights_norm = true, .expert_weights_scale = 2.5f},
};

const tn_synth_preset *tn_synth_presets(size_t *n)
{
    if (n)
        *n = TN_ARRAY_LEN(presets);
    return presets;
}

const tn_synth_preset *tn_synth_find_preset(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < TN_ARRAY_LEN(presets); i++)
        if (!strcmp(presets[i].name, name))
            return &presets[i];
    return NULL;
}

static const char *arch_name(tn_arch a)
{
    switch (a) {
    case TN_ARCH_LLAMA:
        return "llama";
    case TN_ARCH_QWEN2:
        return "qwen2";
    case TN_ARCH_QWEN3:
        return "qwen3";
    case TN_ARCH_QWEN2MOE:
        return "qwen2moe";
    case TN_ARCH_QWEN3MOE:
        return "qwen3moe";
    case TN_ARCH_DEEPSEEK2:
        return "deepseek2";
    }
    return "unknown";
}

/* --- the tensor plan ----------------------------------------------------- */

typedef enum value_kind {
    KIND_MATRIX,     /* ~N(0, 1/ne[0]) */
    KIND_NORM,       /* 1 + N(0, NORM_STD^2) */
    KIND_BIAS,       /* N(0, BIAS_STD^2) */
    KIND_ROPE_FREQS, /* Llama 3.1 frequency factors, not random */
} value_kind;

#define NORM_STD 0.05f
#define BIAS_STD 0.02f

/* Llama 3.1's rope scaling parameters (its config.json rope_scaling). */
#define LLAMA3_FACTOR 8.0
#define LLAMA3_LOW_FREQ_FACTOR 1.0
#define LLAMA3_HIGH_FREQ_FACTOR 4.0
#define LLAMA3_ORIG_CTX 8192.0

typedef struct synth_job synth_job;

typedef struct synth_tensor {
    char name[48];
    tn_dtype type;
    int n_dims;
    int64_t ne[3];       /* ne[0] contiguous (n_in for matrices); ne[1] = 1 for vectors; ne[2] experts (else 1) */
    value_kind kind;
    uint64_t index;      /* position in the file: selects the random stream */
    uint64_t nbytes;
    synth_job *job;
} synth_tensor;

struct synth_job {
    const tn_synth_preset *p;
    uint64_t seed;
    synth_tensor *t;     /* (n_tensors) */
    int64_t n_tensors;
    int64_t n_done;
    uint64_t bytes_done, bytes_total;
    tn_synth_progress_fn progress;
    void *progress_ud;
    tn_pool *pool;       /* NULL: one thread */
    float **rows;        /* (pool threads) one row buffer each, max_ne0 floats */
};

static tn_status plan_add3(synth_job *j, int64_t cap, value_kind kind, tn_dtype type, int64_t ne0, int64_t ne1,
                           int64_t ne2, const char *fmt, int layer)
{
    if (j->n_tensors >= cap)
        return tn__err(TN_ERR_FULL, "synth: tensor plan overflow (%" PRId64 " tensors)", cap);
    synth_tensor *t = &j->t[j->n_tensors];
    memset(t, 0, sizeof *t);
    if (layer >= 0)
        snprintf(t->name, sizeof t->name, fmt, layer);
    else
        snprintf(t->name, sizeof t->name, "%s", fmt);
    t->type = type;
    t->n_dims = ne2 > 1 ? 3 : ne1 > 1 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = ne2;
    t->kind = kind;
    t->index = (uint64_t)j->n_tensors;
    const tn_dtype_traits *tr = tn_dtype_traits_of(type);
    if (ne0 % tr->block_size != 0)
        return tn__err(TN_ERR_UNSUPPORTED, "synth: tensor '%s' has rows of %" PRId64 " elements, not a multiple of "
                                           "%s's block of %d",
                       t->name, ne0, tr->name, tr->block_size);
    t->nbytes = (uint64_t)tn_dtype_row_size(type, ne0) * (uint64_t)ne1 * (uint64_t)ne2;
    t->job = j;
    j->bytes_total += t->nbytes;
    j->n_tensors++;
    return TN_OK;
}

#define PLAN3(kind, type, ne0, ne1, ne2, fmt, layer)                           \
    do {                                                                       \
        tn_status s_ = plan_add3(j, cap, kind, type, ne0, ne1, ne2, fmt, layer); \
        if (s_ != TN_OK)                                                       \
            return s_;                                                         \
    } while (0)
#define PLAN(kind, type, ne0, ne1, fmt, layer) PLAN3(kind, type, ne0, ne1, 1, fmt, layer)

/* The layers, final norm and output of a deepseek2 preset (after the embedding). */
static tn_status plan_deepseek2(synth_job *j, int64_t cap, tn_dtype wt, int64_t n_vocab)
{
    const tn_synth_preset *p = j->p;
    const int64_t D = p->n_embd, H = p->n_head, qd = H * p->head_dim, nope = p->head_dim - p->n_rot;
    const int64_t kvr = p->kv_lora_rank, qlr = p->q_lora_rank, ne = p->n_expert, fe = p->n_ff_exp;
    const int64_t fs = fe * p->n_expert_shared;
    const tn_dtype f32 = TN_DTYPE_F32;
    for (int l = 0; l < p->n_layer; l++) {
        PLAN(KIND_NORM, f32, D, 1, "blk.%d.attn_norm.weight", l);
        if (qlr > 0) {
            PLAN(KIND_MATRIX, wt, D, qlr, "blk.%d.attn_q_a.weight", l);
            PLAN(KIND_NORM, f32, qlr, 1, "blk.%d.attn_q_a_norm.weight", l);
            PLAN(KIND_MATRIX, wt, qlr, qd, "blk.%d.attn_q_b.weight", l);
        } else {
            PLAN(KIND_MATRIX, wt, D, qd, "blk.%d.attn_q.weight", l);
        }
        PLAN(KIND_MATRIX, wt, D, kvr + p->n_rot, "blk.%d.attn_kv_a_mqa.weight", l);
        PLAN(KIND_NORM, f32, kvr, 1, "blk.%d.attn_kv_a_norm.weight", l);
        PLAN(KIND_MATRIX, wt, kvr, H * (nope + p->head_dim_v), "blk.%d.attn_kv_b.weight", l);
        PLAN(KIND_MATRIX, wt, H * p->head_dim_v, D, "blk.%d.attn_output.weight", l);
        PLAN(KIND_NORM, f32, D, 1, "blk.%d.ffn_norm.weight", l);
        if (l < p->n_layer_dense_lead) {
            PLAN(KIND_MATRIX, wt, D, p->n_ff, "blk.%d.ffn_gate.weight", l);
            PLAN(KIND_MATRIX, wt, D, p->n_ff, "blk.%d.ffn_up.weight", l);
            PLAN(KIND_MATRIX, wt, p->n_ff, D, "blk.%d.ffn_down.weight", l);
            continue;
        }
        PLAN(KIND_MATRIX, wt, D, ne, "blk.%d.ffn_gate_inp.weight", l);
        if (p->sigmoid_gating)
            PLAN(KIND_BIAS, f32, ne, 1, "blk.%d.exp_probs_b.bias", l);
        PLAN3(KIND_MATRIX, wt, D, fe, ne, "blk.%d.ffn_gate_exps.weight", l);
        PLAN3(KIND_MATRIX, wt, D, fe, ne, "blk.%d.ffn_up_exps.weight", l);
        PLAN3(KIND_MATRIX, wt, fe, D, ne, "blk.%d.ffn_down_exps.weight", l);
        if (fs > 0) {
            PLAN(KIND_MATRIX, wt, D, fs, "blk.%d.ffn_gate_shexp.weight", l);
            PLAN(KIND_MATRIX, wt, D, fs, "blk.%d.ffn_up_shexp.weight", l);
            PLAN(KIND_MATRIX, wt, fs, D, "blk.%d.ffn_down_shexp.weight", l);
        }
    }
    PLAN(KIND_NORM, f32, D, 1, "output_norm.weight", -1);
    if (!p->tied)
        PLAN(KIND_MATRIX, wt, D, n_vocab, "output.weight", -1);
    return TN_OK;
}

/* Fills j->t with the tensors of preset p in file order: the embedding, the
 * rope factors, every layer, the final norm and the output. */
static tn_status plan_tensors(synth_job *j, int64_t cap, tn_dtype wt, int64_t n_vocab)
{
    const tn_synth_preset *p = j->p;
    const int64_t n_embd = p->n_embd, n_ff = p->n_ff;
    const int64_t n_q = (int64_t)p->n_head * p->head_dim, n_kv = (int64_t)p->n_head_kv * p->head_dim;
    const tn_dtype f32 = TN_DTYPE_F32;

    PLAN(KIND_MATRIX, wt, n_embd, n_vocab, "token_embd.weight", -1);
    if (p->arch == TN_ARCH_DEEPSEEK2)
        return plan_deepseek2(j, cap, wt, n_vocab);
    if (p->rope_freqs_llama3)
        PLAN(KIND_ROPE_FREQS, f32, p->head_dim / 2, 1, "rope_freqs.weight", -1);
    for (int l = 0; l < p->n_layer; l++) {
        PLAN(KIND_NORM, f32, n_embd, 1, "blk.%d.attn_norm.weight", l);
        PLAN(KIND_MATRIX, wt, n_embd, n_q, "blk.%d.attn_q.weight", l);
        if (p->qkv_bias)
            PLAN(KIND_BIAS, f32, n_q, 1, "blk.%d.attn_q.bias", l);
        PLAN(KIND_MATRIX, wt, n_embd, n_kv, "blk.%d.attn_k.weight", l);
        if (p->qkv_bias)
            PLAN(KIND_BIAS, f32, n_kv, 1, "blk.%d.attn_k.bias", l);
        PLAN(KIND_MATRIX, wt, n_embd, n_kv, "blk.%d.attn_v.weight", l);
        if (p->qkv_bias)
            PLAN(KIND_BIAS, f32, n_kv, 1, "blk.%d.attn_v.bias", l);
        if (p->qk_norm) {
            PLAN(KIND_NORM, f32, p->head_dim, 1, "blk.%d.attn_q_norm.weight", l);
            PLAN(KIND_NORM, f32, p->head_dim, 1, "blk.%d.attn_k_norm.weight", l);
        }
        PLAN(KIND_MATRIX, wt, n_q, n_embd, "blk.%d.attn_output.weight", l);
        PLAN(KIND_NORM, f32, n_embd, 1, "blk.%d.ffn_norm.weight", l);
        if (p->n_expert > 0) {
            const int64_t ne = p->n_expert, fe = p->arch == TN_ARCH_LLAMA ? n_ff : p->n_ff_exp, fs = p->n_ff_shexp;
            PLAN(KIND_MATRIX, wt, n_embd, ne, "blk.%d.ffn_gate_inp.weight", l);
            PLAN3(KIND_MATRIX, wt, n_embd, fe, ne, "blk.%d.ffn_gate_exps.weight", l);
            PLAN3(KIND_MATRIX, wt, n_embd, fe, ne, "blk.%d.ffn_up_exps.weight", l);
            PLAN3(KIND_MATRIX, wt, fe, n_embd, ne, "blk.%d.ffn_down_exps.weight", l);
            if (p->shexp_gate)
                PLAN(KIND_MATRIX, f32, n_embd, 1, "blk.%d.ffn_gate_inp_shexp.weight", l);
            if (fs > 0) {
                PLAN(KIND_MATRIX, wt, n_embd, fs, "blk.%d.ffn_gate_shexp.weight", l);
                PLAN(KIND_MATRIX, wt, n_embd, fs, "blk.%d.ffn_up_shexp.weight", l);
                PLAN(KIND_MATRIX, wt, fs, n_embd, "blk.%d.ffn_down_shexp.weight", l);
            }
            continue;
        }
        PLAN(KIND_MATRIX, wt, n_embd, n_ff, "blk.%d.ffn_gate.weight", l);
        PLAN(KIND_MATRIX, wt, n_embd, n_ff, "blk.%d.ffn_up.weight", l);
        PLAN(KIND_MATRIX, wt, n_ff, n_embd, "blk.%d.ffn_down.weight", l);
    }
    PLAN(KIND_NORM, f32, n_embd, 1, "output_norm.weight", -1);
    if (!p->tied)
        PLAN(KIND_MATRIX, wt, n_embd, n_vocab, "output.weight", -1);
    return TN_OK;
}

#undef PLAN
#undef PLAN3

static int64_t plan_capacity(const tn_synth_preset *p) { return 4 + (int64_t)p->n_layer * 24; }

static int64_t n_params_deepseek2(const tn_synth_preset *p, int64_t n_vocab)
{
    const int64_t D = p->n_embd, H = p->n_head, qd = H * p->head_dim, nope = p->head_dim - p->n_rot;
    const int64_t kvr = p->kv_lora_rank, qlr = p->q_lora_rank, fe = p->n_ff_exp, ne = p->n_expert;
    int64_t attn = 2 * D + (qlr > 0 ? D * qlr + qlr + qlr * qd : D * qd) + D * (kvr + p->n_rot) + kvr +
                   kvr * H * (nope + p->head_dim_v) + H * p->head_dim_v * D;
    int64_t dense = 3 * D * p->n_ff;
    int64_t moe = D * ne + 3 * D * fe * (ne + p->n_expert_shared) + (p->sigmoid_gating ? ne : 0);
    int64_t n = n_vocab * D * (p->tied ? 1 : 2) + D + (int64_t)p->n_layer * attn;
    return n + (int64_t)p->n_layer_dense_lead * dense + (int64_t)(p->n_layer - p->n_layer_dense_lead) * moe;
}

int64_t tn_synth_n_params(const tn_synth_preset *p, int64_t n_vocab)
{
    if (p->arch == TN_ARCH_DEEPSEEK2)
        return n_params_deepseek2(p, n_vocab);
    const int64_t n_embd = p->n_embd, n_ff = p->n_ff;
    const int64_t n_q = (int64_t)p->n_head * p->head_dim, n_kv = (int64_t)p->n_head_kv * p->head_dim;
    int64_t per_layer = 2 * n_embd + n_embd * n_q + 2 * n_embd * n_kv + n_q * n_embd + 3 * n_embd * n_ff;
    if (p->n_expert > 0) {
        const int64_t fe = p->arch == TN_ARCH_LLAMA ? n_ff : p->n_ff_exp;
        per_layer += n_embd * p->n_expert + 3 * n_embd * fe * p->n_expert + 3 * n_embd * p->n_ff_shexp - 3 * n_embd * n_ff;
        if (p->shexp_gate)
            per_layer += n_embd;
    }
    if (p->qkv_bias)
        per_layer += n_q + 2 * n_kv;
    if (p->qk_norm)
        per_layer += 2 * (int64_t)p->head_dim;
    int64_t n = n_vocab * n_embd + n_embd + (int64_t)p->n_layer * per_layer;
    if (!p->tied)
        n += n_vocab * n_embd;
    if (p->rope_freqs_llama3)
        n += p->head_dim / 2;
    return n;
}

/* --- values -------------------------------------------------------------- */

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t splitmix64(uint64_t *s)
{
    *s += 0x9E3779B97F4A7C15ull;
    return mix64(*s);
}

/* A value with mean 0 and variance 1 (bell-shaped, |x| < 3.47). */
static inline float draw_unit(uint64_t *s)
{
    const uint64_t r = splitmix64(s);
    const uint32_t sum = (uint32_t)(r & 0xffff) + (uint32_t)((r >> 16) & 0xffff) +
                         (uint32_t)((r >> 32) & 0xffff) + (uint32_t)(r >> 48);
    /* sum of four U{0..65535}: mean 131070, variance 4 * (65536^2 - 1) / 12 */
    return ((float)sum - 131070.0f) * (1.7320508f / 65536.0f);
}

/* The Llama 3.1 factor of frequency pair i of n_rot: 1 for short
 * wavelengths, LLAMA3_FACTOR for long ones, a smooth blend in between. */
static float llama3_factor(double base, int i, int n_rot)
{
    const double pi = 3.14159265358979323846;
    const double freq = 1.0 / pow(base, (double)(2 * i) / (double)n_rot);
    const double wavelen = 2.0 * pi / freq;
    const double low_wavelen = LLAMA3_ORIG_CTX / LLAMA3_LOW_FREQ_FACTOR;
    const double high_wavelen = LLAMA3_ORIG_CTX / LLAMA3_HIGH_FREQ_FACTOR;
    if (wavelen < high_wavelen)
        return 1.0f;
    if (wavelen > low_wavelen)
        return (float)LLAMA3_FACTOR;
    const double smooth = (LLAMA3_ORIG_CTX / wavelen - LLAMA3_LOW_FREQ_FACTOR) /
                          (LLAMA3_HIGH_FREQ_FACTOR - LLAMA3_LOW_FREQ_FACTOR);
    return (float)(1.0 / ((1.0 - smooth) / LLAMA3_FACTOR + smooth));
}

/* Row r of tensor t as floats (ne[0] of them). */
static void gen_row(const synth_tensor *t, int64_t r, float *out)
{
    const int64_t n = t->ne[0];
    uint64_t s = mix64(mix64(mix64(t->job->seed) ^ (t->index * 0xD1B54A32D192ED03ull)) ^
                       ((uint64_t)r * 0x8CB92BA72F3D8DD7ull));
    switch (t->kind) {
    case KIND_MATRIX: {
        const float std = 1.0f / sqrtf((float)n);
        for (int64_t i = 0; i < n; i++)
            out[i] = draw_unit(&s) * std;
        break;
    }
    case KIND_NORM:
        for (int64_t i = 0; i < n; i++)
            out[i] = 1.0f + draw_unit(&s) * NORM_STD;
        break;
    case KIND_BIAS:
        for (int64_t i = 0; i < n; i++)
            out[i] = draw_unit(&s) * BIAS_STD;
        break;
    case KIND_ROPE_FREQS:
        for (int64_t i = 0; i < n; i++)
            out[i] = llama3_factor(t->job->p->rope_freq_base, (int)i, (int)(2 * n));
        break;
    }
}

/* One tensor's rows split over the pool: thread ith produces rows
 * [ith * R / nth, (ith + 1) * R / nth) into its own row buffer. Each row has
 * its own stream, so the bytes do not depend on nth. */
typedef struct fill_work {
    const synth_tensor *t;
    uint8_t *dst;
    size_t row_bytes;
    _Atomic int failed;  /* first failing status (0: none); messages are per thread */
} fill_work;

static void fill_rows(void *ctx, int ith, int nth)
{
    fill_work *fw = ctx;
    const synth_tensor *t = fw->t;
    const int64_t rows = t->ne[1] * t->ne[2], r0 = rows * ith / nth, r1 = rows * (ith + 1) / nth;
    float *row = t->job->rows[ith];
    for (int64_t r = r0; r < r1; r++) {
        gen_row(t, r, row);
        tn_status s = tn_quantize_row(t->type, row, fw->dst + (size_t)r * fw->row_bytes, t->ne[0]);
        if (s != TN_OK) {
            int zero = 0;
            atomic_compare_exchange_strong(&fw->failed, &zero, (int)s);
            return;
        }
    }
}

/* The writer's fill callback: produces tensor ctx's bytes. */
static tn_status fill_tensor(void *ctx, void *dst, size_t nbytes)
{
    synth_tensor *t = ctx;
    synth_job *j = t->job;
    if ((uint64_t)nbytes != t->nbytes)
        return tn__err(TN_ERR_INVALID, "synth: writer asked for %zu bytes of '%s', which has %" PRIu64, nbytes,
                       t->name, t->nbytes);
    fill_work fw = {.t = t, .dst = dst, .row_bytes = tn_dtype_row_size(t->type, t->ne[0])};
    atomic_init(&fw.failed, 0);
    tn_pool_run(j->pool, fill_rows, &fw);
    const int failed = atomic_load(&fw.failed);
    if (failed)
        return tn__err((tn_status)failed, "synth: tensor '%s': converting rows to %s failed", t->name,
                       tn_dtype_traits_of(t->type)->name);
    j->n_done++;
    j->bytes_done += t->nbytes;
    if (j->progress)
        j->progress(j->progress_ud, j->n_done, j->n_tensors, t->name, j->bytes_done, j->bytes_total);
    return TN_OK;
}

/* --- metadata ------------------------------------------------------------ */

/* llama.cpp's LLAMA_FTYPE for a file whose matrices are all of type t. */
static bool file_type_of(tn_dtype t, uint32_t *ft)
{
    switch (t) {
    case TN_DTYPE_F32:
        *ft = 0;
        return true;
    case TN_DTYPE_F16:
        *ft = 1;
        return true;
    case TN_DTYPE_Q4_0:
        *ft = 2;
        return true;
    case TN_DTYPE_Q8_0:
        *ft = 7;
        return true;
    case TN_DTYPE_BF16:
        *ft = 32;
        return true;
    default:
        return false;
    }
}

#define TRY(expr)                  \
    do {                           \
        tn_status s_ = (expr);     \
        if (s_ != TN_OK)           \
            return s_;             \
    } while (0)

static tn_status set_arch_u32(tn_gguf_writer *w, const char *arch, const char *key, uint32_t v)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return tn_gguf_set_u32(w, k, v);
}

static tn_status set_arch_f32(tn_gguf_writer *w, const char *arch, const char *key, float v)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return tn_gguf_set_f32(w, k, v);
}

static tn_status set_metadata(tn_gguf_writer *w, const tn_synth_preset *p, tn_dtype wt, uint64_t seed,
                              uint32_t n_vocab)
{
    const char *arch = arch_name(p->arch);
    uint32_t ft = 0;
    (void)file_type_of(wt, &ft);
    char name[128];
    snprintf(name, sizeof name, "synth-%s-%s", p->name, tn_dtype_traits_of(wt)->name);

    TRY(tn_gguf_set_str(w, "general.architecture", arch));
    TRY(tn_gguf_set_str(w, "general.name", name));
    TRY(tn_gguf_set_u32(w, "general.file_type", ft));
    if (tn_dtype_traits_of(wt)->block_size > 1)
        TRY(tn_gguf_set_u32(w, "general.quantization_version", 2));
    TRY(tn_gguf_set_str(w, "tern.synth.preset", p->name));
    TRY(tn_gguf_set_u64(w, "tern.synth.seed", seed));

    TRY(set_arch_u32(w, arch, "vocab_size", n_vocab));
    TRY(set_arch_u32(w, arch, "context_length", (uint32_t)p->n_ctx_train));
    TRY(set_arch_u32(w, arch, "embedding_length", (uint32_t)p->n_embd));
    TRY(set_arch_u32(w, arch, "block_count", (uint32_t)p->n_layer));
    TRY(set_arch_u32(w, arch, "feed_forward_length", (uint32_t)p->n_ff));
    TRY(set_arch_u32(w, arch, "attention.head_count", (uint32_t)p->n_head));
    TRY(set_arch_u32(w, arch, "attention.head_count_kv", (uint32_t)p->n_head_kv));
    const bool ds = p->arch == TN_ARCH_DEEPSEEK2;
    if (p->head_dim * p->n_head != p->n_embd || p->arch == TN_ARCH_QWEN3 || p->arch == TN_ARCH_QWEN3MOE || ds) {
        TRY(set_arch_u32(w, arch, "attention.key_length", (uint32_t)p->head_dim));
        TRY(set_arch_u32(w, arch, "attention.value_length", (uint32_t)(ds ? p->head_dim_v : p->head_dim)));
    }
    TRY(set_arch_f32(w, arch, "attention.layer_norm_rms_epsilon", p->norm_eps));
    TRY(set_arch_u32(w, arch, "rope.dimension_count", (uint32_t)(ds ? p->n_rot : p->head_dim)));
    TRY(set_arch_f32(w, arch, "rope.freq_base", p->rope_freq_base));
    if (p->rope_scale_linear > 0.0f) {
        char k[128];
        snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
        TRY(tn_gguf_set_str(w, k, "linear"));
        TRY(set_arch_f32(w, arch, "rope.scaling.factor", p->rope_scale_linear));
    }
    if (p->n_expert > 0) {
        TRY(set_arch_u32(w, arch, "expert_count", (uint32_t)p->n_expert));
        TRY(set_arch_u32(w, arch, "expert_used_count", (uint32_t)p->n_expert_used));
        if (p->arch != TN_ARCH_LLAMA)
            TRY(set_arch_u32(w, arch, "expert_feed_forward_length", (uint32_t)p->n_ff_exp));
        if (p->n_ff_shexp > 0)
            TRY(set_arch_u32(w, arch, "expert_shared_feed_forward_length", (uint32_t)p->n_ff_shexp));
    }
    if (ds) {
        if (p->q_lora_rank > 0)
            TRY(set_arch_u32(w, arch, "attention.q_lora_rank", (uint32_t)p->q_lora_rank));
        TRY(set_arch_u32(w, arch, "attention.kv_lora_rank", (uint32_t)p->kv_lora_rank));
        TRY(set_arch_u32(w, arch, "leading_dense_block_count", (uint32_t)p->n_layer_dense_lead));
        TRY(set_arch_u32(w, arch, "expert_shared_count", (uint32_t)p->n_expert_shared));
        TRY(set_arch_f32(w, arch, "expert_weights_scale", p->expert_weights_scale > 0 ? p->expert_weights_scale : 1.0f));
        char k[128];
        snprintf(k, sizeof k, "%s.expert_weights_norm", arch);
        TRY(tn_gguf_set_bool(w, k, p->expert_weights_norm));
        TRY(set_arch_u32(w, arch, "expert_gating_func", p->sigmoid_gating ? 2u : 1u));
        if (p->n_expert_groups > 1) {
            TRY(set_arch_u32(w, arch, "expert_group_count", (uint32_t)p->n_expert_groups));
            TRY(set_arch_u32(w, arch, "expert_group_used_count", (uint32_t)p->n_group_used));
        }
        if (p->rope_yarn_factor > 0) {
            snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
            TRY(tn_gguf_set_str(w, k, "yarn"));
            TRY(set_arch_f32(w, arch, "rope.scaling.factor", p->rope_yarn_factor));
            TRY(set_arch_u32(w, arch, "rope.scaling.original_context_length", (uint32_t)p->rope_yarn_orig_ctx));
            TRY(set_arch_f32(w, arch, "rope.scaling.yarn_log_multiplier", p->rope_yarn_log_mul));
        }
    }
    return TN_OK;
}

/* Copies every tokenizer.* key of the vocabulary file; *n_vocab gets the
 * length of tokenizer.ggml.tokens. */
static tn_status copy_vocab(tn_gguf_writer *w, const char *path, uint32_t *n_vocab)
{
    tn_gguf *v = NULL;
    tn_status s = tn_gguf_open(path, &v);
    if (s != TN_OK)
        return tn__err_prefix(s, "synth: vocabulary");
    tn_gguf_type et;
    uint64_t n = 0;
    const void *data = NULL;
    if (tn_gguf_find_key(v, "tokenizer.ggml.tokens") < 0) {
        s = tn__err(TN_ERR_FORMAT, "synth: vocabulary %s has no tokenizer.ggml.tokens (not a vocabulary file?)",
                    path);
        goto out;
    }
    s = tn_gguf_get_arr(v, "tokenizer.ggml.tokens", &et, &n, &data);
    if (s == TN_OK && et != TN_GGUF_STRING)
        s = tn__err(TN_ERR_FORMAT, "synth: vocabulary %s: tokenizer.ggml.tokens is not a string array", path);
    if (s == TN_OK && (n == 0 || n > INT32_MAX))
        s = tn__err(TN_ERR_RANGE, "synth: vocabulary %s has %" PRIu64 " tokens", path, n);
    if (s != TN_OK)
        goto out;
    *n_vocab = (uint32_t)n;
    for (int64_t i = 0; i < tn_gguf_n_kv(v) && s == TN_OK; i++)
        if (!strncmp(tn_gguf_kv_key(v, i), "tokenizer.", 10))
            s = tn_gguf_set_from(w, v, i);
out:
    tn_gguf_free(v);
    return s;
}

/* --- the write ----------------------------------------------------------- */

tn_status tn_synth_write(const tn_synth_opts *o)
{
    if (!o || !o->preset || !o->dtype || !o->vocab_path || !o->out_path)
        return tn__err(TN_ERR_INVALID, "synth: preset, dtype, vocabulary and output path are all required");
    const tn_synth_preset *p = tn_synth_find_preset(o->preset);
    if (!p)
        return tn__err(TN_ERR_NOT_FOUND, "synth: unknown preset '%s' (`tern synth --list` names them)", o->preset);
    tn_dtype wt;
    if (!tn_dtype_from_name(o->dtype, &wt))
        return tn__err(TN_ERR_INVALID, "synth: unknown dtype '%s' (use f32, f16, bf16, q8_0 or q4_0)", o->dtype);
    uint32_t ft;
    if (!file_type_of(wt, &ft))
        return tn__err(TN_ERR_UNSUPPORTED, "synth: dtype '%s' is not supported (use f32, f16, bf16, q8_0 or q4_0)",
                       o->dtype);

    synth_job j = {.p = p, .seed = o->seed, .progress = o->progress, .progress_ud = o->progress_ud};
    tn_gguf_writer *w = NULL;
    const int64_t cap = plan_capacity(p);
    j.t = calloc((size_t)cap, sizeof *j.t);
    if (!j.t)
        return tn__err(TN_ERR_NOMEM, "synth: no memory for the tensor plan");
    tn_status s = tn_gguf_writer_new(&w);
    uint32_t n_vocab = 0;
    if (s == TN_OK)
        s = copy_vocab(w, o->vocab_path, &n_vocab);
    if (s == TN_OK)
        s = set_metadata(w, p, wt, o->seed, n_vocab);
    if (s == TN_OK)
        s = plan_tensors(&j, cap, wt, n_vocab);
    int n_threads = 1;
    if (s == TN_OK && o->n_threads != 1) {
        s = tn_pool_new(o->n_threads, &j.pool);
        if (s == TN_OK)
            n_threads = tn_pool_size(j.pool);
    }
    int64_t max_ne0 = 1;
    for (int64_t i = 0; i < j.n_tensors; i++)
        max_ne0 = TN_MAX(max_ne0, j.t[i].ne[0]);
    if (s == TN_OK && !(j.rows = calloc((size_t)n_threads, sizeof *j.rows)))
        s = tn__err(TN_ERR_NOMEM, "synth: no memory for row buffers");
    for (int i = 0; i < n_threads && s == TN_OK; i++)
        if (!(j.rows[i] = malloc((size_t)max_ne0 * sizeof(float))))
            s = tn__err(TN_ERR_NOMEM, "synth: no memory for row buffers");
    for (int64_t i = 0; i < j.n_tensors && s == TN_OK; i++) {
        synth_tensor *t = &j.t[i];
        s = tn_gguf_add_tensor_fn(w, t->name, t->type, t->n_dims, t->ne, fill_tensor, t);
    }
    if (s == TN_OK) {
        s = tn_gguf_writer_write(w, o->out_path); /* removes a partial file itself */
        if (s != TN_OK)
            s = tn__err_prefix(s, "synth: writing %s", o->out_path);
    }
    for (int i = 0; j.rows && i < n_threads; i++)
        free(j.rows[i]);
    free(j.rows);
    tn_pool_free(j.pool);
    tn_gguf_writer_free(w);
    free(j.t);
    return s;
}
