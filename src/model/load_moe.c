/*
 * load_moe.c — the mixture-of-experts hyper-parameters and tensors, read
 * from a GGUF file with llama.cpp's key and tensor names.
 *
 * Key idea: a MoE layer differs from a dense one only in its FFN, so
 * load.c reads everything else and calls in here for the router, the
 * stacked experts and the shared expert. As in load.c every tensor is
 * checked against the shape the hyper-parameters imply, so the forward pass
 * (moe.c) indexes experts without further checks.
 *
 * KEYS (all "<arch>.<key>")
 *
 *   key                                 llama (Mixtral)   qwen2moe          qwen3moe
 *   expert_count                        >0: MoE           required          required
 *   expert_used_count                   required w/ experts
 *   expert_feed_forward_length          = feed_forward_length  required     required
 *   expert_shared_feed_forward_length   -                 required if shexp -
 *   expert_weights_norm                 default true      default false     default true
 *   expert_weights_scale                default 1
 *   expert_gating_func                  1 softmax (default), 2 sigmoid
 *
 * deepseek2 adds: leading_dense_block_count, expert_shared_count (shared
 * width = n_ff_exp * count), expert_group_count / expert_group_used_count
 * (group-limited routing), expert_weights_norm (default false),
 * attention.q_lora_rank (0: plain attn_q), attention.kv_lora_rank,
 * attention.key_length = qk_nope + qk_rope, attention.value_length,
 * rope.dimension_count = qk_rope (files with attn_k_b / attn_v_b instead say
 * key_length = kv_lora + qk_rope, value_length = kv_lora, head_count_kv = 1 and
 * give qk_nope + qk_rope and the value length as attention.key_length_mla /
 * value_length_mla), and for rope.scaling.type "yarn"
 * rope.scaling.original_context_length and rope.scaling.yarn_log_multiplier.
 *
 * The expert_weights_norm defaults follow the models: Mixtral renormalizes
 * its top-k softmax weights; Qwen1.5/Qwen2-MoE do not (norm_topk_prob
 * false); Qwen3-MoE do (norm_topk_prob true).
 *
 * TENSORS of MoE layer N
 *
 *   blk.N.ffn_gate_inp.weight        [n_embd, n_expert]                router
 *   blk.N.ffn_{gate,up}_exps.weight  [n_embd, n_ff_exp, n_expert]      stacked
 *   blk.N.ffn_down_exps.weight       [n_ff_exp, n_embd, n_expert]
 *   blk.N.ffn_gate_inp_shexp.weight  [n_embd]                          qwen2moe
 *   blk.N.ffn_{gate,up}_shexp.weight [n_embd, n_ff_shexp]              shared expert
 *   blk.N.ffn_down_shexp.weight      [n_ff_shexp, n_embd]
 *   blk.N.exp_probs_b.bias           [n_expert] f32                    deepseek3
 *
 * deepseek2 attention (mla.c), H = n_head, nope = key_length - n_rot:
 *   blk.N.attn_q_a.weight [n_embd, q_lora]  attn_q_a_norm [q_lora]  attn_q_b [q_lora, H*key_length]
 *     or blk.N.attn_q.weight [n_embd, H*key_length]
 *   blk.N.attn_kv_a_mqa.weight [n_embd, kv_lora + n_rot]   attn_kv_a_norm [kv_lora]
 *   blk.N.attn_kv_b.weight [kv_lora, H*(nope + value_length)]
 *     or blk.N.attn_k_b.weight [nope, kv_lora, H] + attn_v_b.weight [kv_lora, value_length, H]
 *   blk.N.attn_output.weight [H*value_length, n_embd]
 */
#include "model/model_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EXPERTS 4096
#define MAX_FF (1 << 24)

/* Reads the MoE keys into hp (n_expert = 0: a dense model, nothing else is
 * read) and allocates the identity expert placement. */
