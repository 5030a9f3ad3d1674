/*
 * w8a8_avx512.c — the W8A8 integer dot kernel for AVX-512 VNNI (w8a8.h).
 *
 * Key idea: vpdpbusd adds four u8 x s8 products into each int32 lane in
 * one instruction. It takes |x| as the unsigned operand and w with x's sign
 * (w negated where x < 0, a masked subtract), so the products are exactly
 * q_w * q_x. The last n mod 64 bytes come through masked loads that fill
 * zeros, which add nothing. The sum is exact: the result equals the scalar
 * kernel's bit for bit. Weights must be in [-127, 127].
 */
#include "kern/w8a8.h"

#include <immintrin.h>

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

/*
 * THE PREFILL TILE: 4 rows x 4 tokens in 16 zmm accumulators.
 *
 * With several tokens, each 64-byte step loads 4 weight vectors and 4
 * activation vectors and issues 16 vpdpbusd, so each weight byte read from
 * cache serves four tokens. The activations come offset to unsigned
 * (xu = q + 128, one byte each), which vpdpbusd takes as they are; the
 * offset is taken back with the row sums: sum (q + 128) w = sum q w +
 * 128 sum w, and the caller passes wsum[r] = sum w. Exact integers again,
 * so every element equals the 1-token kernel's.
 */
void tn__w8a8_tile_avx512(const int8_t *w, size_t w_stride, int nr, const uint8_t *xu, size_t x_stride, int nt,
                          int64_t n, const int32_t *wsum, int32_t *isum /* (nt, 4) */)
{
    const __m512i zero = _mm512_setzero_si512();
    __m512i acc[4][4];
    for (int t = 0; t < 4; t++)
        for (int r = 0; r < 4; r++)
            acc[t][r] = zero;
    for (int64_t j = 0; j < n; j += 64) {
        const __mmask64 m = n - j >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (n - j)) - 1);
        __m512i wv[4];
        for (int r = 0; r < 4; r++)
            wv[r] = r < nr ? _mm512_maskz_loadu_epi8(m, w + (size_t)r * w_stride + j) : zero;
        for (int t = 0; t < nt; t++) {
            const __m512i x = _mm512_maskz_loadu_epi8(m, xu + (size_t)t * x_stride + j);
            for (int r = 0; r < 4; r++)
                acc[t][r] = _mm512_dpbusd_epi32(acc[t][r], x, wv[r]);
        }
    }
    for (int t = 0; t < nt; t++)
        for (int r = 0; r < nr; r++)
            isum[t * 4 + r] = _mm512_reduce_add_epi32(acc[t][r]) - 128 * wsum[r];
}
