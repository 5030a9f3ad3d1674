/*
 * attention.c — rotary position embeddings and causal, grouped-query
 * attention over the KV cache, for one layer of one flattened batch.
 *
 * Key idea: a token's attention output is a function of its query and of
 * its sequence's cells at positions <= its own, visited in increasing
 * position order, and of nothing else: not of the slots the caller chose,
 * not of the other tokens in the batch, not of the thread count. That makes
 * a prefill of n tokens produce bit-identical results to n single-token
 * decode steps.
 */
#include "model/model_int.h"
#include "kern/attn.h"

#include <math.h>
#include <string.h>

/* ==========================================================================
 * RoPE
 * ======================================================================== */

/*
 * ROTARY POSITION EMBEDDING
 *
 * RoPE rotates pairs of query/key components by an angle proportional to the
 * token's position, so that q·k depends on the positions only through their
 * difference. With n_rot rotated dimensions there are n_rot/2 pairs; pair i
 * turns by
 *
 *     theta_i(pos) = pos * freq_scale * base^(-2i / n_rot) / freq_factor[i]
 *
 * base is rope.freq_base (10000 for Llama 2, 500000 for Llama 3, 1e6 for
 * Qwen); freq_scale is 1 / rope.scaling.factor for linear position scaling,
 * else 1; freq_factor comes from Llama 3's rope_freqs tensor (1 when absent).
 * A pair (a, b) becomes (a cos - b sin, a sin + b cos).
 *
 * WHICH COMPONENTS PAIR UP
 *
 *   NORM (llama):  (x[2i], x[2i+1])           adjacent components
 *   NEOX (qwen):   (x[i],  x[i + n_rot/2])     the two halves
 *
 * Hugging Face's Llama uses the halves form, but llama.cpp's converter
 * permutes the rows of Wq and Wk when writing a llama GGUF so that the
 * adjacent form on the permuted weights equals HF's halves form on the
 * originals. Qwen GGUFs are not permuted, hence NEOX. Components at index
 * >= n_rot (partial rotary) are left untouched.
 *
 * PRECISION: the angles are computed in double and rounded once to float
 * cos/sin per (token, pair), so the table for a position does not depend on
 * the batch it is computed in.
 */

/* inv_freq[i] = freq_scale * base^(-2i/n_rot) / freq_factor[i], i < n_rot/2.
 * freq_factors: (n_rot/2) or NULL. */
void tn__rope_inv_freq(const tn_hparams *hp, const float *freq_factors, double *inv_freq)
{
    int n_pairs = hp->n_rot / 2;
    for (int i = 0; i < n_pairs; i++) {
        double f = (double)hp->rope_freq_scale * pow((double)hp->rope_freq_base, -2.0 * i / (double)hp->n_rot);
        if (freq_factors)
            f /= (double)freq_factors[i];
        inv_freq[i] = f;
    }
}

/* cos_t, sin_t: (n_tokens, n_pairs) tables for the tokens' positions. */
void tn__rope_tables(const double *inv_freq, int n_pairs, const int32_t *pos, int32_t n_tokens, float *cos_t,
                     float *sin_t)
{
    for (int32_t t = 0; t < n_tokens; t++) {
        for (int i = 0; i < n_pairs; i++) {
            double theta = (double)pos[t] * inv_freq[i];
            cos_t[(size_t)t * n_pairs + i] = (float)cos(theta);
            sin_t[(size_t)t * n_pairs + i] = (float)sin(theta);
        }
    }
}

/* Rotates the first n_rot components of each of n_heads vectors of head_dim
 * floats in x ((n_heads, head_dim), one token), with that token's tables
 * cs, sn ((n_rot/2) each). */
void tn__rope_apply(float *x, int n_heads, int head_dim, int n_rot, tn_rope_type type, const float *cs,
                    const float *sn)
{
    int half = n_rot / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            int i0 = type == TN_ROPE_NORM ? 2 * i : i;
            int i1 = type == TN_ROPE_NORM ? 2 * i + 1 : i + half;
            float a = v[i0], b = v[i1];
            v[i0] = a * cs[i] - b * sn[i];
            v[i1] = a * sn[i] + b * cs[i];
        }
    }
}

