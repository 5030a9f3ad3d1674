/*
 * w8a8_avx512.c — W8A8 kernels for AVX-512 VNNI (w8a8.h): the activation
 * quantizer, the 1-token integer dot and the register-tiled GEMM.
 *
 * THE 1-TOKEN DOT (decode). vpdpbusd adds four u8 x s8 products into each
 * int32 lane. It takes |x| as the unsigned operand and w with x's sign (w
 * negated where x < 0, a masked subtract), so the products are exactly
 * q_w * q_x. The last n mod 64 bytes come through masked loads that fill
 * zeros, which add nothing. Weights must be in [-127, 127].
 *
 * THE GEMM (prefill): tiles of 4 rows x 6 tokens in 24 zmm accumulators.
 * Each 64-byte step loads 4 weight vectors and 6 activation vectors and
 * issues 24 vpdpbusd, so each weight byte read from cache serves six tokens
 * and each activation byte four rows. The activations come offset to
 * unsigned (xu = q + 128, written so by the quantizer), which vpdpbusd takes
 * as they are; the offset is taken back with the row sums: sum (q + 128) w
 * = sum q w + 128 sum w, and wsum[r] = sum w is computed once per block of
 * rows (one vpdpbusd against a vector of ones per 64 weights). The per-row
 * scale means nothing but integer work happens inside the row: the four
 * accumulators of a token are reduced together by one shuffle tree into a
 * vector of 4 sums, which becomes 4 floats y = (float)isum * (d_w * d_x)
 * stored side by side. Exact integers and the same f32 epilogue as the
 * scalar kernel: every element has the scalar kernel's bits.
 */
#include "kern/w8a8.h"

#include <immintrin.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))

/* --- the activation quantizer ---------------------------------------------
 * The same arithmetic as the scalar one (w8a8.c), element for element: max
 * is exact in any order, and v * inv, the clamp, v ± 0.5 and truncation are
 * single IEEE operations, so q has the scalar bytes. */
float tn__w8a8_quant_avx512(const float *x, int8_t *q, int64_t n, bool offset)
{
    const __m512 sign = _mm512_set1_ps(-0.0f);
    __m512 m0 = _mm512_setzero_ps(), m1 = m0, m2 = m0, m3 = m0;
    int64_t j = 0;
    for (; j + 64 <= n; j += 64) { /* max_ps(new, old): a NaN is skipped, as in the scalar loop */
        m0 = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_loadu_ps(x + j)), m0);
        m1 = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_loadu_ps(x + j + 16)), m1);
        m2 = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_loadu_ps(x + j + 32)), m2);
        m3 = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_loadu_ps(x + j + 48)), m3);
    }
    for (; j < n; j += 16) {
        const __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1);
        m0 = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_maskz_loadu_ps(m, x + j)), m0);
    }
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3)));
    const float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
    const __m512 vinv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
    const __m512 half = _mm512_set1_ps(0.5f);
    const __m128i flip = _mm_set1_epi8(offset ? (char)0x80 : 0);
    for (j = 0; j < n; j += 16) {
        const __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + j), vinv);
        v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
        v = _mm512_add_ps(v, _mm512_or_ps(half, _mm512_and_ps(v, sign)));
        const __m128i b = _mm_xor_si128(_mm512_cvtsepi32_epi8(_mm512_cvttps_epi32(v)), flip);
        _mm_mask_storeu_epi8(q + j, m, b);
    }
    return d;
}

/* --- the 1-token dot ------------------------------------------------------ */

void tn__w8a8_idot_avx512(const int8_t *w, size_t w_stride, int nr, const int8_t *qx, int64_t n, int32_t *isum)
{
    const __m512i zero = _mm512_setzero_si512();
    __m512i acc[4] = {zero, zero, zero, zero};
    for (int64_t j = 0; j < n; j += 64) {
        const __mmask64 m = n - j >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (n - j)) - 1);
        const __m512i x = _mm512_maskz_loadu_epi8(m, qx + j);
        const __m512i ax = _mm512_abs_epi8(x);
        const __mmask64 neg = _mm512_movepi8_mask(x);
        for (int r = 0; r < nr; r++) {
            const __m512i wv = _mm512_maskz_loadu_epi8(m, w + (size_t)r * w_stride + j);
            acc[r] = _mm512_dpbusd_epi32(acc[r], ax, _mm512_mask_sub_epi8(wv, neg, zero, wv));
        }
    }
    for (int r = 0; r < nr; r++)
        isum[r] = _mm512_reduce_add_epi32(acc[r]);
}

/* --- the GEMM ------------------------------------------------------------- */

#define TR 4          /* rows per tile */
#define TT 6          /* tokens per tile */
#define BLOCK_ROWS 64 /* rows whose wsum is computed together */

/* acc + the u8 x s8 dot of x and w per int32 lane. In asm, and the tile's
 * loops unrolled by pragma: GCC 12 otherwise keeps the 24 accumulators in
 * a stack array, storing each one on every step (2.7x slower). */
AI __m512i dpbusd(__m512i acc, __m512i x, __m512i w)
{
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(w));
    return acc;
}

