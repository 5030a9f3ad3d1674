/*
 * quants_ref.c — the scalar reference dot products of the formats in
 * quants.h: the specification their ISA kernels are checked against.
 *
 * Key idea: the integer products of a block are summed exactly (int32),
 * then scaled in f32, in the plain order written here:
 *
 *   32-element blocks, Q8_0 activations (d_x, q_x):
 *     Q5_0, IQ4_NL: sum += Σ q_w·q_x · (d_w·d_x)
 *     Q4_1, Q5_1:   sum += Σ q_w·q_x · (d_w·d_x) + (m_w·d_x) · Σ q_x
 *   256-element K blocks, Q8_K activations (d_x, q_x, bsums):
 *     Q3_K, Q6_K:   sum += (d_w·d_x) · Σ_j s_j · Σ_{i in j} q_w·q_x
 *     Q2_K, Q4_K, Q5_K:
 *                   sum += (d_w·d_x) · Σ_j s_j · Σ_{i in j} q_w·q_x
 *                        - (dmin_w·d_x) · Σ_j m_j · (Σ_{i in j} q_x, from bsums)
 *
 * Every sum fits in int32: the largest, Q6_K's, is at most
 * 16 sub-blocks · 128 (|scale|) · 16 · 32 · 128 < 2^27. The
 * result of a row depends only on (row, x, n), as kern_impl.h requires.
 */
#include "kern/kern_impl.h"

/* --- 32-element blocks against Q8_0 ----------------------------------------- */

static float row_q4_1(const void *wv, const void *xv, int64_t n)
{
    const tn_block_q4_1 *w = wv;
    const tn_block_q8_0 *x = xv;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / 32; b++) {
        int32_t isum = 0, xsum = 0;
        for (int i = 0; i < 32; i++) {
            isum += tn__q4_1_q(&w[b], i) * (int32_t)x[b].qs[i];
            xsum += x[b].qs[i];
        }
        const float dx = tn_fp16_to_fp32(x[b].d);
        sum += (float)isum * (tn_fp16_to_fp32(w[b].d) * dx) + (tn_fp16_to_fp32(w[b].m) * dx) * (float)xsum;
    }
    return sum;
}

static float row_q5_1(const void *wv, const void *xv, int64_t n)
{
    const tn_block_q5_1 *w = wv;
    const tn_block_q8_0 *x = xv;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / 32; b++) {
        int32_t isum = 0, xsum = 0;
        for (int i = 0; i < 32; i++) {
            isum += tn__q5_1_q(&w[b], i) * (int32_t)x[b].qs[i];
            xsum += x[b].qs[i];
        }
        const float dx = tn_fp16_to_fp32(x[b].d);
        sum += (float)isum * (tn_fp16_to_fp32(w[b].d) * dx) + (tn_fp16_to_fp32(w[b].m) * dx) * (float)xsum;
    }
    return sum;
}

static float row_q5_0(const void *wv, const void *xv, int64_t n)
{
    const tn_block_q5_0 *w = wv;
    const tn_block_q8_0 *x = xv;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / 32; b++) {
        int32_t isum = 0;
        for (int i = 0; i < 32; i++)
            isum += tn__q5_0_q(&w[b], i) * (int32_t)x[b].qs[i];
        sum += (float)isum * (tn_fp16_to_fp32(w[b].d) * tn_fp16_to_fp32(x[b].d));
    }
    return sum;
}

static float row_iq4_nl(const void *wv, const void *xv, int64_t n)
{
    const tn_block_iq4_nl *w = wv;
    const tn_block_q8_0 *x = xv;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / 32; b++) {
        int32_t isum = 0;
        for (int i = 0; i < 32; i++)
            isum += tn__iq4_nl_q(&w[b], i) * (int32_t)x[b].qs[i];
        sum += (float)isum * (tn_fp16_to_fp32(w[b].d) * tn_fp16_to_fp32(x[b].d));
    }
    return sum;
}

/* --- K blocks against Q8_K ----------------------------------------------------- */

static float row_q2_K(const void *wv, const void *xv, int64_t n)
{
    const tn_block_q2_K *w = wv;
    const tn_block_q8_K *x = xv;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / TN_QK_K; b++) {
        int32_t sumi = 0, summ = 0;
        for (int j = 0; j < 16; j++) {
            int32_t isum = 0;
            for (int i = 16 * j; i < 16 * j + 16; i++)
                isum += tn__q2_K_q(&w[b], i) * (int32_t)x[b].qs[i];
            sumi += (w[b].scales[j] & 15) * isum;
            summ += (w[b].scales[j] >> 4) * (int32_t)x[b].bsums[j];
        }
        sum += (tn_fp16_to_fp32(w[b].d) * x[b].d) * (float)sumi - (tn_fp16_to_fp32(w[b].dmin) * x[b].d) * (float)summ;
    }
    return sum;
}

