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
#include "kern/x16_ymm.h"

#include <immintrin.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))

#ifndef X16_PREFETCH_BYTES
#define X16_PREFETCH_BYTES 1024
#endif

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
        xk[k] = _mm256_set1_epi32(tn__x16_ymm_ld32(xb + 32 * t + 4 * k));
    const __m256i bias = _mm256_set1_epi32(tn__x16_ymm_ld32(xa + 4 * t));
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
    tn__x16_ymm_store(T, acc, y, ys, left);
#undef STEP
}

TN__X16_YMM_GEMM(tn__x16_gemm_avxvnni)
