/*
 * convert_arch.c — per-family knowledge: which config.json fields become
 * which GGUF keys, and which checkpoint tensor becomes which GGUF tensor
 * (llama.cpp's names, learned from its convert_hf_to_gguf.py and
 * gguf-py's tensor_mapping.py).
 *
 *   model_type               GGUF arch   differences
 *   llama, mistral           llama       q/k rows permuted for NORM RoPE
 *   mixtral                  llama       + block_sparse_moe (w1 gate, w3 up, w2 down)
 *   qwen2                    qwen2       q/k/v biases; NEOX RoPE (no permutation)
 *   qwen3                    qwen3       per-head q_norm / k_norm; explicit head_dim
 *   qwen2_moe                qwen2moe    + mlp.experts, shared_expert, shared_expert_gate
 *   qwen3_moe                qwen3moe    qwen3 attention + mlp.experts
 *   deepseek_v2, deepseek_v3 deepseek2   MLA (q LoRA, kv_a_proj_with_mqa, kv_b_proj kept whole:
 *                                        tern and Feb-2025 llama.cpp absorb it at run time);
 *                                        first_k_dense_replace dense layers; shared experts;
 *                                        V3's e_score_correction_bias -> exp_probs_b.bias
 *
 * RoPE PERMUTATION: Hugging Face's Llama rotates the pairs (i, i + d/2) of
 * each head (rotate_half); llama.cpp's "llama" arch rotates adjacent pairs
 * (2i, 2i+1). Reordering the rows of q_proj and k_proj (and their biases)
 * per head makes the two the same computation. Qwen uses NEOX RoPE in
 * GGUF, which is rotate_half, so no permutation. DeepSeek's checkpoints
 * already hold q_pe/k_pe in adjacent-pair order (Hugging Face's code
 * de-interleaves at run time), so neither.
 */
#include "convert/convert_int.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef enum fam { F_LLAMA, F_QWEN2, F_QWEN3, F_MIXTRAL, F_QWEN2MOE, F_QWEN3MOE, F_DEEPSEEK2 } fam;

static const struct {
    const char *model_type;
    fam f;
    const char *arch;
} families[] = {
    {"llama", F_LLAMA, "llama"},           {"mistral", F_LLAMA, "llama"},         {"mixtral", F_MIXTRAL, "llama"},
    {"qwen2", F_QWEN2, "qwen2"},           {"qwen3", F_QWEN3, "qwen3"},           {"qwen2_moe", F_QWEN2MOE, "qwen2moe"},
    {"qwen3_moe", F_QWEN3MOE, "qwen3moe"}, {"deepseek_v2", F_DEEPSEEK2, "deepseek2"},
    {"deepseek_v3", F_DEEPSEEK2, "deepseek2"},
};

#define TRY(expr)              \
    do {                       \
        tn_status s_ = (expr); \
        if (s_ != TN_OK)       \
            return s_;         \
    } while (0)

#define MAXD (1 << 24)

typedef struct hparams {
    fam f;
    int64_t n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_ctx;
    double eps, theta;
    /* MoE */
    int64_t n_expert, n_used, n_ff_exp, n_ff_sh, n_shared, n_dense_lead;
    /* MLA */
    int64_t q_lora, kv_lora, nope, rope, v_dim;
} hparams;

static tn_status get_int(tn__cv *c, const char *key, bool req, int64_t def, int64_t lo, int64_t hi, int64_t *out)
{
    return tn_hf_config_int(c->cfg, key, req, def, lo, hi, out);
}

/* A RoPE field from rope_scaling (transformers 4) or rope_parameters (5). */
static const char *rope_obj(tn__cv *c)
{
    return tn_hf_config_has(c->cfg, "rope_scaling") ? "rope_scaling" : "rope_parameters";
}

