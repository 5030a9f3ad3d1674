/*
 * quants.c — reference dequantizers of the formats in quants.h, the
 * reference quantizers of the simple ones (Q4_1, Q5_0, Q5_1), and the Q8_K
 * activation quantizer.
 *
 * Key idea: every dequantizer reads elements through the accessors of
 * quants.h and rounds each scale product to f32 before using it, in the
 * order the layouts' comment gives, so its output equals the numpy reference
 * (the gguf package) bit for bit; tests/kern/test_quants.c checks that on
 * committed goldens. The quantizers round as llama.cpp's quantize_row_*_ref
 * (truncation of x + 0.5 after mapping to [0, 2^bits)), so their blocks
 * agree bit for bit with llama.cpp's and the gguf package's.
 */
#include "kern/quants.h"

#include <float.h>
#include <math.h>

const int8_t tn__iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* --- dequantization ---------------------------------------------------------- */

static void deq_q4_1(const tn_block_q4_1 *b, float *y, int64_t nb)
{
    for (int64_t k = 0; k < nb; k++, b++, y += 32) {
        const float d = tn_fp16_to_fp32(b->d), m = tn_fp16_to_fp32(b->m);
        for (int i = 0; i < 32; i++)
            y[i] = d * (float)tn__q4_1_q(b, i) + m;
    }
}

static void deq_q5_0(const tn_block_q5_0 *b, float *y, int64_t nb)
{
    for (int64_t k = 0; k < nb; k++, b++, y += 32) {
        const float d = tn_fp16_to_fp32(b->d);
        for (int i = 0; i < 32; i++)
            y[i] = d * (float)tn__q5_0_q(b, i);
    }
}

static void deq_q5_1(const tn_block_q5_1 *b, float *y, int64_t nb)
{
    for (int64_t k = 0; k < nb; k++, b++, y += 32) {
        const float d = tn_fp16_to_fp32(b->d), m = tn_fp16_to_fp32(b->m);
        for (int i = 0; i < 32; i++)
            y[i] = d * (float)tn__q5_1_q(b, i) + m;
    }
}

static void deq_iq4_nl(const tn_block_iq4_nl *b, float *y, int64_t nb)
{
    for (int64_t k = 0; k < nb; k++, b++, y += 32) {
        const float d = tn_fp16_to_fp32(b->d);
        for (int i = 0; i < 32; i++)
            y[i] = d * (float)tn__iq4_nl_q(b, i);
    }
}

static void deq_q2_K(const tn_block_q2_K *b, float *y, int64_t nb)
{
    for (int64_t k = 0; k < nb; k++, b++, y += TN_QK_K) {
        const float d = tn_fp16_to_fp32(b->d), dmin = tn_fp16_to_fp32(b->dmin);
        for (int j = 0; j < 16; j++) {
            const float dl = d * (float)(b->scales[j] & 15), ml = dmin * (float)(b->scales[j] >> 4);
            for (int i = 16 * j; i < 16 * j + 16; i++)
                y[i] = dl * (float)tn__q2_K_q(b, i) - ml;
        }
    }
}

static void deq_q3_K(const tn_block_q3_K *b, float *y, int64_t nb)
{
    for (int64_t k = 0; k < nb; k++, b++, y += TN_QK_K) {
        const float d = tn_fp16_to_fp32(b->d);
        for (int j = 0; j < 16; j++) {
            const float dl = d * (float)tn__q3_K_scale(b, j);
            for (int i = 16 * j; i < 16 * j + 16; i++)
                y[i] = dl * (float)tn__q3_K_q(b, i);
        }
    }
}

static void deq_q4_K(const tn_block_q4_K *b, float *y, int64_t nb)
{
    for (int64_t k = 0; k < nb; k++, b++, y += TN_QK_K) {
        const float d = tn_fp16_to_fp32(b->d), dmin = tn_fp16_to_fp32(b->dmin);
        for (int j = 0; j < 8; j++) {
            int sc, m;
            tn__q4_K_scale_min(b->scales, j, &sc, &m);
            const float dl = d * (float)sc, ml = dmin * (float)m;
            for (int i = 32 * j; i < 32 * j + 32; i++)
                y[i] = dl * (float)tn__q4_K_q(b, i) - ml;
        }
    }
}

