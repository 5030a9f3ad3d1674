/*
 * attn.c — tiled online-softmax attention (attn.h): the algorithm and the
 * scalar reference of its inner loops.
 *
 * HOW IT WORKS
 *
 * For one query token and a block of up to TN_ATTN_GBLOCK query heads that
 * share a K/V head, with running max m_g = -inf, sum l_g = 0 and
 * accumulator acc_g = 0 per head, each tile of TN_ATTN_TILE visible rows
 * (the last one shorter) is processed as
 *
 *     widen the tile's K rows and V rows to F32 once (F16, INT8 x scale;
 *     F32 rows are used in place)
 *     s_gj   = (q_g · k_j) * scale                      all heads, all rows
 *     m'     = max(m_g, max_j s_gj)
 *     alpha  = e^(m_g - m')            (0 on the first tile)
 *     p_gj   = e^(s_gj - m')
 *     l_g    = l_g * alpha + sum_j p_gj
 *     acc_g  = acc_g * alpha + sum_j p_gj v_j           rows in order
 *
 * and at the end out_g = acc_g / l_g. This is exactly softmax(s) · V in
 * exact arithmetic; in floating point it differs from the materialized form
 * by the rounding of the rescalings (tests/kern/test_attn.c bounds it).
 *
 * WHY THE RESULT IS BATCH INVARIANT: tiles start at multiples of
 * TN_ATTN_TILE in the query's own visible run, so a query sees the same
 * tiles whatever the batch; alpha uses the C library's expf (the same on
 * every ISA); the tile loops (attn_impl.h) have fixed reduction orders.
 *
 * EDGE CASES: n == 0 or a head whose every score is -inf (l = 0) gives
 * zeros, as tn_softmax does for an all -inf row. NaN scores propagate.
 *
 * QUERY BLOCKS (tn_attn_block): up to TN_ATTN_QBLOCK tokens of one
 * sequence (their visible rows are prefixes of the same run) go through the
 * tiles together: each tile is widened once for the longest of them, then
 * every query that reaches the tile runs exactly the steps above on its own
 * part of it, with its own m, l, acc. So the block shares the widening and
 * the cache traffic, and each query's bits equal what it gets alone.
 *
 * LIMITATIONS: a decode step with fewer (token, K/V head) pairs than
 * threads leaves threads idle (no split of one query's rows over threads).
 */
#include "kern/attn_impl.h"

#include <math.h>

/* Floats rounded up to a cache line. */
static size_t up16(size_t n) { return (n + 15) & ~(size_t)15; }

size_t tn_attn_scratch_floats(int32_t hd_k, int32_t hd_v)
{
    const size_t qg = (size_t)TN_ATTN_QBLOCK * TN_ATTN_GBLOCK;
    return up16((size_t)TN_ATTN_TILE * (size_t)hd_k) + up16((size_t)TN_ATTN_TILE * (size_t)hd_v) +
           up16((size_t)TN_ATTN_GBLOCK * TN_ATTN_TILE) + up16(qg * (size_t)hd_v) + 2 * up16(qg);
}

static const tn__attn_ops *ops_cur(void)
{
    switch (tn_kern_isa()) {
    case TN_ISA_AVX512: return &tn__attn_ops_avx512;
    case TN_ISA_AVX2: return &tn__attn_ops_avx2;
    default: return &tn__attn_ops_scalar;
    }
}

/* Points rows[j] at tile row j of K (is_v false) or V, widening F16/INT8
 * rows into buf (nt rows of hd floats). */
static void tile_rows(const tn__attn_ops *ops, const tn_attn_kv *kv, bool is_v, const int32_t *idx, int nt,
                      float *buf, const float **rows)
{
    const int hd = is_v ? kv->hd_v : kv->hd_k;
    const void *base = is_v ? kv->v : kv->k;
    for (int j = 0; j < nt; j++) {
        const size_t c = (size_t)idx[j];
        float *dst = buf + (size_t)j * hd;
        switch (kv->type) {
        case TN_DTYPE_F16:
            ops->cvt_f16((const uint16_t *)base + c * kv->stride, dst, hd);
            rows[j] = dst;
            break;
        case TN_DTYPE_I8:
            ops->cvt_i8((const int8_t *)base + c * kv->stride, (is_v ? kv->vs : kv->ks)[c * kv->sstride], dst, hd);
            rows[j] = dst;
            break;
        default: rows[j] = (const float *)base + c * kv->stride; break;
        }
    }
}

