/*
 * kern_avx2.c — the AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma
 * -mf16c; cpu.c only selects them on CPUs that have all three).
 *
 * HOW IT WORKS
 *
 * Every kernel computes up to four weight rows against one activation row
 * (TN__DOT_ROWS), sharing the activation loads and per-block activation
 * work. The body is an always-inline function of a compile-time row count;
 * each row keeps its own accumulators and performs the same operations in
 * the same order whatever the row count, so a row's result is bit-identical
 * whether it is computed alone or with others.
 *
 * Float weights: two 8-lane FMA accumulators per row (16 elements per step),
 * summed at the end by one fixed tree, then a scalar tail.
 *
 * Int8 weights: one ymm register holds one 32-byte block. maddubs multiplies
 * unsigned by signed bytes and adds pairs into int16: Q8_0 uses the sign
 * trick (|w| times x carrying w's sign; a pair is at most 2·128·127, no
 * saturation); Q4_0 multiplies the unsigned nibbles 0..15 and subtracts the
 * pairs of 8·x (shared by the rows), which is exactly (nib - 8)·x. madd
 * against ones widens to eight int32 partial sums, which are converted to
 * f32 (exact: |sum| < 2^24) and FMA'd with the block's d_w·d_x. The scales
 * of eight blocks are converted together (one vcvtph2ps) into a small array
 * and broadcast from memory. Blocks left over after the groups of eight go
 * through a scalar tail.
 */
#include "kern/kern_impl.h"

#include <immintrin.h>
#include <stdalign.h>

#define AI static inline __attribute__((always_inline))

/* How far ahead of the int8 kernels' position each weight row is prefetched
 * (see kern_avx512.c). */
#define PREFETCH_BYTES 512

static inline float f16(uint16_t h) { return _cvtsh_ss(h); }

/* Sum of 8 lanes in a fixed order. */
AI float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* --- float weights ---------------------------------------------------------- */

enum { W_F32, W_F16, W_BF16 };

/* 8 weights of row w from element i, as f32. */
AI __m256 wload(const int kind, const void *w, int64_t i)
{
    switch (kind) {
    case W_F32: return _mm256_loadu_ps((const float *)w + i);
    case W_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
    default: {
        const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
    }
    }
}

AI float wscalar(const int kind, const void *w, int64_t i)
{
    switch (kind) {
    case W_F32: return ((const float *)w)[i];
    case W_F16: return f16(((const uint16_t *)w)[i]);
    default: return tn_bf16_to_fp32(((const uint16_t *)w)[i]);
    }
}

AI void float_rows(const int kind, const char *w, size_t ws, const int nr, const float *x, int64_t n, float *y)
{
    __m256 acc[TN__DOT_ROWS][2];
    for (int r = 0; r < nr; r++)
        acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
        for (int r = 0; r < nr; r++) {
            acc[r][0] = _mm256_fmadd_ps(wload(kind, w + ws * r, i), x0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(wload(kind, w + ws * r, i + 8), x1, acc[r][1]);
        }
    }
    if (i + 8 <= n) {
        const __m256 x0 = _mm256_loadu_ps(x + i);
        for (int r = 0; r < nr; r++)
            acc[r][0] = _mm256_fmadd_ps(wload(kind, w + ws * r, i), x0, acc[r][0]);
        i += 8;
    }
    for (int r = 0; r < nr; r++) {
        float sum = hsum(_mm256_add_ps(acc[r][0], acc[r][1]));
        for (int64_t j = i; j < n; j++)
            sum += wscalar(kind, w + ws * r, j) * x[j];
        y[r] = sum;
    }
}

/* --- int8 weights ------------------------------------------------------------ */

enum { W_Q8_0, W_Q4_0 };

AI uint16_t block_d(const int kind, const char *b)
{
    return kind == W_Q8_0 ? ((const tn_block_q8_0 *)b)->d : ((const tn_block_q4_0 *)b)->d;
}

/* The f16 scales of 8 blocks of bsz bytes from p, as f32. */
AI __m256 scales8(const int kind, const char *p, size_t bsz)
{
    alignas(16) uint16_t h[8];
    for (int k = 0; k < 8; k++)
        h[k] = block_d(kind, p + bsz * k);
    return _mm256_cvtph_ps(_mm_load_si128((const __m128i *)h));
}

/* A Q4_0 block's nibbles as unsigned bytes in element order: [qs & 15 | qs >> 4]. */
AI __m256i load_q4(const tn_block_q4_0 *b)
{
    const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)b->qs));
    return _mm256_and_si256(_mm256_blend_epi32(v, _mm256_srli_epi16(v, 4), 0xf0), _mm256_set1_epi8(15));
}

/* Exact scalar sum of one block's 32 products. */
AI int32_t block_isum(const int kind, const char *wb, const tn_block_q8_0 *x)
{
    int32_t isum = 0;
    if (kind == W_Q8_0) {
        const tn_block_q8_0 *w = (const tn_block_q8_0 *)wb;
        for (int j = 0; j < TN_QK8_0; j++)
            isum += (int32_t)w->qs[j] * x->qs[j];
    } else {
        const tn_block_q4_0 *w = (const tn_block_q4_0 *)wb;
        for (int j = 0; j < TN_QK4_0 / 2; j++) {
            isum += ((w->qs[j] & 15) - 8) * (int32_t)x->qs[j];
            isum += ((w->qs[j] >> 4) - 8) * (int32_t)x->qs[j + TN_QK4_0 / 2];
        }
    }
    return isum;
}