tn_status tn__load_moe_hparams(tn__loader *L, tn_hparams *hp)
{
    tn_model *m = tn__load_model(L);
    const bool ds = hp->arch == TN_ARCH_DEEPSEEK2;
    bool moe_arch = hp->arch == TN_ARCH_QWEN2MOE || hp->arch == TN_ARCH_QWEN3MOE || ds;
    uint32_t n_expert = 0, n_used = 0, ff_exp = 0, ff_sh = 0, gating = 0;
    tn_status s;
    hp->n_expert_groups = hp->n_group_used = 1;
    if (ds) {
        uint32_t qlr, kvlr, n_dense, orig = 0;
        if ((s = tn__load_key_u32(L, "attention.q_lora_rank", false, 0, &qlr)) != TN_OK ||
            (s = tn__load_key_u32(L, "attention.kv_lora_rank", true, 0, &kvlr)) != TN_OK ||
            (s = tn__load_key_u32(L, "leading_dense_block_count", false, 0, &n_dense)) != TN_OK)
            return s;
        if (qlr > MAX_FF || kvlr < 1 || kvlr > MAX_FF || n_dense > (uint32_t)hp->n_layer)
            return tn__err(TN_ERR_FORMAT, "model: deepseek2 q_lora_rank %u / kv_lora_rank %u / leading_dense %u out of range",
                           qlr, kvlr, n_dense);
        /* Newer llama.cpp files describe the cache as one MQA head (key_length =
         * kv_lora_rank + n_rot, value_length = kv_lora_rank) and give the real
         * per-head sizes as key_length_mla / value_length_mla. */
        uint32_t k_mla = 0, v_mla = 0;
        if ((s = tn__load_key_u32(L, "attention.key_length_mla", false, 0, &k_mla)) != TN_OK ||
            (s = tn__load_key_u32(L, "attention.value_length_mla", k_mla > 0, 0, &v_mla)) != TN_OK)
            return s;
        if (k_mla > 0) {
            if (k_mla > MAX_FF || v_mla < 1 || v_mla > MAX_FF)
                return tn__err(TN_ERR_FORMAT, "model: deepseek2 key_length_mla %u / value_length_mla %u out of range",
                               k_mla, v_mla);
            hp->head_dim = (int32_t)k_mla;
            hp->head_dim_v = (int32_t)v_mla;
        }
        if (hp->n_rot >= hp->head_dim || hp->head_dim_v < 1 || hp->head_dim_v > MAX_FF)
            return tn__err(TN_ERR_FORMAT, "model: deepseek2 key_length %d must exceed rope.dimension_count %d",
                           hp->head_dim, hp->n_rot);
        hp->q_lora_rank = (int32_t)qlr;
        hp->kv_lora_rank = (int32_t)kvlr;
        hp->n_layer_dense_lead = (int32_t)n_dense;
        if (hp->rope_yarn) {
            if ((s = tn__load_key_u32(L, "rope.scaling.original_context_length", true, 0, &orig)) != TN_OK ||
                (s = tn__load_key_f32(L, "rope.scaling.yarn_log_multiplier", false, 0.0f, &hp->rope_yarn_log_mul)) != TN_OK)
                return s;
            if (orig < 1 || !(hp->rope_yarn_log_mul >= 0.0f && hp->rope_yarn_log_mul < 100.0f))
                return tn__err(TN_ERR_FORMAT, "model: deepseek2 yarn original_context_length %u / log multiplier %g",
                               orig, (double)hp->rope_yarn_log_mul);
            hp->rope_yarn_orig_ctx = (int32_t)orig;
        }
    }
    if ((s = tn__load_key_u32(L, "expert_count", moe_arch, 0, &n_expert)) != TN_OK)
        return s;
    hp->n_expert = 0;
    hp->expert_weights_scale = 1.0f;
    hp->expert_gating = TN_GATING_SOFTMAX;
    if (n_expert == 0)
        return TN_OK;
    if (n_expert > MAX_EXPERTS)
        return tn__err(TN_ERR_FORMAT, "model: %s.expert_count = %u out of range [1, %d]", hp->arch_name, n_expert,
                       MAX_EXPERTS);
    if ((s = tn__load_key_u32(L, "expert_used_count", true, 0, &n_used)) != TN_OK)
        return s;
    if (n_used < 1 || n_used > n_expert)
        return tn__err(TN_ERR_FORMAT, "model: %s.expert_used_count = %u out of range [1, expert_count %u]",
                       hp->arch_name, n_used, n_expert);
    if ((s = tn__load_key_u32(L, "expert_feed_forward_length", moe_arch, (uint32_t)hp->n_ff, &ff_exp)) != TN_OK ||
        (s = tn__load_key_u32(L, "expert_shared_feed_forward_length", false, 0, &ff_sh)) != TN_OK ||
        (s = tn__load_key_u32(L, "expert_gating_func", false, TN_GATING_SOFTMAX, &gating)) != TN_OK)
        return s;
    if (ff_exp < 1 || ff_exp > MAX_FF || ff_sh > MAX_FF)
        return tn__err(TN_ERR_FORMAT, "model: %s expert feed-forward lengths %u / %u out of range", hp->arch_name,
                       ff_exp, ff_sh);
    if (gating != TN_GATING_SOFTMAX && gating != TN_GATING_SIGMOID)
        return tn__err(TN_ERR_UNSUPPORTED, "model: %s.expert_gating_func = %u (1 softmax, 2 sigmoid)",
                       hp->arch_name, gating);
    bool norm_def = hp->arch != TN_ARCH_QWEN2MOE && !ds;
    if (ds) {
        uint32_t n_shared = 0, groups = 1, used_groups = 1;
        if ((s = tn__load_key_u32(L, "expert_shared_count", false, 0, &n_shared)) != TN_OK ||
            (s = tn__load_key_u32(L, "expert_group_count", false, 1, &groups)) != TN_OK ||
            (s = tn__load_key_u32(L, "expert_group_used_count", false, groups, &used_groups)) != TN_OK)
            return s;
        if (n_shared > 64 || groups < 1 || n_expert % groups != 0 || used_groups < 1 || used_groups > groups ||
            n_used > used_groups * (n_expert / groups))
            return tn__err(TN_ERR_FORMAT,
                           "model: deepseek2 shared %u / groups %u / used groups %u do not fit %u experts top-%u",
                           n_shared, groups, used_groups, n_expert, n_used);
        ff_sh = n_shared * ff_exp;
        hp->n_expert_groups = (int32_t)groups;
        hp->n_group_used = (int32_t)used_groups;
    }
    float scale;
    if ((s = tn__load_key_bool(L, "expert_weights_norm", norm_def, &hp->expert_weights_norm)) != TN_OK ||
        (s = tn__load_key_f32(L, "expert_weights_scale", false, 1.0f, &scale)) != TN_OK)
        return s;
    if (!(scale > 0.0f && scale < 1e6f))
        return tn__err(TN_ERR_FORMAT, "model: %s.expert_weights_scale = %g is not positive", hp->arch_name,
                       (double)scale);
    hp->n_expert = (int32_t)n_expert;
    hp->n_expert_used = (int32_t)n_used;
    hp->n_ff_exp = (int32_t)ff_exp;
    hp->n_ff_shexp = (int32_t)ff_sh;
    hp->n_expert_shared = ff_sh > 0 ? (ds ? (int32_t)(ff_sh / ff_exp) : 1) : 0;
    hp->expert_weights_scale = scale;
    hp->expert_gating = (tn_expert_gating)gating;

    size_t n = (size_t)hp->n_layer * (size_t)n_expert;
    m->expert_map = malloc(n * sizeof *m->expert_map);
    if (!m->expert_map)
        return tn__err(TN_ERR_NOMEM, "model: out of memory for the expert placement");
    for (size_t i = 0; i < n; i++)
        m->expert_map[i] = (int32_t)(i % n_expert);
    return TN_OK;
}