/* ==========================================================================
 * Attention
 * ======================================================================== */

/*
 * CAUSAL ATTENTION OVER THE CACHE
 *
 * Before this runs, the layer's K and V of every token in the batch have
 * been written into the cache at the tokens' slots, and tn__kv_apply_batch
 * has laid out, for each sequence in the batch, its cells in increasing
 * position order. So for token i the visible cells are exactly
 *
 *     order_slot[vis_off[i] .. vis_off[i] + vis_n[i])
 *
 * — every cell of its sequence with position <= pos[i], which includes the
 * cells written by this very batch (earlier tokens of a prefill chunk, and
 * the token itself). Positions need not be contiguous; a cell of another
 * sequence is never visible, whatever slot it is in.
 *
 * For query head h (of n_head) the K/V head is h / (n_head / n_head_kv)
 * (grouped-query attention: consecutive query heads share a K/V head).
 *
 *     s_j = (q · k_j) / sqrt(head_dim)        j over visible cells in order
 *     out = softmax(s) · V
 *
 * computed by kern/attn.h's tiled online softmax: one work item is one
 * (block of up to TN_ATTN_QBLOCK consecutive tokens of one sequence, K/V
 * head), whose tokens' groups of n_head / n_head_kv query heads walk the
 * visible cells together, tile by tile, so each K/V row is read and
 * widened (F16, Q8) once per block and group rather than once per token
 * and query head, and no scores are materialized beyond a tile. The tiles
 * start at each token's first visible cell and a token's arithmetic is the
 * same in a block as alone, so the result is bitwise independent of slot
 * choice, of batch composition, of prefill chunking and of the thread
 * count.
 *
 * PARALLELISM: an even split by cost. Item (block, kv head) costs the sum
 * of vis_n[i] + ITEM_OVERHEAD cell visits over its tokens; the items, in
 * (block, K/V head) order, are cut into nth contiguous runs of nearly
 * equal total cost (thread t takes the
 * items whose cost midpoint falls in [t, t+1) * total / nth), so a causal
 * prefill, whose later tokens see more cells, still ends together on all
 * threads. Each thread uses its own row of kv->scores as the kernel's
 * scratch. Each item writes its own outputs.
 *
 * LIMITATIONS: a decode step with fewer (token, K/V head) items than
 * threads leaves threads idle (one item's cells are not split over
 * threads).
 */

/* Multiply-adds (per q·k plus per p·v) below which attention stays on the caller. */
#define MIN_PARALLEL_FLOPS (1 << 15)
/* Cost of an item beyond its cell visits (query load, output, rescaling), in cell visits. */
#define ITEM_OVERHEAD 8

typedef struct attn_job {
    tn_kv_cache *kv;
    int32_t layer;
    int32_t n_tokens;
    int32_t n_head, n_head_kv, head_dim;
    const float *q;         /* (n_tokens, n_head*head_dim) roped queries */
    const int32_t *vis_off; /* (n_tokens) */
    const int32_t *vis_n;   /* (n_tokens) */
    int64_t total;          /* sum over items of their cost */
    float *out;             /* (n_tokens, n_head*head_dim) */
} attn_job;