AI void int8_rows(const int kind, const char *w, size_t ws, const int nr, const tn_block_q8_0 *x, int64_t n, float *y)
{
    const size_t bsz = kind == W_Q8_0 ? sizeof(tn_block_q8_0) : sizeof(tn_block_q4_0);
    const int64_t nb = n / TN_QK8_0;
    const __m256i ones = _mm256_set1_epi16(1), eights = _mm256_set1_epi8(8);
    alignas(32) float s[TN__DOT_ROWS][8];
    __m256 acc[TN__DOT_ROWS][2];
    for (int r = 0; r < nr; r++)
        acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8) {
        const __m256 dx = scales8(W_Q8_0, (const char *)(x + b), sizeof(tn_block_q8_0));
        for (int r = 0; r < nr; r++) {
            const char *wr = w + ws * r + bsz * b;
            for (size_t off = 0; off < 8 * bsz; off += 64)
                _mm_prefetch(wr + PREFETCH_BYTES + off, _MM_HINT_T0);
            _mm256_store_ps(s[r], _mm256_mul_ps(scales8(kind, wr, bsz), dx));
        }
        for (int k = 0; k < 8; k++) {
            const __m256i xq = _mm256_loadu_si256((const __m256i *)x[b + k].qs);
            const __m256i x8 = kind == W_Q4_0 ? _mm256_maddubs_epi16(eights, xq) : xq; /* pairs of 8·x */
            for (int r = 0; r < nr; r++) {
                const char *wb = w + ws * r + bsz * (size_t)(b + k);
                __m256i p16;
                if (kind == W_Q8_0) {
                    const __m256i wq = _mm256_loadu_si256((const __m256i *)((const tn_block_q8_0 *)wb)->qs);
                    p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(xq, wq));
                } else {
                    p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(load_q4((const tn_block_q4_0 *)wb), xq), x8);
                }
                const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
                acc[r][k & 1] = _mm256_fmadd_ps(_mm256_broadcast_ss(&s[r][k]), p, acc[r][k & 1]);
            }
        }
    }
    for (int r = 0; r < nr; r++) {
        float sum = hsum(_mm256_add_ps(acc[r][0], acc[r][1]));
        for (int64_t c = b; c < nb; c++) {
            const char *wb = w + ws * r + bsz * (size_t)c;
            sum += (float)block_isum(kind, wb, x + c) * (f16(block_d(kind, wb)) * f16(x[c].d));
        }
        y[r] = sum;
    }
}

/* --- the table's entry points: groups of TN__DOT_ROWS rows, then single rows */

#define DOT_ENTRY(name, body, kind, xtype)                                                            \
    static void name(const void *w, size_t ws, int nr, const void *x, int64_t n, float *y)           \
    {                                                                                                 \
        const char *wc = w;                                                                           \
        int r = 0;                                                                                    \
        for (; r + TN__DOT_ROWS <= nr; r += TN__DOT_ROWS)                                             \
            body(kind, wc + ws * (size_t)r, ws, TN__DOT_ROWS, (const xtype *)x, n, y + r);            \
        for (; r < nr; r++)                                                                           \
            body(kind, wc + ws * (size_t)r, ws, 1, (const xtype *)x, n, y + r);                       \
    }

DOT_ENTRY(dot_f32, float_rows, W_F32, float)
DOT_ENTRY(dot_f16, float_rows, W_F16, float)
DOT_ENTRY(dot_bf16, float_rows, W_BF16, float)
DOT_ENTRY(dot_q8_0, int8_rows, W_Q8_0, tn_block_q8_0)
DOT_ENTRY(dot_q4_0, int8_rows, W_Q4_0, tn_block_q8_0)

/* --- activation quantization ----------------------------------------------- */

/* roundf (ties away from zero) of each lane, as int32: adding the largest
 * float below 0.5 with the lane's sign and truncating is exact for every
 * float of magnitude below 2^23 (checked exhaustively for |v| < 192). */
AI __m256i round_away(__m256 v)
{
    const __m256 sign = _mm256_and_ps(v, _mm256_set1_ps(-0.0f));
    const __m256 half = _mm256_or_ps(sign, _mm256_set1_ps(0.49999997f));
    return _mm256_cvttps_epi32(_mm256_add_ps(v, half));
}

static void quantize_q8_0(const float *x, tn_block_q8_0 *y, int64_t n)
{
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t b = 0; b < n / TN_QK8_0; b++, x += TN_QK8_0) {
        __m256 v[4];
        for (int k = 0; k < 4; k++)
            v[k] = _mm256_loadu_ps(x + 8 * k);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v[0], abs_mask), _mm256_and_ps(v[1], abs_mask)),
                                 _mm256_max_ps(_mm256_and_ps(v[2], abs_mask), _mm256_and_ps(v[3], abs_mask)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float d = amax / 127.0f;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        const __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++)
            q[k] = round_away(_mm256_mul_ps(v[k], vid));
        /* int32 -> int8 (values are within [-127, 127]); the packs work per
         * 128-bit lane, the permute puts the dwords back in element order */
        const __m256i p01 = _mm256_packs_epi32(q[0], q[1]);
        const __m256i p23 = _mm256_packs_epi32(q[2], q[3]);
        __m256i p = _mm256_packs_epi16(p01, p23);
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y[b].qs, p);
    }
}

static void axpy_f32(float *y, float a, const float *x, int64_t n)
{
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

const tn__kern_ops tn__kern_ops_avx2 = {
    .isa = TN_ISA_AVX2,
    .dot_f32 = dot_f32,
    .dot_f16 = dot_f16,
    .dot_bf16 = dot_bf16,
    .dot_q8_0 = dot_q8_0,
    .dot_q4_0 = dot_q4_0,
    .quantize_q8_0 = quantize_q8_0,
    .axpy_f32 = axpy_f32,
};
