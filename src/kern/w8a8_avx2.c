/*
 * w8a8_avx2.c — W8A8 kernels for AVX2 (w8a8.h): the activation quantizer,
 * the 1-token integer dot and the register-tiled GEMM.
 *
 * THE 1-TOKEN DOT (decode). maddubs multiplies unsigned by signed bytes, so
 * each 32-byte step takes |x| (unsigned) and w with x's sign moved onto it
 * (sign_epi8), whose pair sums (at most 2 * 127 * 127) cannot saturate
 * int16; madd with ones widens to int32. Weights must be in [-127, 127]
 * (sign of -128 would wrap). The last n mod 32 products are summed in
 * scalar code.
 *
 * THE GEMM (prefill): tiles of 4 rows x 2 tokens in 8 ymm accumulators
 * (16 registers in all: no spills). AVX2 has no u8 x s8 dot that cannot
 * saturate with offset activations, so each 16-byte step widens the 4
 * weight and 2 activation vectors to int16 once (vpmovsxbw) and issues 8
 * vpmaddwd (pairs of int16 products into int32, exact) and 8 adds. The four
 * accumulators of a token are reduced together by hadd into 4 sums, which
 * become 4 floats y = (float)isum * (d_w * d_x) side by side, the scalar
 * kernel's bits. The last n mod 16 columns are summed in scalar code.
 */
#include "kern/w8a8.h"

#include <immintrin.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))

/* --- the activation quantizer: the scalar arithmetic, 8 lanes at a time -- */
float tn__w8a8_quant_avx2(const float *x, int8_t *q, int64_t n, bool offset)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m0 = _mm256_setzero_ps(), m1 = m0, m2 = m0, m3 = m0;
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) { /* max_ps(new, old): a NaN is skipped, as in the scalar loop */
        m0 = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), m0);
        m1 = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j + 8)), m1);
        m2 = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j + 16)), m2);
        m3 = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j + 24)), m3);
    }
    __m256 mv = _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    float amax = _mm_cvtss_f32(m4);
    for (; j < n; j++) {
        const float a = x[j] < 0.0f ? -x[j] : x[j];
        amax = a > amax ? a : amax;
    }
    const float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
    const __m256 vinv = _mm256_set1_ps(inv), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    const __m256 half = _mm256_set1_ps(0.5f);
    const __m256i flip = _mm256_set1_epi8(offset ? (char)0x80 : 0);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i iv[4];
    for (j = 0; j + 32 <= n; j += 32) {
        for (int k = 0; k < 4; k++) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * k), vinv);
            v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
            v = _mm256_add_ps(v, _mm256_or_ps(half, _mm256_and_ps(v, sign)));
            iv[k] = _mm256_cvttps_epi32(v);
        }
        /* packs works inside 128-bit lanes: the groups of four bytes come
         * out as iv0.lo iv1.lo iv2.lo iv3.lo | iv0.hi iv1.hi iv2.hi iv3.hi;
         * the permute puts them back in order */
        const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(iv[0], iv[1]), _mm256_packs_epi32(iv[2], iv[3]));
        const __m256i b = _mm256_xor_si256(_mm256_permutevar8x32_epi32(p, order), flip);
        _mm256_storeu_si256((__m256i *)(q + j), b);
    }
    for (; j < n; j++) {
        float v = x[j] * inv;
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        q[j] = (int8_t)((int32_t)(v + (v < 0.0f ? -0.5f : 0.5f)) ^ (offset ? 0x80 : 0));
    }
    return d;
}

/* --- the 1-token dot ------------------------------------------------------ */

static inline int32_t hsum_i32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

void tn__w8a8_idot_avx2(const int8_t *w, size_t w_stride, int nr, const int8_t *qx, int64_t n, int32_t *isum)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                      _mm256_setzero_si256()};
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
        const __m256i x = _mm256_loadu_si256((const __m256i *)(qx + j));
        const __m256i ax = _mm256_sign_epi8(x, x);
        for (int r = 0; r < nr; r++) {
            const __m256i wv = _mm256_loadu_si256((const __m256i *)(w + (size_t)r * w_stride + j));
            const __m256i p = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(wv, x));
            acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(p, ones));
        }
    }
    for (int r = 0; r < nr; r++) {
        int32_t s = hsum_i32(acc[r]);
        const int8_t *wr = w + (size_t)r * w_stride;
        for (int64_t k = j; k < n; k++)
            s += (int32_t)wr[k] * (int32_t)qx[k];
        isum[r] = s;
    }
}

