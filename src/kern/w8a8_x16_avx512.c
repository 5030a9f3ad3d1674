/*
 * w8a8_x16_avx512.c — the AVX-512 VNNI kernel for the W8A8 x16 layout
 * (kern/w8a8_x16.h: a vector lane is a weight row).
 *
 * HOW IT WORKS
 *
 * Tokens go in tiles of up to 16 and, for each tile, every group of 16 rows
 * from its first column to its last. One step k is one 64-byte weight load
 * (four columns of all 16 rows, as q + 128) and, per token of the tile,
 *
 *     s_t += vpdpbusd(w_k, broadcast(x_t[4k..4k+3]))   (a memory broadcast)
 *
 * so a step is 16 multiply-add instructions per load, with the tile's 16
 * int32 accumulators in registers for the whole row; s_t starts at the
 * token's bias -128·Σq, which takes the weights' +128 back. At the end
 *
 *     y = cvt(s_t) * (d_w * broadcast(d_x))        (16 rows at a time)
 *
 * With few tokens one accumulator per token would leave vpdpbusd's latency
 * exposed (decode: one dependent chain per group), so tiles of T < 8 tokens
 * spread the steps over CHAINS(T) accumulators per token, added at the end.
 *
 * The integer sums are exact in any order (they wrap mod 2^32 and end on
 * the exact value, |s| < 2^31), and the epilogue is the scalar kernel's
 * expression, one IEEE operation at a time: the results equal
 * tn__w8a8x16_gemm_ref's, and the file layout's W8A8 kernels', bit for bit.
 */
#include "kern/w8a8_x16.h"

#include <immintrin.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))

/* How far ahead of the step being read the weights are prefetched (decode
 * streams each weight once; the hardware prefetchers alone leave it
 * waiting on DRAM). */
#ifndef W8A8X16_PREFETCH_BYTES
#define W8A8X16_PREFETCH_BYTES 1024
#endif

/* Tiles of at least this many tokens go two groups at a time (tile2). */
#ifndef PAIR_MIN_TOKENS
#define PAIR_MIN_TOKENS 8
#endif

/* Accumulators per token for a tile of T tokens (T * CHAINS(T) <= 16). */
#define CHAINS(T) ((T) >= 8 ? 1 : (T) >= 4 ? 2 : (T) == 3 ? 3 : (T) == 2 ? 4 : 8)

/* s += vpdpbusd(w, the int32 at p broadcast to all lanes), the broadcast
 * folded into the instruction ({1to16}: one fused load-op). */
AI __m512i dpbusd(__m512i s, __m512i w, __m512i x)
{
    __asm__("vpdpbusd %2, %1, %0" : "+v"(s) : "v"(w), "v"(x));
    return s;
}

AI __m512i dpbusd_bcst(__m512i s, __m512i w, const uint8_t *p)
{
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(s) : "v"(w), "m"(*(const int32_t *)p));
    return s;
}

/* Rows [0, 16) of one group (gd, K steps) against the first T tokens of a
 * tile (xt, ks bytes per step); m masks the rows that exist. */
AI void tile(const int T, const uint8_t *gd, int64_t K, const uint8_t *xt, size_t ks, const int32_t *bias,
             const float *dx, float *y, size_t ys, __mmask16 m)
{
    const int A = CHAINS(T);
    __m512i acc[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        if (i < A * T)
            acc[i] = _mm512_setzero_si512();
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        acc[t] = _mm512_set1_epi32(bias[t]);
    int64_t k = 0;
    const uint8_t *wk = gd, *xk = xt;
    for (; k + A <= K; k += A, wk += 64 * A, xk += ks * (size_t)A) {
#pragma GCC unroll 8
        for (int a = 0; a < A; a++) {
            _mm_prefetch((const char *)(wk + W8A8X16_PREFETCH_BYTES + 64 * a), _MM_HINT_T0);
            const __m512i w = _mm512_loadu_si512((const void *)(wk + 64 * a));
            const uint8_t *xa = xk + ks * (size_t)a;
#pragma GCC unroll 16
            for (int t = 0; t < T; t++)
                acc[a * T + t] = dpbusd_bcst(acc[a * T + t], w, xa + 4 * t);
        }
    }
    for (; k < K; k++, wk += 64, xk += ks) {
        const __m512i w = _mm512_loadu_si512((const void *)wk);
#pragma GCC unroll 16
        for (int t = 0; t < T; t++)
            acc[t] = dpbusd_bcst(acc[t], w, xk + 4 * t);
    }
#pragma GCC unroll 8
    for (int a = 1; a < A; a++)
#pragma GCC unroll 16
        for (int t = 0; t < T; t++)
            acc[t] = _mm512_add_epi32(acc[t], acc[a * T + t]);
    const __m512 dw = _mm512_loadu_ps((const void *)(gd + 64 * K));
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) {
        const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[t]), _mm512_mul_ps(dw, _mm512_set1_ps(dx[t])));
        _mm512_mask_storeu_ps(y + (size_t)t * ys, m, v);
    }
}

