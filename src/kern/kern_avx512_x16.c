/*
 * kern_avx512_x16.c — the AVX-512 VNNI kernel for the x16 layout
 * (kern/repack.h: a vector lane is a weight row).
 *
 * HOW IT WORKS
 *
 * Tokens go in tiles of up to 16 and, for each tile, every group of 16
 * rows block by block. Per (group, block) the block's weights are loaded
 * and unpacked once for the whole tile (Q4_0: four loads, the nibbles
 * split with an and / shift / and into eight vectors of unsigned bytes;
 * Q8_0: eight loads, already unsigned) and the 16 f16 scales widened; then
 * per token of the tile
 *
 *     s   = broadcast(bias_b)                      the -8·Σx (-128·Σx) start
 *     s  += vpdpbusd(w_k, broadcast(x[4k..4k+3]))  8 times (memory broadcasts)
 *     acc = fma(cvt(s), d_w · broadcast(d_x), acc)
 *
 * i.e. 11 vector operations per 512 multiply-adds, with the tile's 16
 * accumulators in registers for the whole row of blocks. One token (decode)
 * is the same code with a tile of one: about 24 operations per 288 bytes
 * of Q4_0 weights.
 *
 * The sequence per (row, token) is exactly tn__x16_gemm_ref's: integer sums
 * are exact, (float)s is exact (|s| < 2^24), and the product and the fused
 * multiply-add round as fmaf does, so the results equal the reference bit
 * for bit.
 */
#include "kern/repack.h"

#include <immintrin.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))

/* How far ahead of the block being read its group's weights are
 * prefetched (the hardware prefetchers alone leave decode, which streams
 * each weight once, waiting on DRAM). */
#ifndef X16_PREFETCH_BYTES
#define X16_PREFETCH_BYTES 1024
#endif

static inline int32_t ld32(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline float ldf(const uint8_t *p)
{
    float v;
    memcpy(&v, p, 4);
    return v;
}

/* s += vpdpbusd(w, the int32 at p broadcast to all lanes), with the
 * broadcast folded into the instruction ({1to16}: one fused load-op, where
 * the compiler emits a separate vpbroadcastd and the front end, not the
 * arithmetic, becomes the limit). */
AI __m512i dpbusd_bcst(__m512i s, __m512i w, const uint8_t *p)
{
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(s) : "v"(w), "m"(*(const int32_t *)p));
    return s;
}

/* Rows [0, 16) of one group (gd) against the first T tokens of a packed
 * tile (xt); m masks the rows that exist. */
AI void tile(const int q4, const int T, const uint8_t *gd, int64_t nb, const uint8_t *xt, float *y, size_t ys,
             __mmask16 m)
{
    const size_t qb = q4 ? 256 : 512;
    const uint8_t *sc = gd + (size_t)nb * qb;
    const uint8_t *xb = xt, *xa = xt + (size_t)nb * 512; /* block b's quants / aux of the tile */
    const __m512i lo4 = _mm512_set1_epi8(0x0F);
    __m512 acc[16];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++, xb += 512, xa += 64) {
        const uint8_t *wb = gd + (size_t)b * qb;
#pragma GCC unroll 8
        for (size_t k = 0; k < qb / 64; k++)
            _mm_prefetch((const char *)(wb + X16_PREFETCH_BYTES + 64 * k), _MM_HINT_T0);
        _mm_prefetch((const char *)(sc + 32 * b + 256), _MM_HINT_T0);
        __m512i w[8];
        if (q4) {
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                const __m512i v = _mm512_load_si512((const void *)(wb + 64 * k));
                w[k] = _mm512_and_si512(v, lo4);
                w[4 + k] = _mm512_and_si512(_mm512_srli_epi16(v, 4), lo4);
            }
        } else {
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++)
                w[k] = _mm512_load_si512((const void *)(wb + 64 * k));
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sc + 32 * b)));
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            /* Q4_0: w[k] holds elements 4k.. (low nibbles), w[4+k] elements
             * 16+4k.. (high nibbles); Q8_0: w[k] elements 4k..; either way
             * the token's dword k pairs with w[k]. */
            __m512i s = _mm512_set1_epi32(ld32(xa + 4 * t));
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++)
                s = dpbusd_bcst(s, w[k], xb + 32 * t + 4 * k);
            const __m512 d = _mm512_mul_ps(dw, _mm512_set1_ps(ldf(xa + 64 * nb + 4 * t)));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, acc[t]);
        }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        _mm512_mask_storeu_ps(y + (size_t)t * ys, m, acc[t]);
}

/* One group against T tokens, dispatching to a compile-time tile size. */
#define TILE_CASE(n)                                                                                                   \
    case n: tile(q4, n, gd, nb, xt, y, ys, m); break;
#define TILE_CASES                                                                                                     \
    TILE_CASE(1) TILE_CASE(2) TILE_CASE(3) TILE_CASE(4) TILE_CASE(5) TILE_CASE(6) TILE_CASE(7) TILE_CASE(8)            \
    TILE_CASE(9) TILE_CASE(10) TILE_CASE(11) TILE_CASE(12) TILE_CASE(13) TILE_CASE(14) TILE_CASE(15) TILE_CASE(16)

static void tile_q4(int T, const uint8_t *gd, int64_t nb, const uint8_t *xt, float *y, size_t ys, __mmask16 m)
{
    const int q4 = 1;
    switch (T) { TILE_CASES }
}

static void tile_q8(int T, const uint8_t *gd, int64_t nb, const uint8_t *xt, float *y, size_t ys, __mmask16 m)
{
    const int q4 = 0;
    switch (T) { TILE_CASES }
}

void tn__x16_gemm_avx512(tn_dtype xt, const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp,
                         int64_t nt, int64_t nb, float *y, size_t ystride)
{
    for (int64_t t0 = 0; t0 < nt; t0 += TN__X16) {
        const int T = (int)(nt - t0 < TN__X16 ? nt - t0 : TN__X16);
        const uint8_t *xtile = xp + (size_t)(t0 / TN__X16) * ((size_t)nb * 640);
        for (int64_t g = 0; g < ng; g++) {
            const int64_t left = nr - g * TN__X16;
            const __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
            float *yg = y + (size_t)t0 * ystride + (size_t)(g * TN__X16);
            if (xt == TN_DTYPE_Q4_0X16)
                tile_q4(T, w + (size_t)g * gstride, nb, xtile, yg, ystride, m);
            else
                tile_q8(T, w + (size_t)g * gstride, nb, xtile, yg, ystride, m);
        }
    }
}
