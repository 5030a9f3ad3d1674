/*
 * attn — tiled attention with an online softmax (flash-attention style) for
 * one query token and one group of query heads that share a K/V head.
 *
 * Key idea: the visible cache rows are walked in tiles of TN_ATTN_TILE rows
 * counted from the first visible row. Per tile each head's scores are
 * computed, the running maximum m and sum l are updated, and the output
 * accumulator is rescaled by e^(m_old - m_new) before the tile's p·V is
 * added. Scores are never materialized beyond one tile, and each K/V row of
 * a tile is read (and widened from F16 / INT8) once for all the heads of the
 * group instead of once per head.
 *
 * BATCH INVARIANCE: the tile boundaries are multiples of TN_ATTN_TILE from
 * the start of the query's own visible run, and every reduction inside a
 * tile runs in a fixed order that depends only on head_dim and the tile's
 * length. So a query's output is a pure function of (its query rows, its
 * visible rows in order, the ISA): the same whatever else is in the batch,
 * however a prefill was chunked, whatever thread computes it.
 */
#ifndef TERN_KERN_ATTN_H
#define TERN_KERN_ATTN_H

#include "kern/dtype.h"

/* Rows per tile. */
#define TN_ATTN_TILE 32
/* Query heads processed together in one pass over the rows; larger groups
 * are done in blocks of this many. */
#define TN_ATTN_GBLOCK 8
/* Most query tokens tn_attn_block takes. */
#define TN_ATTN_QBLOCK 8

/* The K/V rows of one K/V head. Row c of K is hd_k elements at k + c *
 * stride (elements of `type`), row c of V is hd_v elements at v + c *
 * stride. type: TN_DTYPE_F32, TN_DTYPE_F16, or TN_DTYPE_I8 (int8 values,
 * row c scaled by ks[c * sstride] / vs[c * sstride]). K and V may be the
 * same memory (latent attention: V is the first hd_v values of K's row). */
typedef struct tn_attn_kv {
    tn_dtype type;
    const void *k, *v;
    const float *ks, *vs; /* TN_DTYPE_I8 only */
    size_t stride, sstride;
    int32_t hd_k, hd_v;
} tn_attn_kv;

/* Floats of scratch tn_attn_group needs for these row widths. */
size_t tn_attn_scratch_floats(int32_t hd_k, int32_t hd_v);

/* out_g = softmax_j((q_g · K_idx[j]) * scale) · V_idx[j], for the G query
 * heads q_g = q + g * q_stride (hd_k floats each) and the n rows idx[0..n)
 * visited in that order; out_g = out + g * out_stride (hd_v floats). n == 0
 * gives zeros. scratch: tn_attn_scratch_floats(hd_k, hd_v) floats, 64-byte
 * aligned, private to the caller. Uses the ISA kern.h's dispatch selects;
 * does not allocate. Any thread. */
void tn_attn_group(const tn_attn_kv *kv, const int32_t *idx, int64_t n, const float *q, size_t q_stride, int G,
                   float scale, float *out, size_t out_stride, float *scratch);

/* tn_attn_group for nq <= TN_ATTN_QBLOCK query tokens whose visible rows
 * are prefixes of the same idx (tokens of one sequence): query i sees
 * idx[0..n[i]), its heads start at q + i * q_tok (head g at + g *
 * q_stride), its outputs at out + i * out_tok (+ g * out_stride). The
 * tokens share the widening of each tile; each token's output is
 * bit-identical to tn_attn_group for it alone. Same scratch. */
void tn_attn_block(const tn_attn_kv *kv, const int32_t *idx, const int64_t *n, int nq, const float *q, size_t q_tok,
                   size_t q_stride, int G, float scale, float *out, size_t out_tok, size_t out_stride, float *scratch);

#endif /* TERN_KERN_ATTN_H */
