/*
 * model_int.h — what the model's files share inside the module: the KV
 * cache's layout (kv.c owns it, forward.c and attention.c read it) and the
 * batch bookkeeping that turns a batch into, for each token, the run of cache
 * cells it attends to.
 *
 * Key idea: the cache keeps, per sequence, a list of its cells sorted by
 * position. Once per forward call (never once per layer) the lists of the
 * sequences in the batch are flattened into `order_slot`/`order_pos`; token
 * i then attends to order_slot[vis_off[i] .. vis_off[i] + vis_n[i]), which
 * is exactly its sequence's cells at positions <= its own, in increasing
 * position order.
 */
#ifndef TERN_MODEL_MODEL_INT_H
#define TERN_MODEL_MODEL_INT_H

#include "model/model.h"

struct tn_kv_cache {
    int32_t n_layer;
    int32_t n_slots;
    int32_t n_seq_max;
    int32_t kv_dim;        /* n_head_kv * head_dim */
    int32_t head_dim;

    tn_kv_type type;
    bool has_v;            /* false for latent attention: K holds latent + RoPE key */
    float *k;              /* F32: (n_layer, n_slots, kv_dim); NULL otherwise */
    float *v;              /* F32: (n_layer, n_slots, kv_dim); NULL otherwise */
    void *kx, *vx;         /* F16 (uint16_t) / Q8 (int8_t): (n_layer, n_slots, kv_dim) */
    float *ks, *vs;        /* Q8: (n_layer, n_slots, n_head_kv) scale of each row of head_dim */

    /* Cells. A free cell has seq == pos == -1 and is on no list. */
    int32_t *cell_seq;     /* (n_slots) */
    int32_t *cell_pos;     /* (n_slots) */
    int32_t *cell_prev;    /* (n_slots) previous cell of the same sequence (lower pos), -1 at head */
    int32_t *cell_next;    /* (n_slots) next cell (higher pos), -1 at tail */

    /* Per sequence: its cells as a doubly linked list sorted by position. */
    int32_t *seq_head;     /* (n_seq_max) lowest-position cell, -1 if empty */
    int32_t *seq_tail;     /* (n_seq_max) highest-position cell, -1 if empty */
    int32_t *seq_n;        /* (n_seq_max) number of cells */

    /* Per-call scratch (the engine thread owns the cache; no locking). A
     * mark equal to `stamp` means "set during this call", so nothing is
     * cleared between calls. */
    uint32_t stamp;
    uint32_t *slot_mark;   /* (n_slots) */
    uint32_t *seq_mark;    /* (n_seq_max) */
    int64_t *keys;         /* (n_slots) (seq << 32 | pos) of the batch, sorted */
    int32_t *seq_off;      /* (n_seq_max) start of the sequence's run in order_* */
    int32_t *order_slot;   /* (order_cap) cells of the batch's sequences, grouped by sequence, position-ascending */
    int32_t *order_pos;    /* (order_cap) their positions */
    int64_t order_cap;     /* n_slots + the largest tab_total seen: list runs fill at most n_slots, tables the rest */

    /* Table mode (tn_kv_seq_set_slots): seq's positions 0..tab_n-1 live in
     * the borrowed tab[seq][0..tab_n); tab == NULL is the ordinary mode. */
    const int32_t **tab;   /* (n_seq_max) */
    int32_t *tab_n;        /* (n_seq_max) */
    int64_t tab_total;     /* sum of tab_n */

    /* Attention's scratch (kern/attn.h tiles): one row per compute thread. */
    int32_t n_score_rows;  /* tn_n_cores() at creation: a pool never has more threads */
    size_t score_row;      /* floats per row: tn_attn_scratch_floats(kv_dim, kv_dim), a multiple of 16 */
    float *scores;         /* (n_score_rows, score_row) */
};

/* Checks the sequence, position and slot fields of a batch against the
 * cache: seq_id in [0, n_seq_max), kv_slot in [0, n_slots), no slot twice,
 * no (seq, pos) twice in the batch, and no (seq, pos) of the batch already
 * held by a cell the batch does not overwrite. Changes only scratch marks.
 * TN_ERR_INVALID naming the token and field otherwise. Token ids,
 * positions (>= 0) and n_tokens are the caller's to check first. */