/* Takes the router, the stacked experts and (when the file has them) the
 * shared expert of MoE layer il. */
tn_status tn__load_moe_layer(tn__loader *L, int il, tn_layer *ly)
{
    const tn_hparams *hp = &tn__load_model(L)->hp;
    const int64_t embd = hp->n_embd, ne = hp->n_expert, ff = hp->n_ff_exp, fs = hp->n_ff_shexp;
    const int R = TN__TAKE_REQUIRED, sh = fs > 0 ? R : 0;
    struct {
        const char *suffix;
        int64_t ne0, ne1, ne2;
        int flags;
        tn_weight *w;
    } spec[] = {
        {"ffn_gate_inp.weight", embd, ne, 1, R, &ly->ffn_gate_inp},
        {"ffn_gate_exps.weight", embd, ff, ne, R, &ly->ffn_gate_exps},
        {"ffn_up_exps.weight", embd, ff, ne, R, &ly->ffn_up_exps},
        {"ffn_down_exps.weight", ff, embd, ne, R, &ly->ffn_down_exps},
        {"ffn_gate_inp_shexp.weight", embd, 0, 1, 0, &ly->ffn_gate_inp_shexp},
        {"ffn_gate_shexp.weight", embd, fs, 1, sh, &ly->ffn_gate_shexp},
        {"ffn_up_shexp.weight", embd, fs, 1, sh, &ly->ffn_up_shexp},
        {"ffn_down_shexp.weight", fs, embd, 1, sh, &ly->ffn_down_shexp},
        {"exp_probs_b.bias", ne, 0, 1, TN__TAKE_F32, &ly->exp_probs_b},
    };
    for (size_t i = 0; i < TN_ARRAY_LEN(spec); i++) {
        if (fs == 0 && strstr(spec[i].suffix, "shexp"))
            continue; /* no shared expert: such a tensor stays unused, and load.c rejects the file */
        char name[96];
        snprintf(name, sizeof name, "blk.%d.%s", il, spec[i].suffix);
        tn_status s = tn__load_take(L, name, spec[i].ne0, spec[i].ne1, spec[i].ne2, spec[i].flags, spec[i].w);
        if (s != TN_OK)
            return s;
    }
    return TN_OK;
}