/* (a, b, c, d) of 16 lanes each -> their 4 lane sums, in this order. */
AI __m128i reduce4(__m512i a, __m512i b, __m512i c, __m512i d)
{
    const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
    /* per 128-bit lane: ab = (a, b, a, b), cd = (c, d, c, d) partial sums */
    const __m512i s = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
    /* per lane (a, b, c, d); add the four lanes */
    const __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* R rows (w, stride ws, int8 part) x T tokens (xu, stride xs), n columns.
 * y[t * ys + r] = (isum - 128 wsum[r]) * (dw[r] * dx[t]). */
AI void tile(const int R, const int T, const int8_t *w, size_t ws, const uint8_t *xu, size_t xs, int64_t n,
             const int32_t *wsum, const float *dw, const float *dx, float *y, size_t ys)
{
    __m512i acc[TT][TR];
    _Pragma("GCC unroll 8") for (int t = 0; t < T; t++)
        _Pragma("GCC unroll 8") for (int r = 0; r < TR; r++)
            acc[t][r] = _mm512_setzero_si512();
    for (int64_t j = 0; j < n; j += 64) {
        const __mmask64 m = n - j >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (n - j)) - 1);
        __m512i wv[TR];
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
            wv[r] = _mm512_maskz_loadu_epi8(m, w + (size_t)r * ws + j);
        _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
            const __m512i x = _mm512_maskz_loadu_epi8(m, xu + (size_t)t * xs + j);
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
                acc[t][r] = dpbusd(acc[t][r], x, wv[r]);
        }
    }
    const __mmask8 rm = (__mmask8)((1u << R) - 1);
    const __m128i corr = _mm_slli_epi32(_mm_maskz_loadu_epi32(rm, wsum), 7);
    const __m128 vdw = _mm_maskz_loadu_ps(rm, dw);
    _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
        const __m128i s = _mm_sub_epi32(reduce4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]), corr);
        const __m128 v = _mm_mul_ps(_mm_cvtepi32_ps(s), _mm_mul_ps(vdw, _mm_set1_ps(dx[t])));
        _mm_mask_storeu_ps(y + (size_t)t * ys, rm, v);
    }
}

typedef void (*tile_fn)(const int8_t *, size_t, const uint8_t *, size_t, int64_t, const int32_t *, const float *,
                        const float *, float *, size_t);
#define TILE_FN(R, T)                                                                                          \
    static void tile_##R##_##T(const int8_t *w, size_t ws, const uint8_t *xu, size_t xs, int64_t n,           \
                               const int32_t *wsum, const float *dw, const float *dx, float *y, size_t ys)     \
    {                                                                                                          \
        tile(R, T, w, ws, xu, xs, n, wsum, dw, dx, y, ys);                                                     \
    }
#define TILE_ROW(R) TILE_FN(R, 1) TILE_FN(R, 2) TILE_FN(R, 3) TILE_FN(R, 4) TILE_FN(R, 5) TILE_FN(R, 6)
TILE_ROW(1)
TILE_ROW(2)
TILE_ROW(3)
TILE_ROW(4)
#define TILE_REF(R) {tile_##R##_1, tile_##R##_2, tile_##R##_3, tile_##R##_4, tile_##R##_5, tile_##R##_6}
static const tile_fn tiles[TR][TT] = {TILE_REF(1), TILE_REF(2), TILE_REF(3), TILE_REF(4)};

/* sum of the n int8 at w: vpdpbusd against ones. */
static int32_t row_sum(const int8_t *w, int64_t n)
{
    const __m512i ones = _mm512_set1_epi8(1);
    __m512i acc = _mm512_setzero_si512();
    for (int64_t j = 0; j < n; j += 64) {
        const __mmask64 m = n - j >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (n - j)) - 1);
        acc = _mm512_dpbusd_epi32(acc, ones, _mm512_maskz_loadu_epi8(m, w + j));
    }
    return _mm512_reduce_add_epi32(acc);
}

void tn__w8a8_gemm_avx512(const void *w, size_t w_row, int64_t nr, const int8_t *xq, size_t xq_row, const float *xd,
                          int64_t nt, int64_t n, float *y, size_t ys)
{
    int32_t wsum[BLOCK_ROWS];
    float dw[BLOCK_ROWS];
    const uint8_t *xu = (const uint8_t *)xq;
    for (int64_t r0 = 0; r0 < nr; r0 += BLOCK_ROWS) {
        const int64_t rb = nr - r0 < BLOCK_ROWS ? nr - r0 : BLOCK_ROWS;
        const char *wb = (const char *)w + (size_t)r0 * w_row;
        for (int64_t r = 0; r < rb; r++) {
            memcpy(&dw[r], wb + (size_t)r * w_row, 4);
            wsum[r] = row_sum((const int8_t *)(wb + (size_t)r * w_row) + 4, n);
        }
        for (int64_t t = 0; t < nt; t += TT) {
            const int T = (int)(nt - t < TT ? nt - t : TT);
            for (int64_t r = 0; r < rb; r += TR) {
                const int R = (int)(rb - r < TR ? rb - r : TR);
                tiles[R - 1][T - 1]((const int8_t *)(wb + (size_t)r * w_row) + 4, w_row, xu + (size_t)t * xq_row,
                                    xq_row, n, wsum + r, dw + r, xd + t, y + (size_t)t * ys + r0 + r, ys);
            }
        }
    }
}