static void deq_q5_K(const tn_block_q5_K *b, float *y, int64_t nb)
{
    for (int64_t k = 0; k < nb; k++, b++, y += TN_QK_K) {
        const float d = tn_fp16_to_fp32(b->d), dmin = tn_fp16_to_fp32(b->dmin);
        for (int j = 0; j < 8; j++) {
            int sc, m;
            tn__q4_K_scale_min(b->scales, j, &sc, &m);
            const float dl = d * (float)sc, ml = dmin * (float)m;
            for (int i = 32 * j; i < 32 * j + 32; i++)
                y[i] = dl * (float)tn__q5_K_q(b, i) - ml;
        }
    }
}

static void deq_q6_K(const tn_block_q6_K *b, float *y, int64_t nb)
{
    for (int64_t k = 0; k < nb; k++, b++, y += TN_QK_K) {
        const float d = tn_fp16_to_fp32(b->d);
        for (int j = 0; j < 16; j++) {
            const float dl = d * (float)b->scales[j];
            for (int i = 16 * j; i < 16 * j + 16; i++)
                y[i] = dl * (float)tn__q6_K_q(b, i);
        }
    }
}

static void deq_q8_K(const tn_block_q8_K *b, float *y, int64_t nb)
{
    for (int64_t k = 0; k < nb; k++, b++, y += TN_QK_K)
        for (int i = 0; i < TN_QK_K; i++)
            y[i] = b->d * (float)b->qs[i];
}

/* Called by tn_dequantize_row once it has checked n fills whole blocks. */
bool tn__quants_dequantize_row(tn_dtype t, const void *src, float *dst, int64_t n)
{
    switch (t) {
    case TN_DTYPE_Q4_1: deq_q4_1(src, dst, n / 32); return true;
    case TN_DTYPE_Q5_0: deq_q5_0(src, dst, n / 32); return true;
    case TN_DTYPE_Q5_1: deq_q5_1(src, dst, n / 32); return true;
    case TN_DTYPE_IQ4_NL: deq_iq4_nl(src, dst, n / 32); return true;
    case TN_DTYPE_Q2_K: deq_q2_K(src, dst, n / TN_QK_K); return true;
    case TN_DTYPE_Q3_K: deq_q3_K(src, dst, n / TN_QK_K); return true;
    case TN_DTYPE_Q4_K: deq_q4_K(src, dst, n / TN_QK_K); return true;
    case TN_DTYPE_Q5_K: deq_q5_K(src, dst, n / TN_QK_K); return true;
    case TN_DTYPE_Q6_K: deq_q6_K(src, dst, n / TN_QK_K); return true;
    case TN_DTYPE_Q8_K: deq_q8_K(src, dst, n / TN_QK_K); return true;
    default: return false;
    }
}

/* --- reference quantizers ------------------------------------------------------ */

/* Minimum and maximum of one block of 32. */
static void min_max32(const float *x, float *min, float *max)
{
    *min = FLT_MAX;
    *max = -FLT_MAX;
    for (int i = 0; i < 32; i++) {
        *min = x[i] < *min ? x[i] : *min;
        *max = x[i] > *max ? x[i] : *max;
    }
}

/* x rounded to [0, top] as llama.cpp does: truncation of x + 0.5. */
static int trunc_half(float x, float top) { return (int)TN_MIN(top, x + 0.5f); }