tn_status tn__kv_check_batch(tn_kv_cache *kv, const tn_batch *b) TN_MUST_CHECK;

/* Records the batch's tokens in their cells (a cell that held something
 * else forgets it) and flattens the lists of the batch's sequences: token i
 * attends to order_slot[vis_off[i] ..+ vis_n[i]]. vis_off, vis_n: (n_tokens).
 * The batch must have passed tn__kv_check_batch. Does not allocate. */
void tn__kv_apply_batch(tn_kv_cache *kv, const tn_batch *b, int32_t *vis_off, int32_t *vis_n);

/* Stores one token's K and V rows (kv_dim floats each) of layer `layer`
 * into cell `slot`, converted to the cache's type. */
void tn__kv_store(tn_kv_cache *kv, int32_t layer, int32_t slot, const float *k, const float *v);

/* --- attention.c: RoPE and attention (the essays are there) ----------- */

/* inv_freq[i] = freq_scale * base^(-2i/n_rot) / freq_factors[i] for the
 * n_rot/2 pairs; freq_factors ((n_rot/2) f32) may be NULL. */
void tn__rope_inv_freq(const tn_hparams *hp, const float *freq_factors, double *inv_freq);

/* cos_t, sin_t: (n_tokens, n_pairs) rotation tables for positions pos. */
void tn__rope_tables(const double *inv_freq, int n_pairs, const int32_t *pos, int32_t n_tokens, float *cos_t,
                     float *sin_t);

/* Rotates the first n_rot components of each head of one token's x
 * ((n_heads, head_dim)) with that token's tables cs, sn ((n_rot/2)). */
void tn__rope_apply(float *x, int n_heads, int head_dim, int n_rot, tn_rope_type type, const float *cs,
                    const float *sn);

/* Causal GQA attention of one layer: q ((n_tokens, n_head*head_dim), roped)
 * against the cells laid out by tn__kv_apply_batch, into out (same shape).
 * n_visible = sum of vis_n (sizes the work). Runs on the pool when there is
 * enough work; does not allocate. */
void tn__attention(tn_pool *pool, tn_kv_cache *kv, int32_t layer, const tn_hparams *hp, int32_t n_tokens,
                   const float *q, const int32_t *vis_off, const int32_t *vis_n, int64_t n_visible, float *out);

/* --- load.c's services for load_moe.c --------------------------------- */

typedef struct tn__loader tn__loader;

enum { TN__TAKE_REQUIRED = 1, TN__TAKE_F32 = 2 };

/* Takes tensor `name` (checked against shape [ne0, ne1, ne2]; ne1 == 0: a
 * vector of ne0) into *w; absent and not TN__TAKE_REQUIRED: w->data NULL. */
tn_status tn__load_take(tn__loader *L, const char *name, int64_t ne0, int64_t ne1, int64_t ne2, int flags,
                        tn_weight *w) TN_MUST_CHECK;
/* "<arch>.<suffix>" keys; absent: def (or TN_ERR_FORMAT when required). */
tn_status tn__load_key_u32(tn__loader *L, const char *suffix, bool required, uint32_t def,
                           uint32_t *out) TN_MUST_CHECK;
tn_status tn__load_key_f32(tn__loader *L, const char *suffix, bool required, float def, float *out) TN_MUST_CHECK;
tn_status tn__load_key_bool(tn__loader *L, const char *suffix, bool def, bool *out) TN_MUST_CHECK;
tn_model *tn__load_model(tn__loader *L);

/* load_moe.c: the MoE hyper-parameters (after the dense ones are in hp;
 * n_expert stays 0 for a dense file) and one MoE layer's tensors. */
tn_status tn__load_moe_hparams(tn__loader *L, tn_hparams *hp) TN_MUST_CHECK;
tn_status tn__load_moe_layer(tn__loader *L, int il, tn_layer *ly) TN_MUST_CHECK;
/* A whole deepseek2 layer: norms, MLA tensors, dense or MoE FFN; makes
 * W_UKᵀ (ly->wk_b) from attn_kv_b when the file does not ship attn_k_b. */
