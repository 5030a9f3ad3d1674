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
    bool moe_arch = hp->arch == TN_ARCH_QWEN2MOE || hp->arch == TN_ARCH_QWEN3MOE;
    uint32_t n_expert = 0, n_used = 0, ff_exp = 0, ff_sh = 0, gating = 0;
    tn_status s;
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
    bool norm_def = hp->arch != TN_ARCH_QWEN2MOE;
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
    hp->n_expert_shared = ff_sh > 0 ? 1 : 0;
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