static tn_status read_common(tn__cv *c, hparams *hp)
{
    TRY(get_int(c, "vocab_size", true, 0, 1, MAXD, &hp->n_vocab));
    TRY(get_int(c, "hidden_size", true, 0, 1, MAXD, &hp->n_embd));
    TRY(get_int(c, "num_hidden_layers", true, 0, 1, 4096, &hp->n_layer));
    TRY(get_int(c, "num_attention_heads", true, 0, 1, 4096, &hp->n_head));
    TRY(get_int(c, "num_key_value_heads", false, hp->n_head, 1, hp->n_head, &hp->n_head_kv));
    TRY(get_int(c, "intermediate_size", true, 0, 1, MAXD, &hp->n_ff));
    TRY(get_int(c, "max_position_embeddings", true, 0, 1, INT32_MAX, &hp->n_ctx));
    TRY(tn_hf_config_f64(c->cfg, "rms_norm_eps", true, 0, &hp->eps));
    char k[64];
    snprintf(k, sizeof k, "%s.rope_theta", rope_obj(c));
    TRY(tn_hf_config_f64(c->cfg, "rope_theta", false, 0, &hp->theta));
    if (hp->theta == 0)
        TRY(tn_hf_config_f64(c->cfg, k, false, 10000.0, &hp->theta));
    if (hp->n_head % hp->n_head_kv != 0)
        return tn__err(TN_ERR_FORMAT, "config: %s: num_attention_heads %lld is not a multiple of num_key_value_heads %lld",
                       tn_hf_config_path(c->cfg), (long long)hp->n_head, (long long)hp->n_head_kv);
    int64_t def_hd = hp->n_embd % hp->n_head == 0 ? hp->n_embd / hp->n_head : 0;
    TRY(get_int(c, "head_dim", def_hd == 0, def_hd, 2, MAXD, &hp->head_dim));
    if (!(hp->eps > 0 && hp->eps < 1) || !(hp->theta > 1))
        return tn__err(TN_ERR_FORMAT, "config: %s: rms_norm_eps %g or rope_theta %g out of range",
                       tn_hf_config_path(c->cfg), hp->eps, hp->theta);
    c->info.n_vocab = (int32_t)hp->n_vocab;
    return TN_OK;
}

/*
 * LLAMA 3 ROPE SCALING (Llama 3.1+): each RoPE frequency f_i = theta^(-2i/d)
 * with wavelength w = 2 pi / f_i is divided by
 *
 *   1                                 if w < L / high_freq_factor
 *   factor                            if w > L / low_freq_factor
 *   1 / ((1 - s) / factor + s)        else, s = (L / w - low) / (high - low)
 *
 * with L = original_max_position_embeddings: short wavelengths keep their
 * frequency, long ones are slowed by factor, the band between is blended.
 * llama.cpp stores the divisors as the F32 tensor rope_freqs.weight
 * (head_dim / 2), which tern's attention reads.
 */
static tn_status llama3_rope_freqs(tn__cv *c, const hparams *hp, const char *o, double factor)
{
    double lo, hi;
    int64_t L;
    char k[96];
    snprintf(k, sizeof k, "%s.low_freq_factor", o);
    TRY(tn_hf_config_f64(c->cfg, k, true, 0, &lo));
    snprintf(k, sizeof k, "%s.high_freq_factor", o);
    TRY(tn_hf_config_f64(c->cfg, k, true, 0, &hi));
    snprintf(k, sizeof k, "%s.original_max_position_embeddings", o);
    TRY(get_int(c, k, true, 0, 1, INT32_MAX, &L));
    if (!(lo > 0 && hi > lo))
        return tn__err(TN_ERR_FORMAT, "config: %s: %s low_freq_factor %g / high_freq_factor %g (need 0 < low < high)",
                       tn_hf_config_path(c->cfg), o, lo, hi);
    int64_t n = hp->head_dim / 2;
    float div[4096];
    if (n > 4096)
        return tn__err(TN_ERR_UNSUPPORTED, "config: %s: head_dim %lld too large for llama3 RoPE scaling",
                       tn_hf_config_path(c->cfg), (long long)hp->head_dim);
    for (int64_t i = 0; i < n; i++) {
        double f = pow(hp->theta, -(double)(2 * i) / (double)hp->head_dim), w = 2 * M_PI / f;
        double d;
        if (w < (double)L / hi)
            d = 1.0;
        else if (w > (double)L / lo)
            d = factor;
        else {
            double sm = ((double)L / w - lo) / (hi - lo);
            d = 1.0 / ((1.0 - sm) / factor + sm);
        }
        div[i] = (float)d;
    }
    return tn__cv_add_data(c, "rope_freqs.weight", div, n);
}