static float row_q3_K(const void *wv, const void *xv, int64_t n)
{
    const tn_block_q3_K *w = wv;
    const tn_block_q8_K *x = xv;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / TN_QK_K; b++) {
        int32_t sumi = 0;
        for (int j = 0; j < 16; j++) {
            int32_t isum = 0;
            for (int i = 16 * j; i < 16 * j + 16; i++)
                isum += tn__q3_K_q(&w[b], i) * (int32_t)x[b].qs[i];
            sumi += tn__q3_K_scale(&w[b], j) * isum;
        }
        sum += (tn_fp16_to_fp32(w[b].d) * x[b].d) * (float)sumi;
    }
    return sum;
}

static float row_q4_K(const void *wv, const void *xv, int64_t n)
{
    const tn_block_q4_K *w = wv;
    const tn_block_q8_K *x = xv;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / TN_QK_K; b++) {
        int32_t sumi = 0, summ = 0;
        for (int j = 0; j < 8; j++) {
            int sc, m;
            tn__q4_K_scale_min(w[b].scales, j, &sc, &m);
            int32_t isum = 0;
            for (int i = 32 * j; i < 32 * j + 32; i++)
                isum += tn__q4_K_q(&w[b], i) * (int32_t)x[b].qs[i];
            sumi += sc * isum;
            summ += m * ((int32_t)x[b].bsums[2 * j] + x[b].bsums[2 * j + 1]);
        }
        sum += (tn_fp16_to_fp32(w[b].d) * x[b].d) * (float)sumi - (tn_fp16_to_fp32(w[b].dmin) * x[b].d) * (float)summ;
    }
    return sum;
}

static float row_q5_K(const void *wv, const void *xv, int64_t n)
{
    const tn_block_q5_K *w = wv;
    const tn_block_q8_K *x = xv;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / TN_QK_K; b++) {
        int32_t sumi = 0, summ = 0;
        for (int j = 0; j < 8; j++) {
            int sc, m;
            tn__q4_K_scale_min(w[b].scales, j, &sc, &m);
            int32_t isum = 0;
            for (int i = 32 * j; i < 32 * j + 32; i++)
                isum += tn__q5_K_q(&w[b], i) * (int32_t)x[b].qs[i];
            sumi += sc * isum;
            summ += m * ((int32_t)x[b].bsums[2 * j] + x[b].bsums[2 * j + 1]);
        }
        sum += (tn_fp16_to_fp32(w[b].d) * x[b].d) * (float)sumi - (tn_fp16_to_fp32(w[b].dmin) * x[b].d) * (float)summ;
    }
    return sum;
}

static float row_q6_K(const void *wv, const void *xv, int64_t n)
{
    const tn_block_q6_K *w = wv;
    const tn_block_q8_K *x = xv;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / TN_QK_K; b++) {
        int32_t sumi = 0;
        for (int j = 0; j < 16; j++) {
            int32_t isum = 0;
            for (int i = 16 * j; i < 16 * j + 16; i++)
                isum += tn__q6_K_q(&w[b], i) * (int32_t)x[b].qs[i];
            sumi += w[b].scales[j] * isum;
        }
        sum += (tn_fp16_to_fp32(w[b].d) * x[b].d) * (float)sumi;
    }
    return sum;
}

/* The table's entry points: one row at a time. */
#define ROWS(name)                                                                               \
    static void dot_##name(const void *w, size_t ws, int nr, const void *x, int64_t n, float *y) \
    {                                                                                            \
        for (int r = 0; r < nr; r++)                                                             \
            y[r] = row_##name((const char *)w + ws * (size_t)r, x, n);                           \
    }
ROWS(q4_1)
ROWS(q5_0)
ROWS(q5_1)
ROWS(iq4_nl)
ROWS(q2_K)
ROWS(q3_K)
ROWS(q4_K)
ROWS(q5_K)
ROWS(q6_K)
#undef ROWS

const tn__quant_ops tn__quant_ops_scalar = {
    .dot =
        {
            [TN_DTYPE_Q4_1] = dot_q4_1,
            [TN_DTYPE_Q5_0] = dot_q5_0,
            [TN_DTYPE_Q5_1] = dot_q5_1,
            [TN_DTYPE_IQ4_NL] = dot_iq4_nl,
            [TN_DTYPE_Q2_K] = dot_q2_K,
            [TN_DTYPE_Q3_K] = dot_q3_K,
            [TN_DTYPE_Q4_K] = dot_q4_K,
            [TN_DTYPE_Q5_K] = dot_q5_K,
            [TN_DTYPE_Q6_K] = dot_q6_K,
        },
};