static void quantize_q4_1(const float *x, tn_block_q4_1 *y, int64_t nb)
{
    for (int64_t k = 0; k < nb; k++, x += 32, y++) {
        float min, max;
        min_max32(x, &min, &max);
        const float d = (max - min) / 15.0f;
        const float id = d ? 1.0f / d : 0.0f;
        y->d = tn_fp32_to_fp16(d);
        y->m = tn_fp32_to_fp16(min);
        for (int i = 0; i < 16; i++)
            y->qs[i] = (uint8_t)(trunc_half((x[i] - min) * id, 15.0f) | trunc_half((x[i + 16] - min) * id, 15.0f) << 4);
    }
}

/* The 5-bit quants q[32] into Q5's nibbles and high-bit word. */
static void pack5(const int *q, uint8_t *qs, uint8_t *qh)
{
    uint32_t h = 0;
    for (int i = 0; i < 16; i++) {
        qs[i] = (uint8_t)((q[i] & 15) | (q[i + 16] & 15) << 4);
        h |= (uint32_t)(q[i] >> 4) << i | (uint32_t)(q[i + 16] >> 4) << (i + 16);
    }
    for (int i = 0; i < 4; i++)
        qh[i] = (uint8_t)(h >> (8 * i));
}

static void quantize_q5_0(const float *x, tn_block_q5_0 *y, int64_t nb)
{
    for (int64_t k = 0; k < nb; k++, x += 32, y++) {
        /* the value of largest magnitude, sign kept, maps to -16 */
        float amax = 0.0f, max = 0.0f;
        for (int i = 0; i < 32; i++) {
            if (amax < fabsf(x[i])) {
                amax = fabsf(x[i]);
                max = x[i];
            }
        }
        const float d = max / -16.0f;
        const float id = d ? 1.0f / d : 0.0f;
        y->d = tn_fp32_to_fp16(d);
        int q[32];
        for (int i = 0; i < 32; i++)
            q[i] = (int)TN_MIN(31.0f, x[i] * id + 16.5f);
        pack5(q, y->qs, y->qh);
    }
}

static void quantize_q5_1(const float *x, tn_block_q5_1 *y, int64_t nb)
{
    for (int64_t k = 0; k < nb; k++, x += 32, y++) {
        float min, max;
        min_max32(x, &min, &max);
        const float d = (max - min) / 31.0f;
        const float id = d ? 1.0f / d : 0.0f;
        y->d = tn_fp32_to_fp16(d);
        y->m = tn_fp32_to_fp16(min);
        int q[32];
        for (int i = 0; i < 32; i++)
            q[i] = trunc_half((x[i] - min) * id, 31.0f);
        pack5(q, y->qs, y->qh);
    }
}

/* Called by tn_quantize_row once it has checked n fills whole blocks. */
bool tn__quants_quantize_row(tn_dtype t, const float *src, void *dst, int64_t n)
{
    switch (t) {
    case TN_DTYPE_Q4_1: quantize_q4_1(src, dst, n / 32); return true;
    case TN_DTYPE_Q5_0: quantize_q5_0(src, dst, n / 32); return true;
    case TN_DTYPE_Q5_1: quantize_q5_1(src, dst, n / 32); return true;
    case TN_DTYPE_Q8_K: tn__quantize_row_q8_K(src, dst, n); return true;
    default: return false;
    }
}

/* See quants.h. */
void tn__quantize_row_q8_K(const float *x, tn_block_q8_K *y, int64_t n)
{
    for (int64_t k = 0; k < n / TN_QK_K; k++, x += TN_QK_K, y++) {
        float amax = 0.0f, max = 0.0f;
        for (int i = 0; i < TN_QK_K; i++) {
            if (amax < fabsf(x[i])) {
                amax = fabsf(x[i]);
                max = x[i];
            }
        }
        if (amax == 0.0f) {
            memset(y, 0, sizeof(*y));
            continue;
        }
        const float iscale = -127.0f / max;
        for (int i = 0; i < TN_QK_K; i++)
            y->qs[i] = (int8_t)TN_MIN(127.0f, roundf(iscale * x[i]));
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int i = 0; i < 16; i++)
                s += y->qs[16 * j + i];
            y->bsums[j] = (int16_t)s;
        }
        y->d = 1.0f / iscale;
    }
}