tn_status tn__load_deepseek2_layer(tn__loader *L, int il, tn_layer *ly) TN_MUST_CHECK;
/* Frees what tn__load_deepseek2_layer made (m->mla_owned). */
void tn__load_mla_free(tn_model *m);

/* load_repack.c: replaces the Q4_0/Q8_0 matrices the forward pass
 * multiplies by their x16 copies (kern/repack.h) in m->repacked, where the
 * running ISA has a kernel for that layout. TN_ERR_NOMEM on failure (the
 * model is then unchanged). */
tn_status tn__load_repack(tn_model *m) TN_MUST_CHECK;

/* --- mla.c: multi-head latent attention (deepseek2) --------------------- */

typedef struct tn__mla tn__mla;

/* Scratch for MLA layers (NULL *out when the model has none). */
tn_status tn__mla_new(const tn_model *m, int32_t n_batch_max, tn__mla **out) TN_MUST_CHECK;
void tn__mla_free(tn__mla *mla);
/* The forward pass's observer (tn_forward_set_observer), for the MLA projections. */
void tn__mla_set_observer(tn__mla *mla, tn_forward_observer fn, void *ud);

/* The attention of deepseek2 layer il for the normed inputs xn ((n,
 * n_embd)) of batch b: writes each token's latent + RoPE key to its cache
 * slot, attends in the latent space, and writes the heads' values
 * ((n, n_head*head_dim_v), before attn_output) to out. vis_off/vis_n as for
 * tn__attention. Does not allocate. */
void tn__mla_attention(tn__mla *mla, tn_pool *pool, tn_kv_cache *kv, int32_t il, const tn_batch *b,
                       const float *xn, int32_t n, const int32_t *vis_off, const int32_t *vis_n, float *out);

/* --- moe.c: routing and the grouped expert FFN ------------------------- */

typedef struct tn__moe tn__moe;

/* Scratch for MoE layers of model m for up to n_batch_max tokens, plus the
 * routing statistics (window of `stats_window` calls). NULL *out for a dense
 * model. TN_ERR_NOMEM on failure. */
tn_status tn__moe_new(const tn_model *m, int32_t n_batch_max, tn__moe **out) TN_MUST_CHECK;
void tn__moe_free(tn__moe *moe);

/* out ((n, n_embd)) = the MoE FFN of layer il for the normed inputs xn
 * ((n, n_embd)): routed experts (grouped by expert, or through the routed
 * hook) plus shared experts. Records routing counts in the statistics.
 * Does not allocate. Fails only with the hook's error. */
tn_status tn__moe_ffn(tn__moe *moe, tn_pool *pool, int32_t il, const float *xn, int32_t n,
                      float *out) TN_MUST_CHECK;

/* Sets (fn NULL: clears) the routed-expert hook (tn_forward_set_moe_routed). */
void tn__moe_set_routed(tn__moe *moe, tn_moe_routed_fn fn, void *ctx);
/* The forward pass's observer (tn_forward_set_observer), for the MoE layer's products. */
void tn__moe_set_observer(tn__moe *moe, tn_forward_observer fn, void *ud);

/* With a hook set: calls it with no tokens for every MoE layer >= il_from
 * (a rank whose step has no tokens, or none left, still takes part in
 * every layer's exchange). Without one, or moe NULL: nothing. Returns the
 * hook's first error. */
tn_status tn__moe_idle(tn__moe *moe, tn_pool *pool, int32_t il_from) TN_MUST_CHECK;

/* Marks the start of a forward call for the statistics window. */
void tn__moe_begin_call(tn__moe *moe);
const tn_moe_stats *tn__moe_stats(const tn__moe *moe);

/* --- moe_stats.c ------------------------------------------------------ */

tn_status tn__moe_stats_new(int32_t n_layer, int32_t n_expert, int32_t window, tn_moe_stats **out) TN_MUST_CHECK;
void tn__moe_stats_free(tn_moe_stats *st);
/* Starts a new call: the oldest call of the window is dropped. */
void tn__moe_stats_begin_call(tn_moe_stats *st);
/* Adds n tokens for logical expert e of layer il to the current call. */
void tn__moe_stats_add(tn_moe_stats *st, int32_t il, int32_t e, int64_t n);

#endif /* TERN_MODEL_MODEL_INT_H */