void tn_attn_block(const tn_attn_kv *kv, const int32_t *idx, const int64_t *n, int nq, const float *q, size_t q_tok,
                   size_t q_stride, int G, float scale, float *out, size_t out_tok, size_t out_stride, float *scratch)
{
    const tn__attn_ops *ops = ops_cur();
    const int hk = kv->hd_k, hv = kv->hd_v, T = TN_ATTN_TILE, GB = TN_ATTN_GBLOCK;
    float *kt = scratch;                                        /* (T, hd_k) widened K tile */
    float *vt = kt + up16((size_t)T * hk);                      /* (T, hd_v) widened V tile */
    float *s = vt + up16((size_t)T * hv);                       /* (GBLOCK, T) one query's scores, then p */
    float *acc = s + up16((size_t)GB * T);                      /* (QBLOCK, GBLOCK, hd_v) */
    float *m = acc + up16((size_t)TN_ATTN_QBLOCK * GB * hv);    /* (QBLOCK, GBLOCK) running max */
    float *l = m + up16((size_t)TN_ATTN_QBLOCK * GB);           /* (QBLOCK, GBLOCK) running sum */
    const float *krows[TN_ATTN_TILE], *vrows[TN_ATTN_TILE];
    int64_t n_max = 0;
    for (int i = 0; i < nq; i++)
        n_max = TN_MAX(n_max, n[i]);

    for (int g0 = 0; g0 < G; g0 += GB) {
        const int gb = TN_MIN(GB, G - g0);
        memset(acc, 0, (size_t)nq * GB * hv * sizeof(float));
        for (int k = 0; k < nq * GB; k++) {
            m[k] = -INFINITY;
            l[k] = 0.0f;
        }
        for (int64_t t0 = 0; t0 < n_max; t0 += T) {
            const int ntw = (int)TN_MIN((int64_t)T, n_max - t0); /* rows any query of the block needs */
            tile_rows(ops, kv, false, idx + t0, ntw, kt, krows);
            tile_rows(ops, kv, true, idx + t0, ntw, vt, vrows);
            for (int i = 0; i < nq; i++) {
                if (n[i] <= t0)
                    continue;
                const int nt = (int)TN_MIN((int64_t)T, n[i] - t0); /* this query's part of the tile */
                ops->scores(q + i * q_tok + (size_t)g0 * q_stride, q_stride, gb, krows, nt, hk, scale, s, T);
                for (int g = 0; g < gb; g++) {
                    float *sg = s + (size_t)g * T, *mg = m + i * GB + g, *lg = l + i * GB + g;
                    const float mt = ops->tile_max(sg, nt, *mg);
                    if (mt == -INFINITY)
                        continue; /* nothing visible yet: p = 0, acc and l unchanged */
                    const float alpha = *mg == -INFINITY ? 0.0f : expf(*mg - mt);
                    *lg = *lg * alpha + ops->exp_tile(sg, nt, mt);
                    *mg = mt;
                    ops->pv(acc + ((size_t)i * GB + g) * hv, alpha, sg, vrows, nt, hv);
                }
            }
        }
        for (int i = 0; i < nq; i++)
            for (int g = 0; g < gb; g++) {
                float *o = out + i * out_tok + (size_t)(g0 + g) * out_stride;
                const float *a = acc + ((size_t)i * GB + g) * hv;
                const float lg = l[i * GB + g];
                if (lg > 0.0f) {
                    const float inv = 1.0f / lg;
                    for (int d = 0; d < hv; d++)
                        o[d] = a[d] * inv;
                } else {
                    memset(o, 0, (size_t)hv * sizeof(float));
                }
            }
    }
}

void tn_attn_group(const tn_attn_kv *kv, const int32_t *idx, int64_t n, const float *q, size_t q_stride, int G,
                   float scale, float *out, size_t out_stride, float *scratch)
{
    tn_attn_block(kv, idx, &n, 1, q, 0, q_stride, G, scale, out, 0, out_stride, scratch);
}

/* --- the scalar reference ------------------------------------------------- */

static void cvt_f16_ref(const uint16_t *src, float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = tn_fp16_to_fp32(src[i]);
}

static void cvt_i8_ref(const int8_t *src, float d, float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = (float)src[i] * d;
}

static void scores_ref(const float *q, size_t q_stride, int G, const float *const *k, int nt, int hd, float scale,
                       float *s, int ld)
{
    for (int g = 0; g < G; g++) {
        const float *qg = q + (size_t)g * q_stride;
        for (int j = 0; j < nt; j++) {
            float sum = 0.0f;
            for (int d = 0; d < hd; d++)
                sum += qg[d] * k[j][d];
            s[(size_t)g * ld + j] = sum * scale;
        }
    }
}

static float tile_max_ref(const float *s, int nt, float m)
{
    for (int j = 0; j < nt; j++)
        m = s[j] > m ? s[j] : m; /* not fmaxf: a libm call without -ffast-math */
    return m;
}

static float exp_tile_ref(float *s, int nt, float m)
{
    float sum = 0.0f;
    for (int j = 0; j < nt; j++) {
        s[j] = expf(s[j] - m);
        sum += s[j];
    }
    return sum;
}

static void pv_ref(float *acc, float alpha, const float *p, const float *const *v, int nt, int hd)
{
    for (int d = 0; d < hd; d++)
        acc[d] *= alpha;
    for (int j = 0; j < nt; j++)
        for (int d = 0; d < hd; d++)
            acc[d] += p[j] * v[j][d];
}

const tn__attn_ops tn__attn_ops_scalar = {
    .cvt_f16 = cvt_f16_ref,
    .cvt_i8 = cvt_i8_ref,
    .scores = scores_ref,
    .tile_max = tile_max_ref,
    .exp_tile = exp_tile_ref,
    .pv = pv_ref,
};