static void attn_run(void *ctx, int ith, int nth)
{
    const attn_job *a = ctx;
    tn_kv_cache *kv = a->kv;
    int nw = TN_MIN(nth, kv->n_score_rows);
    if (ith >= nw)
        return;
    float *scratch = kv->scores + (size_t)ith * kv->score_row; /* (score_row) */
    const int hd = a->head_dim, group = a->n_head / a->n_head_kv;
    const size_t q_dim = (size_t)a->n_head * hd, kv_dim = (size_t)kv->kv_dim, nh = kv_dim / hd;
    const size_t layer_rows = (size_t)a->layer * kv->n_slots; /* first cell of the layer */
    const float scale = 1.0f / sqrtf((float)hd);
    /* This thread's items: cost midpoints in [lo, hi), in units of 2 * nw
     * so that the bounds are integers. */
    const int64_t lo = (int64_t)ith * 2 * a->total, hi = (int64_t)(ith + 1) * 2 * a->total;
    int64_t before = 0; /* cost of the items before the current one */

    for (int32_t i = 0, e; i < a->n_tokens; i = e) {
        /* the block of tokens i..e-1: one sequence's, at most TN_ATTN_QBLOCK */
        int64_t c = 0, nv[TN_ATTN_QBLOCK];
        for (e = i; e < a->n_tokens && e - i < TN_ATTN_QBLOCK && a->vis_off[e] == a->vis_off[i]; e++) {
            nv[e - i] = a->vis_n[e];
            c += (int64_t)a->vis_n[e] + ITEM_OVERHEAD;
        }
        if ((before + (int64_t)nh * c) * 2 * nw <= lo) { /* all of the block's items lie before this thread's run */
            before += (int64_t)nh * c;
            continue;
        }
        for (size_t hk = 0; hk < nh; hk++, before += c) {
            const int64_t mid = (2 * before + c) * nw;
            if (mid < lo)
                continue;
            if (mid >= hi)
                return;
            tn_attn_kv rows = {.stride = kv_dim, .sstride = nh, .hd_k = hd, .hd_v = hd};
            const size_t off = layer_rows * kv_dim + hk * hd; /* the K/V head's first element */
            if (kv->type == TN_KV_F32) {
                rows.type = TN_DTYPE_F32;
                rows.k = kv->k + off;
                rows.v = kv->v + off;
            } else if (kv->type == TN_KV_F16) {
                rows.type = TN_DTYPE_F16;
                rows.k = (const uint16_t *)kv->kx + off;
                rows.v = (const uint16_t *)kv->vx + off;
            } else { /* Q8: rows of head_dim int8, one scale per (cell, K/V head) */
                rows.type = TN_DTYPE_I8;
                rows.k = (const int8_t *)kv->kx + off;
                rows.v = (const int8_t *)kv->vx + off;
                rows.ks = kv->ks + layer_rows * nh + hk;
                rows.vs = kv->vs + layer_rows * nh + hk;
            }
            const size_t qo = (size_t)i * q_dim + hk * group * (size_t)hd; /* the group's first query head */
            tn_attn_block(&rows, kv->order_slot + a->vis_off[i], nv, e - i, a->q + qo, q_dim, (size_t)hd, group,
                          scale, a->out + qo, q_dim, (size_t)hd, scratch);
        }
    }
}

/* Attention of layer `layer` for the n_tokens queries q ((n_tokens,
 * n_head*head_dim), roped) into out (same shape), reading the cells laid
 * out by tn__kv_apply_batch. n_visible: the sum of vis_n; below a few
 * thousand cell visits the work runs on the caller alone (a fork/join would
 * cost more than it saves). Does not allocate. */
void tn__attention(tn_pool *pool, tn_kv_cache *kv, int32_t layer, const tn_hparams *hp, int32_t n_tokens,
                   const float *q, const int32_t *vis_off, const int32_t *vis_n, int64_t n_visible, float *out)
{
    attn_job a = {
        .kv = kv,
        .layer = layer,
        .n_tokens = n_tokens,
        .n_head = hp->n_head,
        .n_head_kv = hp->n_head_kv,
        .head_dim = hp->head_dim,
        .q = q,
        .vis_off = vis_off,
        .vis_n = vis_n,
        .total = (n_visible + (int64_t)n_tokens * ITEM_OVERHEAD) * hp->n_head_kv,
        .out = out,
    };
    if (n_visible * hp->n_head * hp->head_dim < MIN_PARALLEL_FLOPS)
        attn_run(&a, 0, 1);
    else
        tn_pool_run(pool, attn_run, &a);
}