/*
 * W_UK AND W_UV, TWO WAYS (mla.c multiplies by them every call)
 *
 * Older files (and llama.cpp before its MLA rework) ship attn_kv_b: per head
 * the nope rows of W_UK and then the head_dim_v rows of W_UV, kv_lora_rank
 * columns each. mla.c needs W_UK[h]ᵀ (kv_lora_rank rows of nope columns,
 * to map q_nope into the latent space with one matrix product) and W_UV[h].
 * W_UV[h] is already rows of kv_lora_rank columns: wv_b is a view into
 * attn_kv_b whose head stride is nope + head_dim_v rows. W_UK[h]ᵀ is a
 * transpose, which a quantized row layout cannot give for free, so it is
 * made here once: dequantized, transposed, and stored as F32 when attn_kv_b
 * is F32, else F16 (exact for F16 weights; for quantized or BF16 ones a
 * relative rounding of 2^-11, finer than the Q8_0 rounding of every
 * activation; BF16 values below F16's normal range lose bits).
 *
 * Newer files ship it split (llama.cpp's convert_hf_to_gguf since spring
 * 2025, with key_length_mla / value_length_mla):
 *
 *   blk.N.attn_k_b.weight [nope, kv_lora_rank, H]   W_UK[h]ᵀ per head
 *   blk.N.attn_v_b.weight [kv_lora_rank, head_dim_v, H]  W_UV[h] per head
 *
 * which is exactly the layout above, used as it is in its own dtype.
 */
static tn_status prepare_wk_b(tn_model *m, int il, tn_layer *ly)
{
    const tn_hparams *hp = &m->hp;
    const int64_t H = hp->n_head, kvr = hp->kv_lora_rank, nope = hp->head_dim - hp->n_rot, dv = hp->head_dim_v;
    const tn_dtype src = ly->wkv_b.type, dst = src == TN_DTYPE_F32 ? TN_DTYPE_F32 : TN_DTYPE_F16;
    if (!m->mla_owned && !(m->mla_owned = calloc((size_t)hp->n_layer, sizeof *m->mla_owned)))
        return tn__err(TN_ERR_NOMEM, "model: out of memory for the MLA tables");
    const size_t per_head = (size_t)(kvr * nope);
    void *buf = tn_alloc_aligned((size_t)H * per_head * (dst == TN_DTYPE_F32 ? 4 : 2), 64);
    float *rows = malloc((size_t)(nope * kvr) * sizeof(float)); /* (nope, kvr) W_UK[h] */
    if (!buf || !rows) {
        tn_free_aligned(buf);
        free(rows);
        return tn__err(TN_ERR_NOMEM, "model: out of memory for blk.%d W_UK (%lld x %lld x %lld)", il, (long long)H,
                       (long long)kvr, (long long)nope);
    }
    m->mla_owned[il] = buf;
    for (int64_t h = 0; h < H; h++) {
        for (int64_t d = 0; d < nope; d++)
            tn_get_row(ly->wkv_b.data, src, kvr, h * (nope + dv) + d, rows + d * kvr);
        for (int64_t r = 0; r < kvr; r++)
            for (int64_t d = 0; d < nope; d++) {
                float v = rows[d * kvr + r];
                size_t at = (size_t)h * per_head + (size_t)(r * nope + d);
                if (dst == TN_DTYPE_F32)
                    ((float *)buf)[at] = v;
                else
                    ((uint16_t *)buf)[at] = tn_fp32_to_fp16(v);
            }
    }
    free(rows);
    ly->wk_b = (tn_weight){.data = buf, .type = dst, .ne = {nope, kvr, H}};
    ly->wv_b = (tn_weight){.data = (const char *)ly->wkv_b.data + tn_dtype_row_size(src, kvr) * (size_t)nope,
                           .type = src,
                           .ne = {kvr, nope + dv, H}};
    return TN_OK;
}