/* rope_scaling: none, linear, llama3 (Llama), or yarn (DeepSeek). */
static tn_status write_rope_scaling(tn__cv *c, const hparams *hp)
{
    const char *o = rope_obj(c);
    char k[96], type[32];
    snprintf(k, sizeof k, "%s.type", o);
    TRY(tn_hf_config_str(c->cfg, k, false, type, sizeof type));
    if (!type[0]) {
        snprintf(k, sizeof k, "%s.rope_type", o);
        TRY(tn_hf_config_str(c->cfg, k, false, type, sizeof type));
    }
    if (!type[0] || !strcmp(type, "default"))
        return TN_OK;
    double factor;
    snprintf(k, sizeof k, "%s.factor", o);
    TRY(tn_hf_config_f64(c->cfg, k, true, 0, &factor));
    if (!(factor > 0 && factor < 1e6))
        return tn__err(TN_ERR_FORMAT, "config: %s: field '%s' = %g is not a positive factor", tn_hf_config_path(c->cfg),
                       k, factor);
    char tk[64];
    snprintf(tk, sizeof tk, "%s.rope.scaling.type", c->arch);
    if (!strcmp(type, "linear")) {
        TRY(tn_gguf_set_str(c->w, tk, "linear"));
        return tn__cv_f32(c, "rope.scaling.factor", factor);
    }
    if (!strcmp(type, "llama3") && hp->f == F_LLAMA)
        return llama3_rope_freqs(c, hp, o, factor);
    if (!strcmp(type, "yarn") && hp->f == F_DEEPSEEK2) {
        int64_t orig;
        double ms, msa, bf, bs;
        snprintf(k, sizeof k, "%s.original_max_position_embeddings", o);
        TRY(get_int(c, k, true, 0, 1, INT32_MAX, &orig));
        snprintf(k, sizeof k, "%s.mscale", o);
        TRY(tn_hf_config_f64(c->cfg, k, false, 1.0, &ms));
        snprintf(k, sizeof k, "%s.mscale_all_dim", o);
        TRY(tn_hf_config_f64(c->cfg, k, false, 0.0, &msa));
        snprintf(k, sizeof k, "%s.beta_fast", o);
        TRY(tn_hf_config_f64(c->cfg, k, false, 32.0, &bf));
        snprintf(k, sizeof k, "%s.beta_slow", o);
        TRY(tn_hf_config_f64(c->cfg, k, false, 1.0, &bs));
        if (ms != msa || bf != 32.0 || bs != 1.0)
            return tn__err(TN_ERR_UNSUPPORTED,
                           "config: %s: %s with mscale %g != mscale_all_dim %g or beta_fast/slow %g/%g != 32/1 is "
                           "not supported (tern and llama.cpp assume DeepSeek's values)",
                           tn_hf_config_path(c->cfg), o, ms, msa, bf, bs);
        TRY(tn_gguf_set_str(c->w, tk, "yarn"));
        TRY(tn__cv_f32(c, "rope.scaling.factor", factor));
        TRY(tn__cv_u32(c, "rope.scaling.original_context_length", orig));
        return tn__cv_f32(c, "rope.scaling.yarn_log_multiplier", 0.1 * msa);
    }
    return tn__err(TN_ERR_UNSUPPORTED, "config: %s: %s type '%s' is not supported (default, linear; llama3 for Llama, yarn for DeepSeek)",
                   tn_hf_config_path(c->cfg), o, type);
}

