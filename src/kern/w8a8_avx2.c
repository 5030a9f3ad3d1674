/*
 * w8a8_avx2.c — the W8A8 integer dot kernel for AVX2 (w8a8.h).
 *
 * Key idea: maddubs multiplies unsigned by signed bytes, so each 32-byte
 * step takes |x| (unsigned) and w with x's sign moved onto it (sign_epi8),
 * whose pair sums (at most 2 * 127 * 127) cannot saturate int16; madd with
 * ones widens to int32. The sum is exact, so the result equals the scalar
 * kernel's bit for bit. Weights must be in [-127, 127] (sign of -128 would
 * wrap). The last n mod 32 products are summed in scalar code.
 */
#include "kern/w8a8.h"

#include <immintrin.h>

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
