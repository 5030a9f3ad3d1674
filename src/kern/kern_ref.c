/*
 * kern_ref.c — the scalar reference kernels: the specification of every
 * operator in kern.h.
 *
 * Key idea: plain loops in the most obvious order, so each result can be
 * checked by reading the code. The dot products sum left to right in f32
 * (GCC does not contract a*b+c into an FMA in ISO C mode, so this file rounds
 * the same on every machine); the small operators accumulate their sums in
 * double. The ISA files must agree with these within rounding (matrix
 * products) and are tested against them; the small operators (rmsnorm,
 * softmax, swiglu) are only implemented here.
 */
#include "kern/kern_impl.h"

#include <math.h>

/* --- dot products (one weight row against one activation row) ----------- */

static float row_f32(const void *wv, const void *xv, int64_t n)
{
    const float *w = wv, *x = xv;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++)
        sum += w[i] * x[i];
    return sum;
}

static float row_f16(const void *wv, const void *xv, int64_t n)
{
    const uint16_t *w = wv;
    const float *x = xv;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++)
        sum += tn_fp16_to_fp32(w[i]) * x[i];
    return sum;
}

static float row_bf16(const void *wv, const void *xv, int64_t n)
{
    const uint16_t *w = wv;
    const float *x = xv;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++)
        sum += tn_bf16_to_fp32(w[i]) * x[i];
    return sum;
}

static float row_q8_0(const void *wv, const void *xv, int64_t n)
{
    const tn_block_q8_0 *w = wv, *x = xv;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / TN_QK8_0; b++) {
        int32_t isum = 0;
        for (int j = 0; j < TN_QK8_0; j++)
            isum += (int32_t)w[b].qs[j] * x[b].qs[j];
        sum += (float)isum * (tn_fp16_to_fp32(w[b].d) * tn_fp16_to_fp32(x[b].d));
    }
    return sum;
}

static float row_q4_0(const void *wv, const void *xv, int64_t n)
{
    const tn_block_q4_0 *w = wv;
    const tn_block_q8_0 *x = xv;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / TN_QK4_0; b++) {
        int32_t isum = 0;
        for (int j = 0; j < TN_QK4_0 / 2; j++) {
            isum += ((w[b].qs[j] & 15) - 8) * (int32_t)x[b].qs[j];
            isum += ((w[b].qs[j] >> 4) - 8) * (int32_t)x[b].qs[j + TN_QK4_0 / 2];
        }
        sum += (float)isum * (tn_fp16_to_fp32(w[b].d) * tn_fp16_to_fp32(x[b].d));
    }
    return sum;
}

/* The table's entry points: one row at a time. */
#define ROWS(name)                                                                          \
    static void dot_##name(const void *w, size_t ws, int nr, const void *x, int64_t n, float *y) \
    {                                                                                       \
        for (int r = 0; r < nr; r++)                                                        \
            y[r] = row_##name((const char *)w + ws * (size_t)r, x, n);                      \
    }
ROWS(f32)
ROWS(f16)
ROWS(bf16)
ROWS(q8_0)
ROWS(q4_0)
#undef ROWS

static void quantize_q8_0(const float *x, tn_block_q8_0 *y, int64_t n)
{
    tn_status s = tn_quantize_row(TN_DTYPE_Q8_0, x, y, n);
    assert(s == TN_OK);
    (void)s;
}

static void axpy_f32(float *y, float a, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

static void softmax_ref(float *x, int64_t n);
static void swiglu_ref(float *gate, const float *up, int64_t n);

const tn__kern_ops tn__kern_ops_scalar = {
    .isa = TN_ISA_SCALAR,
    .dot_f32 = dot_f32,
    .dot_f16 = dot_f16,
    .dot_bf16 = dot_bf16,
    .dot_q8_0 = dot_q8_0,
    .dot_q4_0 = dot_q4_0,
    .quantize_q8_0 = quantize_q8_0,
    .axpy_f32 = axpy_f32,
    .softmax = softmax_ref,
    .swiglu = swiglu_ref,
};

/* --- small operators ------------------------------------------------------ */

/* out[i] = x[i] / sqrt(mean(x²) + eps) * w[i] (w NULL: no scale). The sum of
 * squares is accumulated in double, left to right. out may equal x. */
void tn_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps)
{
    if (n <= 0)
        return;
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    const float mean = (float)(ss / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int64_t i = 0; i < n; i++)
        out[i] = w ? x[i] * scale * w[i] : x[i] * scale;
}

/* gate[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + e^-g). */
static void swiglu_ref(float *gate, const float *up, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        const float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

/* In-place softmax; the normalizing sum is accumulated in double. A row whose
 * maximum is -inf (everything masked) becomes all zeros rather than NaN. */
static void softmax_ref(float *x, int64_t n)
{
    if (n <= 0)
        return;
    float max = x[0];
    for (int64_t i = 1; i < n; i++)
        max = x[i] > max ? x[i] : max;
    if (max == -INFINITY) {
        for (int64_t i = 0; i < n; i++)
            x[i] = 0.0f;
        return;
    }
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++)
        x[i] *= inv;
}