static tn_status read_moe(tn__cv *c, hparams *hp)
{
    /* The family's own name for the expert count first; transformers 5
     * saves Qwen-MoE configs with Mixtral's num_local_experts. */
    const char *ne_key = hp->f == F_MIXTRAL ? "num_local_experts" : hp->f == F_DEEPSEEK2 ? "n_routed_experts" : "num_experts";
    if (!tn_hf_config_has(c->cfg, ne_key) && tn_hf_config_has(c->cfg, "num_local_experts"))
        ne_key = "num_local_experts";
    TRY(get_int(c, ne_key, true, 0, 1, CV_MAX_SRC, &hp->n_expert));
    TRY(get_int(c, "num_experts_per_tok", true, 0, 1, hp->n_expert, &hp->n_used));
    if (hp->f == F_MIXTRAL) {
        hp->n_ff_exp = hp->n_ff;
        return TN_OK;
    }
    TRY(get_int(c, "moe_intermediate_size", true, 0, 1, MAXD, &hp->n_ff_exp));
    if (hp->f == F_QWEN2MOE)
        TRY(get_int(c, "shared_expert_intermediate_size", false, 0, 0, MAXD, &hp->n_ff_sh));
    if (hp->f == F_QWEN2MOE || hp->f == F_QWEN3MOE) {
        int64_t step;
        TRY(get_int(c, "decoder_sparse_step", false, 1, 0, 4096, &step));
        bool dense_layers = tn_hf_config_has(c->cfg, "mlp_only_layers.0");
        if (step != 1 || dense_layers)
            return tn__err(TN_ERR_UNSUPPORTED,
                           "config: %s: decoder_sparse_step %lld / mlp_only_layers: models mixing dense and MoE "
                           "layers are not supported",
                           tn_hf_config_path(c->cfg), (long long)step);
    }
    return TN_OK;
}

static tn_status write_common(tn__cv *c, const hparams *hp)
{
    char name[256];
    TRY(tn_hf_config_str(c->cfg, "_name_or_path", false, name, sizeof name));
    if (!name[0]) {
        const char *b = strrchr(c->dir, '/');
        snprintf(name, sizeof name, "%s", b && b[1] ? b + 1 : c->dir);
    }
    uint32_t ft = c->dtype == TN_DTYPE_F32 ? 0 : c->dtype == TN_DTYPE_F16 ? 1 : 32;
    TRY(tn_gguf_set_str(c->w, "general.architecture", c->arch));
    TRY(tn_gguf_set_str(c->w, "general.name", name));
    TRY(tn_gguf_set_u32(c->w, "general.file_type", ft));
    TRY(tn__cv_u32(c, "vocab_size", hp->n_vocab));
    TRY(tn__cv_u32(c, "context_length", hp->n_ctx));
    TRY(tn__cv_u32(c, "embedding_length", hp->n_embd));
    TRY(tn__cv_u32(c, "block_count", hp->n_layer));
    TRY(tn__cv_u32(c, "feed_forward_length", hp->n_ff));
    TRY(tn__cv_u32(c, "attention.head_count", hp->n_head));
    TRY(tn__cv_u32(c, "attention.head_count_kv", hp->n_head_kv));
    TRY(tn__cv_f32(c, "attention.layer_norm_rms_epsilon", hp->eps));
    TRY(tn__cv_f32(c, "rope.freq_base", hp->theta));
    return TN_OK;
}

/* ==========================================================================
 * Attention and FFN tensors
 * ======================================================================== */

/* "blk.<il>.<suffix>" <- "model.layers.<il>.<hf>", matrix [rows, cols]. */
static tn_status layer_add(tn__cv *c, int il, const char *suffix, const char *hf, int64_t rows, int64_t cols, bool f32,
                           int perm)
{
    char g[96], h[256];
    snprintf(g, sizeof g, "blk.%d.%s", il, suffix);
    snprintf(h, sizeof h, "model.layers.%d.%s", il, hf);
    return tn__cv_add(c, g, h, rows, cols, f32, perm);
}

static bool layer_has(tn__cv *c, int il, const char *hf)
{
    char h[256];
    snprintf(h, sizeof h, "model.layers.%d.%s", il, hf);
    return tn__cv_has(c, h);
}

