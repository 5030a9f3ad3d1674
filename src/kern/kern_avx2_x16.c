/*
 * kern_avx2_x16.c — the AVX2 (+FMA +F16C) kernel for the x16 layout
 * (kern/repack.h: a vector lane is a weight row), for CPUs without
 * AVX-512 VNNI. Compiled with -mavx2 -mfma -mf16c like kern_avx2.c.
 *
 * HOW IT WORKS
 *
 * A 64-byte vector of the layout (four quants of each of 16 rows) is two
 * ymm: half 0 holds rows 0-7, half 1 rows 8-15, one row per dword lane.
 * Tokens go in tiles of up to 16 and, per tile, every group block by
 * block. Per (group, block) the block's weights are split once for the
 * whole tile into vectors of nibbles (unsigned bytes 0..15):
 *
 *   Q4_0: the layout's bytes are nibble pairs already: 4 vectors -> 8 (low
 *         nibbles: elements 4k.., high: 16+4k..), per half;
 *   Q8_0: the byte w = q + 128 (0..255) -> lo = w & 15, hi = w >> 4, so
 *         w = 16·hi + lo: 8 vectors -> 16, per half.
 *
 * Then per token of the tile and half, without VNNI's vpdpbusd:
 *
 *   p    = vpmaddubsw(nib_k, broadcast(x[4k..4k+3]))  int16: pairs of products
 *   s16  = p_0 + p_1 + ... + p_7                       vpaddw, in int16
 *   s    = vpmaddwd(s16, 1)                            int32 per row
 *          (Q8_0: + vpmaddwd(s16_hi, 16) of the high nibbles' sums)
 *   s   += broadcast(bias_b)                           the -8·Σx (-128·Σx) start
 *   acc  = fma(cvt(s), d_w · broadcast(d_x), acc)
 *
 * WHY THE INT16 STEPS ARE EXACT. vpmaddubsw saturates each 16-bit lane
 * a0·b0 + a1·b1 (a unsigned, b signed bytes) to [-32768, 32767]; vpaddw
 * wraps. Every unsigned operand here is a nibble a ∈ [0, 15] and every
 * activation b ∈ [-128, 127], so one lane is at most 2·15·128 = 3840 in
 * magnitude (no saturation), and one lane's vpaddw sum over a block's
 * eight vectors (s16, and Q8_0's s16_hi) at most 8·3840 = 30720 < 32767
 * (no wrap). vpmaddwd against 1 or
 * 16 adds two such lanes into int32 exactly. (Q8_0's raw bytes could not go
 * through vpmaddubsw: 2·255·128 = 65280 saturates, hence the split; Q4_0
 * needs none.) So s is exactly the integer sum bias + Σ w_j·x_j of
 * tn__x16_gemm_ref — integer addition is associative — |s| < 2^21, so
 * (float)s is exact, and d_w·d_x rounds once and the fma once, as fmaf
 * does: the results equal the reference bit for bit, for any operands,
 * -128 activations and 0x00/0xFF weight bytes included (tests/kern/
 * test_x16.c checks exactly those).
 *
 * Per token and group-block this is 16 (Q4_0) / 32 (Q8_0) vpmaddubsw plus
 * their vpaddw against VNNI's 8; the split weights live in a stack array
 * (L1) because 16 or 32 ymm do not fit the 16 registers, the 16 tokens'
 * accumulators likewise.
 */
#include "kern/repack.h"
#include "kern/x16_ymm.h"

#include <immintrin.h>
#include <stdalign.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))

/* How far ahead of the block being read its group's weights are
 * prefetched (as kern_avx512_x16.c). */
#ifndef X16_PREFETCH_BYTES
#define X16_PREFETCH_BYTES 1024
#endif

/* One token t of the tile against the unpacked block: acc[t] += its
 * rows' block products (see the file comment). */