void tn__load_mla_free(tn_model *m)
{
    if (!m->mla_owned)
        return;
    for (int il = 0; il < m->hp.n_layer; il++)
        tn_free_aligned(m->mla_owned[il]);
    free(m->mla_owned);
    m->mla_owned = NULL;
}

/* Takes one deepseek2 layer: the MLA tensors (q LoRA or plain q; attn_k_b
 * and attn_v_b, or attn_kv_b), the norms, and a dense FFN for the first
 * leading_dense_block_count layers, the MoE FFN after them. */
tn_status tn__load_deepseek2_layer(tn__loader *L, int il, tn_layer *ly)
{
    tn_model *m = tn__load_model(L);
    const tn_hparams *hp = &m->hp;
    const int64_t embd = hp->n_embd, H = hp->n_head, qlr = hp->q_lora_rank, kvlr = hp->kv_lora_rank;
    const int64_t nope = hp->head_dim - hp->n_rot, q_dim = H * hp->head_dim, ff = hp->n_ff, dv = hp->head_dim_v;
    const int R = TN__TAKE_REQUIRED, F = TN__TAKE_F32, lora = qlr > 0 ? R : 0, plain = qlr > 0 ? 0 : R;
    const int dense = il < hp->n_layer_dense_lead ? R : 0;
    char name[96];
    struct {
        const char *suffix;
        int64_t ne0, ne1, ne2;
        int flags;
        tn_weight *w;
    } spec[] = {
        {"attn_norm.weight", embd, 0, 1, R | F, &ly->attn_norm},
        {"attn_q_a.weight", embd, qlr, 1, lora, &ly->wq_a},
        {"attn_q_a_norm.weight", qlr, 0, 1, lora | F, &ly->q_a_norm},
        {"attn_q_b.weight", qlr, q_dim, 1, lora, &ly->wq_b},
        {"attn_q.weight", embd, q_dim, 1, plain, &ly->wq},
        {"attn_kv_a_mqa.weight", embd, kvlr + hp->n_rot, 1, R, &ly->wkv_a},
        {"attn_kv_a_norm.weight", kvlr, 0, 1, R | F, &ly->kv_a_norm},
        {"attn_kv_b.weight", kvlr, H * (nope + dv), 1, 0, &ly->wkv_b},
        {"attn_k_b.weight", nope, kvlr, H, 0, &ly->wk_b},
        {"attn_v_b.weight", kvlr, dv, H, 0, &ly->wv_b},
        {"attn_output.weight", H * dv, embd, 1, R, &ly->wo},
        {"ffn_norm.weight", embd, 0, 1, R | F, &ly->ffn_norm},
        {"ffn_gate.weight", embd, ff, 1, dense, &ly->ffn_gate},
        {"ffn_up.weight", embd, ff, 1, dense, &ly->ffn_up},
        {"ffn_down.weight", ff, embd, 1, dense, &ly->ffn_down},
    };
    for (size_t i = 0; i < TN_ARRAY_LEN(spec); i++) {
        bool mla_b = strstr(spec[i].suffix, "_b.weight") && strncmp(spec[i].suffix, "attn_q", 6) != 0;
        if (!(spec[i].flags & R) && !mla_b)
            continue; /* the q form the file does not use, or a MoE layer's dense FFN (unused: rejected) */
        snprintf(name, sizeof name, "blk.%d.%s", il, spec[i].suffix);
        tn_status s = tn__load_take(L, name, spec[i].ne0, spec[i].ne1, spec[i].ne2, spec[i].flags, spec[i].w);
        if (s != TN_OK)
            return s;
    }
    bool split = ly->wk_b.data && ly->wv_b.data;
    if (!split && !ly->wkv_b.data)
        return tn__err(TN_ERR_FORMAT, "model: blk.%d has neither attn_kv_b.weight nor attn_k_b.weight + attn_v_b.weight",
                       il);
    if (!split) {
        tn_status s = prepare_wk_b(m, il, ly);
        if (s != TN_OK)
            return s;
    }
    return il < hp->n_layer_dense_lead ? TN_OK : tn__load_moe_layer(L, il, ly);
}