static tn_status layer_experts(tn__cv *c, int il, const char *suffix, const char *hf_fmt, const hparams *hp,
                               int64_t rows, int64_t cols)
{
    char g[96], h[256];
    snprintf(g, sizeof g, "blk.%d.%s", il, suffix);
    snprintf(h, sizeof h, "model.layers.%d.%s", il, hf_fmt);
    return tn__cv_add_experts(c, g, h, (int)hp->n_expert, rows, cols);
}

static tn_status attention_gqa(tn__cv *c, int il, const hparams *hp)
{
    const int64_t e = hp->n_embd, q = hp->n_head * hp->head_dim, kv = hp->n_head_kv * hp->head_dim;
    const bool llama = hp->f == F_LLAMA || hp->f == F_MIXTRAL;
    const int pq = llama ? (int)hp->n_head : 0, pk = llama ? (int)hp->n_head_kv : 0;
    TRY(layer_add(c, il, "attn_norm.weight", "input_layernorm.weight", e, 0, true, 0));
    TRY(layer_add(c, il, "attn_q.weight", "self_attn.q_proj.weight", q, e, false, pq));
    TRY(layer_add(c, il, "attn_k.weight", "self_attn.k_proj.weight", kv, e, false, pk));
    TRY(layer_add(c, il, "attn_v.weight", "self_attn.v_proj.weight", kv, e, false, 0));
    if (layer_has(c, il, "self_attn.q_proj.bias")) {
        TRY(layer_add(c, il, "attn_q.bias", "self_attn.q_proj.bias", q, 0, true, pq));
        TRY(layer_add(c, il, "attn_k.bias", "self_attn.k_proj.bias", kv, 0, true, pk));
        TRY(layer_add(c, il, "attn_v.bias", "self_attn.v_proj.bias", kv, 0, true, 0));
    }
    if (hp->f == F_QWEN3 || hp->f == F_QWEN3MOE) {
        TRY(layer_add(c, il, "attn_q_norm.weight", "self_attn.q_norm.weight", hp->head_dim, 0, true, 0));
        TRY(layer_add(c, il, "attn_k_norm.weight", "self_attn.k_norm.weight", hp->head_dim, 0, true, 0));
    }
    TRY(layer_add(c, il, "attn_output.weight", "self_attn.o_proj.weight", e, q, false, 0));
    return layer_add(c, il, "ffn_norm.weight", "post_attention_layernorm.weight", e, 0, true, 0);
}

static tn_status attention_mla(tn__cv *c, int il, const hparams *hp)
{
    const int64_t e = hp->n_embd, H = hp->n_head, qk = hp->nope + hp->rope;
    TRY(layer_add(c, il, "attn_norm.weight", "input_layernorm.weight", e, 0, true, 0));
    if (hp->q_lora > 0) {
        TRY(layer_add(c, il, "attn_q_a.weight", "self_attn.q_a_proj.weight", hp->q_lora, e, false, 0));
        TRY(layer_add(c, il, "attn_q_a_norm.weight", "self_attn.q_a_layernorm.weight", hp->q_lora, 0, true, 0));
        TRY(layer_add(c, il, "attn_q_b.weight", "self_attn.q_b_proj.weight", H * qk, hp->q_lora, false, 0));
    } else {
        TRY(layer_add(c, il, "attn_q.weight", "self_attn.q_proj.weight", H * qk, e, false, 0));
    }
    TRY(layer_add(c, il, "attn_kv_a_mqa.weight", "self_attn.kv_a_proj_with_mqa.weight", hp->kv_lora + hp->rope, e,
                  false, 0));
    TRY(layer_add(c, il, "attn_kv_a_norm.weight", "self_attn.kv_a_layernorm.weight", hp->kv_lora, 0, true, 0));
    TRY(layer_add(c, il, "attn_kv_b.weight", "self_attn.kv_b_proj.weight", H * (hp->nope + hp->v_dim), hp->kv_lora,
                  false, 0));
    TRY(layer_add(c, il, "attn_output.weight", "self_attn.o_proj.weight", e, H * hp->v_dim, false, 0));
    return layer_add(c, il, "ffn_norm.weight", "post_attention_layernorm.weight", e, 0, true, 0);
}