/* --- the GEMM ------------------------------------------------------------- */

#define TR 4 /* rows per tile */
#define TT 2 /* tokens per tile */

AI __m256i widen(const int8_t *p) { return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p)); }

/* (a, b, c, d) of 8 lanes each -> their 4 lane sums, in this order. */
AI __m128i reduce4(__m256i a, __m256i b, __m256i c, __m256i d)
{
    const __m256i s = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

/* R rows (int8 part at w, stride ws) x T tokens (signed q at x, stride
 * xs), n columns: y[t * ys + r] = isum * (dw[r] * dx[t]). */
AI void tile(const int R, const int T, const int8_t *w, size_t ws, const int8_t *x, size_t xs, int64_t n,
             const float *dw, const float *dx, float *y, size_t ys)
{
    __m256i acc[TT][TR];
    _Pragma("GCC unroll 8") for (int t = 0; t < TT; t++)
        _Pragma("GCC unroll 8") for (int r = 0; r < TR; r++)
            acc[t][r] = _mm256_setzero_si256();
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __m256i wv[TR];
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
            wv[r] = widen(w + (size_t)r * ws + j);
        _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
            const __m256i xv = widen(x + (size_t)t * xs + j);
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
                acc[t][r] = _mm256_add_epi32(acc[t][r], _mm256_madd_epi16(xv, wv[r]));
        }
    }
    _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
        int32_t s[4];
        _mm_storeu_si128((__m128i *)s, reduce4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]));
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
            const int8_t *wr = w + (size_t)r * ws, *xt = x + (size_t)t * xs;
            for (int64_t k = j; k < n; k++)
                s[r] += (int32_t)wr[k] * (int32_t)xt[k];
            y[(size_t)t * ys + r] = (float)s[r] * (dw[r] * dx[t]);
        }
    }
}

typedef void (*tile_fn)(const int8_t *, size_t, const int8_t *, size_t, int64_t, const float *, const float *,
                        float *, size_t);
#define TILE_FN(R, T)                                                                                          \
    static void tile_##R##_##T(const int8_t *w, size_t ws, const int8_t *x, size_t xs, int64_t n,             \
                               const float *dw, const float *dx, float *y, size_t ys)                         \
    {                                                                                                          \
        tile(R, T, w, ws, x, xs, n, dw, dx, y, ys);                                                            \
    }
TILE_FN(1, 1)
TILE_FN(1, 2)
TILE_FN(2, 1)
TILE_FN(2, 2)
TILE_FN(3, 1)
TILE_FN(3, 2)
TILE_FN(4, 1)
TILE_FN(4, 2)
static const tile_fn tiles[TR][TT] = {
    {tile_1_1, tile_1_2}, {tile_2_1, tile_2_2}, {tile_3_1, tile_3_2}, {tile_4_1, tile_4_2}};

void tn__w8a8_gemm_avx2(const void *w, size_t w_row, int64_t nr, const int8_t *xq, size_t xq_row, const float *xd,
                        int64_t nt, int64_t n, float *y, size_t ys)
{
    for (int64_t t = 0; t < nt; t += TT) {
        const int T = (int)(nt - t < TT ? nt - t : TT);
        for (int64_t r = 0; r < nr; r += TR) {
            const int R = (int)(nr - r < TR ? nr - r : TR);
            const char *wr = (const char *)w + (size_t)r * w_row;
            float dw[TR];
            for (int k = 0; k < R; k++)
                memcpy(&dw[k], wr + (size_t)k * w_row, 4);
            tiles[R - 1][T - 1]((const int8_t *)wr + 4, w_row, xq + (size_t)t * xq_row, xq_row, n, dw, xd + t,
                                y + (size_t)t * ys + r, ys);
        }
    }
}
