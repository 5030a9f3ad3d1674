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
 * rope.dimension_count = qk_rope, and for rope.scaling.type "yarn"
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

/* Takes one deepseek2 layer: the MLA tensors (q LoRA or plain q), the norms,
 * and a dense FFN for the first leading_dense_block_count layers, the MoE
 * FFN after them. */
tn_status tn__load_deepseek2_layer(tn__loader *L, int il, tn_layer *ly)
{
    const tn_hparams *hp = &tn__load_model(L)->hp;
    const int64_t embd = hp->n_embd, H = hp->n_head, qlr = hp->q_lora_rank, kvlr = hp->kv_lora_rank;
    const int64_t nope = hp->head_dim - hp->n_rot, q_dim = H * hp->head_dim, ff = hp->n_ff;
    const int R = TN__TAKE_REQUIRED, F = TN__TAKE_F32, lora = qlr > 0 ? R : 0, plain = qlr > 0 ? 0 : R;
    const int dense = il < hp->n_layer_dense_lead ? R : 0;
    struct {
        const char *suffix;
        int64_t ne0, ne1;
        int flags;
        tn_weight *w;
    } spec[] = {
        {"attn_norm.weight", embd, 0, R | F, &ly->attn_norm},
        {"attn_q_a.weight", embd, qlr, lora, &ly->wq_a},
        {"attn_q_a_norm.weight", qlr, 0, lora | F, &ly->q_a_norm},
        {"attn_q_b.weight", qlr, q_dim, lora, &ly->wq_b},
        {"attn_q.weight", embd, q_dim, plain, &ly->wq},
        {"attn_kv_a_mqa.weight", embd, kvlr + hp->n_rot, R, &ly->wkv_a},
        {"attn_kv_a_norm.weight", kvlr, 0, R | F, &ly->kv_a_norm},
        {"attn_kv_b.weight", kvlr, H * (nope + hp->head_dim_v), R, &ly->wkv_b},
        {"attn_output.weight", H * hp->head_dim_v, embd, R, &ly->wo},
        {"ffn_norm.weight", embd, 0, R | F, &ly->ffn_norm},
        {"ffn_gate.weight", embd, ff, dense, &ly->ffn_gate},
        {"ffn_up.weight", embd, ff, dense, &ly->ffn_up},
        {"ffn_down.weight", ff, embd, dense, &ly->ffn_down},
    };
    for (size_t i = 0; i < TN_ARRAY_LEN(spec); i++) {
        if (!(spec[i].flags & R))
            continue; /* the q form the file does not use, or a MoE layer's dense FFN (unused: rejected) */
        char name[96];
        snprintf(name, sizeof name, "blk.%d.%s", il, spec[i].suffix);
        tn_status s = tn__load_take(L, name, spec[i].ne0, spec[i].ne1, 1, spec[i].flags, spec[i].w);
        if (s != TN_OK)
            return s;
    }
    return il < hp->n_layer_dense_lead ? TN_OK : tn__load_moe_layer(L, il, ly);
}