static tn_status ffn_dense(tn__cv *c, int il, const hparams *hp)
{
    const int64_t e = hp->n_embd, f = hp->n_ff;
    TRY(layer_add(c, il, "ffn_gate.weight", "mlp.gate_proj.weight", f, e, false, 0));
    TRY(layer_add(c, il, "ffn_up.weight", "mlp.up_proj.weight", f, e, false, 0));
    return layer_add(c, il, "ffn_down.weight", "mlp.down_proj.weight", e, f, false, 0);
}

static tn_status ffn_moe(tn__cv *c, int il, const hparams *hp)
{
    const int64_t e = hp->n_embd, f = hp->n_ff_exp, sh = hp->n_ff_sh;
    if (hp->f == F_MIXTRAL) {
        TRY(layer_add(c, il, "ffn_gate_inp.weight", "block_sparse_moe.gate.weight", hp->n_expert, e, true, 0));
        TRY(layer_experts(c, il, "ffn_gate_exps.weight", "block_sparse_moe.experts.%d.w1.weight", hp, f, e));
        TRY(layer_experts(c, il, "ffn_up_exps.weight", "block_sparse_moe.experts.%d.w3.weight", hp, f, e));
        return layer_experts(c, il, "ffn_down_exps.weight", "block_sparse_moe.experts.%d.w2.weight", hp, e, f);
    }
    TRY(layer_add(c, il, "ffn_gate_inp.weight", "mlp.gate.weight", hp->n_expert, e, true, 0));
    if (hp->f == F_DEEPSEEK2 && layer_has(c, il, "mlp.gate.e_score_correction_bias"))
        TRY(layer_add(c, il, "exp_probs_b.bias", "mlp.gate.e_score_correction_bias", hp->n_expert, 0, true, 0));
    TRY(layer_experts(c, il, "ffn_gate_exps.weight", "mlp.experts.%d.gate_proj.weight", hp, f, e));
    TRY(layer_experts(c, il, "ffn_up_exps.weight", "mlp.experts.%d.up_proj.weight", hp, f, e));
    TRY(layer_experts(c, il, "ffn_down_exps.weight", "mlp.experts.%d.down_proj.weight", hp, e, f));
    if (sh > 0) {
        const char *p = hp->f == F_DEEPSEEK2 ? "mlp.shared_experts" : "mlp.shared_expert";
        char h[64];
        snprintf(h, sizeof h, "%s.gate_proj.weight", p);
        TRY(layer_add(c, il, "ffn_gate_shexp.weight", h, sh, e, false, 0));
        snprintf(h, sizeof h, "%s.up_proj.weight", p);
        TRY(layer_add(c, il, "ffn_up_shexp.weight", h, sh, e, false, 0));
        snprintf(h, sizeof h, "%s.down_proj.weight", p);
        TRY(layer_add(c, il, "ffn_down_shexp.weight", h, e, sh, false, 0));
        if (hp->f == F_QWEN2MOE)
            TRY(layer_add(c, il, "ffn_gate_inp_shexp.weight", "mlp.shared_expert_gate.weight", 1, e, true, 0));
    }
    return TN_OK;
}

/* ==========================================================================
 * Families
 * ======================================================================== */

