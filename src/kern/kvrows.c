/*
 * kvrows.c — attention's loops over F16 and INT8 cache rows (kvrows.h).
 *
 * HOW IT WORKS
 *
 * F16 dot products go through the ISA table's F16 dot kernel (the one F16
 * weight matrices use), so they are as fast as the table allows. F16 axpy
 * widens the row into a stack buffer and calls the table's F32 axpy. INT8
 * rows are widened in eight fixed lanes (plain C the compiler vectorizes);
 * the sum of lane k is always over elements k, k+8, ... and the lanes are
 * added in one fixed tree, so the order depends only on n.
 *
 * LIMITATIONS: no hand-written SIMD for the INT8 loops yet.
 */
#include "kern/kvrows.h"
#include "kern/kern_impl.h"

#include <math.h>

/* Longest row the stack buffers take; longer rows go in pieces. */
#define ROW_MAX 512

void tn_dot_f16_rows(const float *q, const uint16_t *base, const int32_t *idx, size_t stride, int64_t n_rows,
                     int64_t n, float scale, float *out)
{
    const tn__dot_fn dot = tn__kern_ops_cur()->dot_f16;
    for (int64_t i = 0; i < n_rows; i++) {
        float d;
        dot(base + (size_t)idx[i] * stride, 0, 1, q, n, &d);
        out[i] = d * scale;
    }
}

void tn_axpy_f16_rows(float *y, const float *p, const uint16_t *base, const int32_t *idx, size_t stride,
                      int64_t n_rows, int64_t n)
{
    void (*axpy)(float *, float, const float *, int64_t) = tn__kern_ops_cur()->axpy_f32;
    float buf[ROW_MAX];
    memset(y, 0, (size_t)n * sizeof(float));
    for (int64_t i = 0; i < n_rows; i++) {
        const uint16_t *row = base + (size_t)idx[i] * stride;
        for (int64_t j0 = 0; j0 < n; j0 += ROW_MAX) {
            const int64_t m = TN_MIN((int64_t)ROW_MAX, n - j0);
            for (int64_t j = 0; j < m; j++)
                buf[j] = tn_fp16_to_fp32(row[j0 + j]);
            axpy(y + j0, p[i], buf, m);
        }
    }
}

/* q · row over n int8 values in eight lanes, fixed order. */
static float dot_i8(const float *q, const int8_t *r, int64_t n)
{
    float acc[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += q[j + k] * (float)r[j + k];
    for (int k = 0; j < n; j++, k++)
        acc[k] += q[j] * (float)r[j];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

void tn_dot_q8_rows(const float *q, const int8_t *base, const float *scales, const int32_t *idx, size_t stride,
                    size_t sstride, int64_t n_rows, int64_t n, float scale, float *out)
{
    for (int64_t i = 0; i < n_rows; i++) {
        const size_t c = (size_t)idx[i];
        out[i] = dot_i8(q, base + c * stride, n) * (scales[c * sstride] * scale);
    }
}

void tn_axpy_q8_rows(float *y, const float *p, const int8_t *base, const float *scales, const int32_t *idx,
                     size_t stride, size_t sstride, int64_t n_rows, int64_t n)
{
    memset(y, 0, (size_t)n * sizeof(float));
    for (int64_t i = 0; i < n_rows; i++) {
        const size_t c = (size_t)idx[i];
        const int8_t *r = base + c * stride;
        const float a = p[i] * scales[c * sstride];
        for (int64_t j = 0; j < n; j++)
            y[j] += a * (float)r[j];
    }
}

void tn_quantize_row_kv_q8(const float *x, int8_t *q, float *d, int64_t n)
{
    float amax = 0.0f;
    for (int64_t j = 0; j < n; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    const float s = amax / 127.0f, inv = s > 0.0f ? 1.0f / s : 0.0f;
    for (int64_t j = 0; j < n; j++)
        q[j] = (int8_t)roundf(x[j] * inv);
    *d = s;
}