/* Two groups (g0, g1) against the first T (<= 8) tokens of a tile: each
 * activation dword is broadcast once into a register and serves both
 * groups, so a step is 2 weight loads and T broadcasts for 2T
 * vpdpbusd (the one-group tile needs one load per vpdpbusd, and the load
 * ports, not the multipliers, become the limit). m1 masks group 1's rows;
 * group 0 is whole. */
AI void tile2(const int T, const uint8_t *g0, const uint8_t *g1, int64_t K, const uint8_t *xt, size_t ks,
              const int32_t *bias, const float *dx, float *y, size_t ys, __mmask16 m1)
{
    __m512i a0[8], a1[8];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
        a0[t] = a1[t] = _mm512_set1_epi32(bias[t]);
    const uint8_t *xk = xt;
    for (int64_t k = 0; k < K; k++, xk += ks) {
        _mm_prefetch((const char *)(g0 + W8A8X16_PREFETCH_BYTES + 64 * k), _MM_HINT_T0);
        _mm_prefetch((const char *)(g1 + W8A8X16_PREFETCH_BYTES + 64 * k), _MM_HINT_T0);
        const __m512i w0 = _mm512_loadu_si512((const void *)(g0 + 64 * k));
        const __m512i w1 = _mm512_loadu_si512((const void *)(g1 + 64 * k));
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            int32_t v;
            memcpy(&v, xk + 4 * t, 4);
            const __m512i x = _mm512_set1_epi32(v);
            a0[t] = dpbusd(a0[t], w0, x);
            a1[t] = dpbusd(a1[t], w1, x);
        }
    }
    const __m512 d0 = _mm512_loadu_ps((const void *)(g0 + 64 * K)), d1 = _mm512_loadu_ps((const void *)(g1 + 64 * K));
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        const __m512 vx = _mm512_set1_ps(dx[t]);
        _mm512_storeu_ps(y + (size_t)t * ys, _mm512_mul_ps(_mm512_cvtepi32_ps(a0[t]), _mm512_mul_ps(d0, vx)));
        _mm512_mask_storeu_ps(y + (size_t)t * ys + 16, m1,
                              _mm512_mul_ps(_mm512_cvtepi32_ps(a1[t]), _mm512_mul_ps(d1, vx)));
    }
}

#define TILE2_CASE(n)                                                                                                  \
    case n: tile2(n, g0, g1, K, xt, ks, bias, dx, y, ys, m1); break;

static void tile2_n(int T, const uint8_t *g0, const uint8_t *g1, int64_t K, const uint8_t *xt, size_t ks,
                    const int32_t *bias, const float *dx, float *y, size_t ys, __mmask16 m1)
{
    switch (T) {
        TILE2_CASE(1) TILE2_CASE(2) TILE2_CASE(3) TILE2_CASE(4) TILE2_CASE(5) TILE2_CASE(6) TILE2_CASE(7)
        TILE2_CASE(8)
    default: break;
    }
}

#define TILE_CASE(n)                                                                                                   \
    case n: tile(n, gd, K, xt, ks, bias, dx, y, ys, m); break;

/* One group against T (1..16) tokens, dispatching to a compile-time size. */
static void tile_n(int T, const uint8_t *gd, int64_t K, const uint8_t *xt, size_t ks, const int32_t *bias,
                   const float *dx, float *y, size_t ys, __mmask16 m)
{
    switch (T) {
        TILE_CASE(1) TILE_CASE(2) TILE_CASE(3) TILE_CASE(4) TILE_CASE(5) TILE_CASE(6) TILE_CASE(7) TILE_CASE(8)
        TILE_CASE(9) TILE_CASE(10) TILE_CASE(11) TILE_CASE(12) TILE_CASE(13) TILE_CASE(14) TILE_CASE(15)
        TILE_CASE(16)
    default: break;
    }
}

void tn__w8a8x16_gemm_avx512(const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp, size_t ks,
                             const int32_t *bias, const float *dx, int64_t nt, int64_t K, float *y, size_t ystride)
{
    for (int64_t t0 = 0; t0 < nt; t0 += 16) {
        const int T = (int)(nt - t0 < 16 ? nt - t0 : 16);
        const uint8_t *xtile = xp + (size_t)(t0 / 16) * (size_t)K * ks;
        int64_t g = 0;
        if (T >= PAIR_MIN_TOKENS)
            for (; g + 2 <= ng; g += 2) {
                const int64_t left = nr - g * 16 - 16;
                const __mmask16 m1 = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
                const uint8_t *g0 = w + (size_t)g * gstride;
                for (int h = 0; h < T; h += 8)
                    tile2_n(T - h < 8 ? T - h : 8, g0, g0 + gstride, K, xtile + 4 * (size_t)h, ks, bias + t0 + h,
                            dx + t0 + h, y + (size_t)(t0 + h) * ystride + g * 16, ystride, m1);
            }
        for (; g < ng; g++) {
            const int64_t left = nr - g * 16;
            const __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
            tile_n(T, w + (size_t)g * gstride, K, xtile, ks, bias + t0, dx + t0, y + (size_t)t0 * ystride + g * 16,
                   ystride, m);
        }
    }
}