static tn_status deepseek_keys(tn__cv *c, hparams *hp)
{
    const char *cp = tn_hf_config_path(c->cfg);
    int64_t freq, n_group, topk_group;
    double scale;
    bool norm;
    char scoring[32], method[32];
    TRY(get_int(c, "q_lora_rank", false, 0, 0, MAXD, &hp->q_lora));
    TRY(get_int(c, "kv_lora_rank", true, 0, 1, MAXD, &hp->kv_lora));
    TRY(get_int(c, "qk_nope_head_dim", true, 0, 1, MAXD, &hp->nope));
    TRY(get_int(c, "qk_rope_head_dim", true, 0, 2, MAXD, &hp->rope));
    TRY(get_int(c, "v_head_dim", true, 0, 1, MAXD, &hp->v_dim));
    TRY(get_int(c, "first_k_dense_replace", false, 0, 0, hp->n_layer, &hp->n_dense_lead));
    TRY(get_int(c, "n_shared_experts", false, 0, 0, 64, &hp->n_shared));
    TRY(get_int(c, "moe_layer_freq", false, 1, 1, 4096, &freq));
    TRY(get_int(c, "n_group", false, 1, 1, hp->n_expert, &n_group));
    TRY(get_int(c, "topk_group", false, n_group, 1, n_group, &topk_group));
    TRY(tn_hf_config_f64(c->cfg, "routed_scaling_factor", false, 1.0, &scale));
    TRY(tn_hf_config_bool(c->cfg, "norm_topk_prob", false, false, &norm));
    TRY(tn_hf_config_str(c->cfg, "scoring_func", false, scoring, sizeof scoring));
    TRY(tn_hf_config_str(c->cfg, "topk_method", false, method, sizeof method));
    if (freq != 1)
        return tn__err(TN_ERR_UNSUPPORTED, "config: %s: moe_layer_freq %lld (only 1 is supported)", cp, (long long)freq);
    if (hp->rope % 2 != 0)
        return tn__err(TN_ERR_FORMAT, "config: %s: qk_rope_head_dim %lld is odd", cp, (long long)hp->rope);
    bool sigmoid = !strcmp(scoring, "sigmoid");
    if (!sigmoid && scoring[0] && strcmp(scoring, "softmax") != 0)
        return tn__err(TN_ERR_UNSUPPORTED, "config: %s: scoring_func '%s' (softmax, sigmoid)", cp, scoring);
    /* Group-limited routing: V2's group_limited_greedy scores a group by its
     * best softmax score, V3's noaux_tc by its two best biased sigmoid
     * scores; tern picks the rule from the gating function. */
    bool grouped = !strcmp(method, "group_limited_greedy") || !strcmp(method, "noaux_tc");
    if (grouped && (!strcmp(method, "noaux_tc") != sigmoid))
        return tn__err(TN_ERR_UNSUPPORTED, "config: %s: topk_method '%s' with scoring_func '%s'", cp, method, scoring);
    if (method[0] && !grouped && strcmp(method, "greedy") != 0)
        return tn__err(TN_ERR_UNSUPPORTED, "config: %s: topk_method '%s' (greedy, group_limited_greedy, noaux_tc)", cp,
                       method);
    /* Hugging Face's DeepSeek-V2 scales the weights only when it does not
     * renormalize them; V3 (sigmoid) always scales. */
    if (!sigmoid && norm)
        scale = 1.0;
    hp->n_ff_sh = hp->n_shared * hp->n_ff_exp;
    TRY(tn__cv_u32(c, "leading_dense_block_count", hp->n_dense_lead));
    if (hp->q_lora > 0)
        TRY(tn__cv_u32(c, "attention.q_lora_rank", hp->q_lora));
    TRY(tn__cv_u32(c, "attention.kv_lora_rank", hp->kv_lora));
    TRY(tn__cv_u32(c, "attention.key_length", hp->nope + hp->rope));
    TRY(tn__cv_u32(c, "attention.value_length", hp->v_dim));
    TRY(tn__cv_u32(c, "rope.dimension_count", hp->rope));
    TRY(tn__cv_u32(c, "expert_feed_forward_length", hp->n_ff_exp));
    TRY(tn__cv_u32(c, "expert_count", hp->n_expert));
    TRY(tn__cv_u32(c, "expert_used_count", hp->n_used));
    TRY(tn__cv_u32(c, "expert_shared_count", hp->n_shared));
    TRY(tn__cv_f32(c, "expert_weights_scale", scale));
    TRY(tn__cv_bool(c, "expert_weights_norm", norm));
    TRY(tn__cv_u32(c, "expert_gating_func", sigmoid ? 2 : 1));
    if (grouped && n_group > 1) {
        if (hp->n_expert % n_group != 0)
            return tn__err(TN_ERR_FORMAT, "config: %s: n_group %lld does not divide n_routed_experts %lld", cp,
                           (long long)n_group, (long long)hp->n_expert);
        TRY(tn__cv_u32(c, "expert_group_count", n_group));
        TRY(tn__cv_u32(c, "expert_group_used_count", topk_group));
    }
    return TN_OK;
}

