/*
 * x16_ymm.h — internal to src/kern: what the two 256-bit kernels of the x16
 * layout (kern_avx2_x16.c, kern_avxvnni_x16.c) share; they differ only in
 * how a block's weights meet the activations. Include it in those files
 * (compiled with their own ISA flags) after <immintrin.h>.
 *
 *   tn__x16_ymm_ld32     an unaligned little-endian int32
 *   tn__x16_ymm_store    a tile's accumulators (two ymm of 8 rows per
 *                        token) to y, masked when the group has fewer than
 *                        16 rows left
 *   TN__X16_YMM_GEMM     the walk over 16-token tiles and 16-row groups,
 *                        calling the file's tile(q4, T0, nT, ...) with a
 *                        compile-time token count for 1-4 tokens (their
 *                        accumulators fit the registers) and a loop for
 *                        more (in L1 either way)
 */
#ifndef TERN_KERN_X16_YMM_H
#define TERN_KERN_X16_YMM_H

#include "kern/repack.h"

#include <immintrin.h>
#include <string.h>

static inline int32_t tn__x16_ymm_ld32(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline __attribute__((always_inline)) void tn__x16_ymm_store(int T, __m256 (*acc)[2], float *y, size_t ys,
                                                                    int64_t left)
{
    if (left >= 16) {
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            _mm256_storeu_ps(y + (size_t)t * ys, acc[t][0]);
            _mm256_storeu_ps(y + (size_t)t * ys + 8, acc[t][1]);
        }
    } else {
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)left), lane);
        const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)left - 8), lane);
        for (int t = 0; t < T; t++) {
            _mm256_maskstore_ps(y + (size_t)t * ys, m0, acc[t][0]);
            _mm256_maskstore_ps(y + (size_t)t * ys + 8, m1, acc[t][1]);
        }
    }
}

#define TN__X16_YMM_TILE_CASES                                                                                         \
    case 1: tile(q4, 1, 1, gd, nb, xt, y, ys, left); break;                                                            \
    case 2: tile(q4, 2, 2, gd, nb, xt, y, ys, left); break;                                                            \
    case 3: tile(q4, 3, 3, gd, nb, xt, y, ys, left); break;                                                            \
    case 4: tile(q4, 4, 4, gd, nb, xt, y, ys, left); break;                                                            \
    default: tile(q4, 0, T, gd, nb, xt, y, ys, left); break;

/* Defines gemm_name (the repack.h tn__x16_gemm_fn contract) over the
 * file's tile(). */
#define TN__X16_YMM_GEMM(gemm_name)                                                                                    \
    static void tile_q4(int T, const uint8_t *gd, int64_t nb, const uint8_t *xt, float *y, size_t ys, int64_t left)   \
    {                                                                                                                  \
        const int q4 = 1;                                                                                              \
        switch (T) { TN__X16_YMM_TILE_CASES }                                                                          \
    }                                                                                                                  \
    static void tile_q8(int T, const uint8_t *gd, int64_t nb, const uint8_t *xt, float *y, size_t ys, int64_t left)   \
    {                                                                                                                  \
        const int q4 = 0;                                                                                              \
        switch (T) { TN__X16_YMM_TILE_CASES }                                                                          \
    }                                                                                                                  \
    void gemm_name(tn_dtype xt, const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp,          \
                   int64_t nt, int64_t nb, float *y, size_t ystride)                                                   \
    {                                                                                                                  \
        for (int64_t t0 = 0; t0 < nt; t0 += TN__X16) {                                                                 \
            const int T = (int)(nt - t0 < TN__X16 ? nt - t0 : TN__X16);                                                \
            const uint8_t *xtile = xp + (size_t)(t0 / TN__X16) * ((size_t)nb * 640);                                   \
            for (int64_t g = 0; g < ng; g++) {                                                                         \
                const int64_t left = nr - g * TN__X16;                                                                 \
                float *yg = y + (size_t)t0 * ystride + (size_t)(g * TN__X16);                                          \
                if (xt == TN_DTYPE_Q4_0X16)                                                                            \
                    tile_q4(T, w + (size_t)g * gstride, nb, xtile, yg, ystride, left);                                 \
                else                                                                                                   \
                    tile_q8(T, w + (size_t)g * gstride, nb, xtile, yg, ystride, left);                                 \
            }                                                                                                          \
        }                                                                                                              \
    }

#endif /* TERN_KERN_X16_YMM_H */