AI void step(const int q4, const __m256i (*nib)[16], const uint8_t *xb, const uint8_t *xa, int64_t nb, int t,
            __m256 dw0, __m256 dw1, __m256 *acc)
{
    const __m256i ones = _mm256_set1_epi16(1), sixteen = _mm256_set1_epi16(16);
    /* The token's dword k pairs with nibble vector k (Q4_0: k < 4
     * low nibbles = elements 4k.., k >= 4 high = 16+4(k-4)..; Q8_0:
     * both nib[k] and nib[8+k] are elements 4k..). */
    __m256i xk[8];
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++)
        xk[k] = _mm256_set1_epi32(tn__x16_ymm_ld32(xb + 32 * t + 4 * k));
    const __m256i bias = _mm256_set1_epi32(tn__x16_ymm_ld32(xa + 4 * t));
    const __m256 dx = _mm256_broadcast_ss((const float *)(const void *)(xa + 64 * nb + 4 * t));
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        __m256i s16 = _mm256_maddubs_epi16(nib[h][0], xk[0]);
#pragma GCC unroll 8
        for (int k = 1; k < 8; k++)
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(nib[h][k], xk[k]));
        __m256i s = _mm256_add_epi32(_mm256_madd_epi16(s16, ones), bias);
        if (!q4) {
            __m256i h16 = _mm256_maddubs_epi16(nib[h][8], xk[0]);
#pragma GCC unroll 8
            for (int k = 1; k < 8; k++)
                h16 = _mm256_add_epi16(h16, _mm256_maddubs_epi16(nib[h][8 + k], xk[k]));
            s = _mm256_add_epi32(s, _mm256_madd_epi16(h16, sixteen));
        }
        const __m256 d = _mm256_mul_ps(h ? dw1 : dw0, dx);
        acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d, acc[h]);
    }
}

/* Rows [0, 16) of one group (gd) against the first T tokens of a packed
 * tile (xt); rows >= left (< 16 in the last group) are not stored. */
AI void tile(const int q4, const int T0, const int nT, const uint8_t *gd, int64_t nb, const uint8_t *xt, float *y,
             size_t ys, int64_t left)
{
    const int T = T0 ? T0 : nT; /* T0: a compile-time count (small tiles, in registers); 0: nT at run time */
#define STEP(t) step(q4, (const __m256i(*)[16])nib, xb, xa, nb, t, dw0, dw1, acc[t])
    enum { NW = 16 }; /* nibble vectors per half: Q4_0 uses 8, Q8_0 16 (lo 0..7, hi 8..15) */
    const size_t qb = q4 ? 256 : 512;
    const uint8_t *sc = gd + (size_t)nb * qb;
    const uint8_t *xb = xt, *xa = xt + (size_t)nb * 512; /* block b's quants / aux of the tile */
    const __m256i lo4 = _mm256_set1_epi8(0x0F);
    __m256 acc[16][2];
    alignas(32) __m256i nib[2][NW];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++, xb += 512, xa += 64) {
        const uint8_t *wb = gd + (size_t)b * qb;
#pragma GCC unroll 8
        for (size_t k = 0; k < qb / 64; k++)
            _mm_prefetch((const char *)(wb + X16_PREFETCH_BYTES + 64 * k), _MM_HINT_T0);
        _mm_prefetch((const char *)(sc + 32 * b + 256), _MM_HINT_T0);
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            if (q4) {
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                    const __m256i v = _mm256_load_si256((const __m256i *)(wb + 64 * k + 32 * h));
                    nib[h][k] = _mm256_and_si256(v, lo4);
                    nib[h][4 + k] = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
                }
            } else {
#pragma GCC unroll 8
                for (int k = 0; k < 8; k++) {
                    const __m256i v = _mm256_load_si256((const __m256i *)(wb + 64 * k + 32 * h));
                    nib[h][k] = _mm256_and_si256(v, lo4);
                    nib[h][8 + k] = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
                }
            }
        }
        const __m256 dw0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sc + 32 * b)));
        const __m256 dw1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sc + 32 * b + 16)));
        if (T0) {
#pragma GCC unroll 16
            for (int t = 0; t < T0; t++)
                STEP(t);
        } else {
#pragma GCC unroll 1
            for (int t = 0; t < nT; t++)
                STEP(t);
        }
    }
    tn__x16_ymm_store(T, acc, y, ys, left);
#undef STEP
}

TN__X16_YMM_GEMM(tn__x16_gemm_avx2)