tn_status tn__cv_family(tn__cv *c)
{
    char mt[32];
    TRY(tn_hf_config_str(c->cfg, "model_type", true, mt, sizeof mt));
    size_t k = 0;
    while (k < TN_ARRAY_LEN(families) && strcmp(families[k].model_type, mt) != 0)
        k++;
    if (k == TN_ARRAY_LEN(families))
        return tn__err(TN_ERR_UNSUPPORTED,
                       "config: %s: model_type '%s' is not supported (llama, mistral, mixtral, qwen2, qwen3, qwen2_moe, "
                       "qwen3_moe, deepseek_v2, deepseek_v3)",
                       tn_hf_config_path(c->cfg), mt);
    snprintf(c->family, sizeof c->family, "%.31s", mt);
    snprintf(c->arch, sizeof c->arch, "%s", families[k].arch);
    hparams hp = {.f = families[k].f};
    const fam f = hp.f;
    const bool moe = f == F_MIXTRAL || f == F_QWEN2MOE || f == F_QWEN3MOE || f == F_DEEPSEEK2;
    TRY(read_common(c, &hp));
    if (moe)
        TRY(read_moe(c, &hp));
    TRY(write_common(c, &hp));
    if (f == F_DEEPSEEK2) {
        TRY(deepseek_keys(c, &hp));
    } else {
        if (hp.head_dim * hp.n_head != hp.n_embd || f == F_QWEN3 || f == F_QWEN3MOE) {
            TRY(tn__cv_u32(c, "attention.key_length", hp.head_dim));
            TRY(tn__cv_u32(c, "attention.value_length", hp.head_dim));
        }
        TRY(tn__cv_u32(c, "rope.dimension_count", hp.head_dim));
        if (moe) {
            bool norm;
            TRY(tn_hf_config_bool(c->cfg, "norm_topk_prob", false, f == F_MIXTRAL, &norm));
            TRY(tn__cv_u32(c, "expert_count", hp.n_expert));
            TRY(tn__cv_u32(c, "expert_used_count", hp.n_used));
            if (f != F_MIXTRAL) {
                TRY(tn__cv_u32(c, "expert_feed_forward_length", hp.n_ff_exp));
                TRY(tn__cv_bool(c, "expert_weights_norm", norm));
            }
            if (hp.n_ff_sh > 0)
                TRY(tn__cv_u32(c, "expert_shared_feed_forward_length", hp.n_ff_sh));
        }
    }
    TRY(write_rope_scaling(c, &hp));

    TRY(tn__cv_add(c, "token_embd.weight", "model.embed_tokens.weight", hp.n_vocab, hp.n_embd, false, 0));
    for (int il = 0; il < hp.n_layer; il++) {
        TRY(f == F_DEEPSEEK2 ? attention_mla(c, il, &hp) : attention_gqa(c, il, &hp));
        bool moe_layer = moe && il >= hp.n_dense_lead;
        TRY(moe_layer ? ffn_moe(c, il, &hp) : ffn_dense(c, il, &hp));
    }
    TRY(tn__cv_add(c, "output_norm.weight", "model.norm.weight", hp.n_embd, 0, true, 0));
    bool tied;
    TRY(tn_hf_config_bool(c->cfg, "tie_word_embeddings", false, false, &tied));
    if (tn__cv_has(c, "lm_head.weight"))
        TRY(tn__cv_add(c, "output.weight", "lm_head.weight", hp.n_vocab, hp.n_embd, false, 0));
    else if (!tied)
        return tn__err(TN_ERR_FORMAT, "convert: %s: no tensor 'lm_head.weight' and config.json's tie_word_embeddings is not true",
                       c->dir);
    return TN_OK;
}
