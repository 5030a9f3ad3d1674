/*
 * kern_avxvnni_x16.c — the AVX-VNNI kernel for the x16 layout
 * (kern/repack.h), for CPUs with AVX2 and the VEX-encoded vpdpbusd on
 * ymm but without AVX-512 (Intel client cores since Alder Lake; AMD Zen 5
 * has both). Compiled with -mavx2 -mfma -mf16c -mavxvnni; repack.c picks
 * it over kern_avx2_x16.c when tn__kern_avx_vnni() says the CPU has it.
 *
 * HOW IT WORKS
 *
 * kern_avx512_x16.c's scheme on half the width: a 64-byte vector of the
 * layout is two ymm (rows 0-7, rows 8-15). Per (group, block) the weights
 * are unpacked once for the tile of up to 16 tokens (Q4_0: nibbles split
 * with and / shift / and; Q8_0: the bytes as they are, already unsigned),
 * then per token and half
 *
 *     s   = broadcast(bias_b)                        the -8·Σx (-128·Σx) start
 *     s  += vpdpbusd(w_k, broadcast(x[4k..4k+3]))    8 times
 *     acc = fma(cvt(s), d_w · broadcast(d_x), acc)
 *
 * vpdpbusd (not vpdpbusds) adds the four u8·s8 products to the int32 lane
 * without saturating, so s is the exact integer sum of tn__x16_gemm_ref
 * (|s| < 2^21, (float)s exact) and the f32 steps round as fmaf does: the
 * results equal the reference bit for bit. With fewer than 4 tokens the
 * 8 vpdpbusd of a half go in two chains of 4 (even / odd k, added at the
 * end; exact either way), which halves the latency decode waits on.
 */
#include "kern/repack.h"

#include <immintrin.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))

#ifndef X16_PREFETCH_BYTES
#define X16_PREFETCH_BYTES 1024
#endif

static inline int32_t ld32(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* One token t of the tile against the unpacked block: acc[t] += its
 * rows' block products (see the file comment). */
AI void step(const int chains2, const __m256i (*w)[8], const uint8_t *xb, const uint8_t *xa, int64_t nb, int t,
            __m256 dw0, __m256 dw1, __m256 *acc)
{
    /* Q4_0: w[k] holds elements 4k.. (low nibbles), w[4+k] elements
     * 16+4k.. (high nibbles); Q8_0: w[k] elements 4k..; either way
     * the token's dword k pairs with w[k]. */
    __m256i xk[8];
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++)
        xk[k] = _mm256_set1_epi32(ld32(xb + 32 * t + 4 * k));
    const __m256i bias = _mm256_set1_epi32(ld32(xa + 4 * t));
    const __m256 dx = _mm256_broadcast_ss((const float *)(const void *)(xa + 64 * nb + 4 * t));
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        __m256i s;
        if (chains2) {
            __m256i s1 = _mm256_setzero_si256();
            s = bias;
#pragma GCC unroll 4
            for (int k = 0; k < 8; k += 2) {
                s = _mm256_dpbusd_avx_epi32(s, w[h][k], xk[k]);
                s1 = _mm256_dpbusd_avx_epi32(s1, w[h][k + 1], xk[k + 1]);
            }
            s = _mm256_add_epi32(s, s1);
        } else {
            s = bias;
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++)
                s = _mm256_dpbusd_avx_epi32(s, w[h][k], xk[k]);
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
#define STEP(t) step(T0 && T0 < 4, (const __m256i(*)[8])w, xb, xa, nb, t, dw0, dw1, acc[t])
    const size_t qb = q4 ? 256 : 512;
    const uint8_t *sc = gd + (size_t)nb * qb;
    const uint8_t *xb = xt, *xa = xt + (size_t)nb * 512; /* block b's quants / aux of the tile */
    const __m256i lo4 = _mm256_set1_epi8(0x0F);
    __m256 acc[16][2];
    __m256i w[2][8];
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
                    w[h][k] = _mm256_and_si256(v, lo4);
                    w[h][4 + k] = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
                }
            } else {
#pragma GCC unroll 8
                for (int k = 0; k < 8; k++)
                    w[h][k] = _mm256_load_si256((const __m256i *)(wb + 64 * k + 32 * h));
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
#undef STEP
}

/* One group against T tokens: tiles of up to 4 tokens with a compile-time
 * size (their accumulators fit the registers), larger ones with a loop
 * over the tokens (the accumulators are in L1 either way). */
#define TILE_CASES                                                                                                     \
    case 1: tile(q4, 1, 1, gd, nb, xt, y, ys, left); break;                                                            \
    case 2: tile(q4, 2, 2, gd, nb, xt, y, ys, left); break;                                                            \
    case 3: tile(q4, 3, 3, gd, nb, xt, y, ys, left); break;                                                            \
    case 4: tile(q4, 4, 4, gd, nb, xt, y, ys, left); break;                                                            \
    default: tile(q4, 0, T, gd, nb, xt, y, ys, left); break;

static void tile_q4(int T, const uint8_t *gd, int64_t nb, const uint8_t *xt, float *y, size_t ys, int64_t left)
{
    const int q4 = 1;
    switch (T) { TILE_CASES }
}

static void tile_q8(int T, const uint8_t *gd, int64_t nb, const uint8_t *xt, float *y, size_t ys, int64_t left)
{
    const int q4 = 0;
    switch (T) { TILE_CASES }
}

void tn__x16_gemm_avxvnni(tn_dtype xt, const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp,
                          int64_t nt, int64_t nb, float *y, size_t ystride)
{
    for (int64_t t0 = 0; t0 < nt; t0 += TN__X16) {
        const int T = (int)(nt - t0 < TN__X16 ? nt - t0 : TN__X16);
        const uint8_t *xtile = xp + (size_t)(t0 / TN__X16) * ((size_t)nb * 640);
        for (int64_t g = 0; g < ng; g++) {
            const int64_t left = nr - g * TN__X16;
            float *yg = y + (size_t)t0 * ystride + (size_t)(g * TN__X16);
            if (xt == TN_DTYPE_Q4_0X16)
                tile_q4(T, w + (size_t)g * gstride, nb, xtile, yg, ystride, left);
            else
                tile_q8(T, w + (size_t)g * gstride, nb, xtile, yg, ystride, left);
        }
    }
}
