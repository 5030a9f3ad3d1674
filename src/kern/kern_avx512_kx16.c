/*
 * kern_avx512_kx16.c — the AVX-512 VNNI kernels for the Q4_K and Q6_K x16
 * layouts (kern/repack_k.h: a vector lane is a weight row).
 *
 * HOW IT WORKS (Q4_K)
 *
 * Tokens go in tiles of up to 16 and, for each tile, every group of 16
 * rows super-block by super-block, and each super-block as four pairs of
 * 32-element sub-blocks. Per (group, super-block, pair) the pair's eight
 * quant vectors are loaded and split once for the whole tile (and / shift
 * / and: eight vectors of low nibbles = sub-block 2c, eight of high
 * nibbles = 2c+1, four unsigned quants of each row per 32-bit lane) and
 * the two sub-blocks' scales widened to int32; then per token of the tile
 *
 *     ia = Σ_k vpdpbusd(lo_k, broadcast(x[64c + 4k ..]))       8, from 0
 *     ib = Σ_k vpdpbusd(hi_k, broadcast(x[64c + 32 + 4k ..]))  8, from 0
 *     sumi += ia · sc_2c + ib · sc_2c+1                          (vpmulld)
 *
 * and after the four pairs, per token, the minimums as four vpdpwssd of
 * the rows' (m_2p, m_2p+1) words against the token's broadcast (s_2p,
 * s_2p+1) sub-block sums, then the f32 step: two converts, two products
 * d_w·d_x and dmin_w·d_x, a multiply-add and a negated multiply-add. About
 * 100 vector operations per 16 rows × 256 elements × token (the Q4_0 x16
 * kernel: 88), where the block-format Q4_K tile spends ~40 per row.
 *
 * Q6_K goes by (half h, quarter m) of the super-block: per (group,
 * super-block, h, m) eight quant vectors are built once per tile, each
 * from a low-nibble vector (and, or shift and and) and a high-bit vector
 * (a shift moving bits 2m, 2m+1 to 4, 5) joined by one vpternlogd
 * ((H & 0x30) | L); then per token two 16-element sub-blocks:
 *
 *     ia = broadcast(-32·bsum_j) + Σ_k<4 vpdpbusd(q_k, broadcast(x ..))  (the -32 offset as the start)
 *     ib likewise for sub-block j+1;  sumi += ia · sc_j + ib · sc_j+1
 *
 * and one convert and multiply-add by d_w·d_x per super-block.
 *
 * The sequence per (row, token) is exactly tn__kx16_gemm_ref's: integer
 * sums are exact whatever their order, the int32 → f32 conversions round
 * to nearest even like the C casts, and the products and the fused
 * multiply-adds round as the reference's * and fmaf, so the results equal
 * the reference bit for bit.
 */
#include "kern/repack_k.h"

#include <immintrin.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))

/* How far ahead of the super-block being read its group's weights are
 * prefetched (decode streams every weight once). */
#ifndef KX16_PREFETCH_BYTES
#define KX16_PREFETCH_BYTES 2048
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

/* s += vpdpbusd(w, the int32 at p broadcast to all lanes), the broadcast
 * folded into the instruction ({1to16}). */
AI __m512i dpbusd_bcst(__m512i s, __m512i w, const uint8_t *p)
{
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(s) : "v"(w), "m"(*(const int32_t *)p));
    return s;
}

/* s += vpdpwssd(w, the int32 at p broadcast to all lanes). */
AI __m512i dpwssd_bcst(__m512i s, __m512i w, const uint8_t *p)
{
    __asm__("vpdpwssd %2%{1to16%}, %1, %0" : "+v"(s) : "v"(w), "m"(*(const int32_t *)p));
    return s;
}

/* Q4_K: rows [0, 16) of one group (gd) against the first T tokens of a
 * packed tile (xt); m masks the rows that exist. */
AI void tile4(const int T, const uint8_t *gd, int64_t nb, const uint8_t *xt, float *y, size_t ys, __mmask16 m)
{
    const __m512i lo4 = _mm512_set1_epi8(0x0F);
    __m512 acc[16];
    __m512i sumi[16];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *sb = gd + (size_t)b * TN__KX16_SB, *xb = xt + (size_t)b * TN__KX16_XSB;
#pragma GCC unroll 5
        for (int k = 0; k < 5; k++)
            _mm_prefetch((const char *)(sb + KX16_PREFETCH_BYTES + 2048 + 64 * k), _MM_HINT_T0);
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            const uint8_t *q = sb + 320 + 512 * c;
            __m512i lo[8], hi[8];
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                _mm_prefetch((const char *)(q + KX16_PREFETCH_BYTES + 64 * k), _MM_HINT_T0);
                const __m512i v = _mm512_load_si512((const void *)(q + 64 * k));
                lo[k] = _mm512_and_si512(v, lo4);
                hi[k] = _mm512_and_si512(_mm512_srli_epi16(v, 4), lo4);
            }
            const __m512i sca = _mm512_cvtepu8_epi32(_mm_load_si128((const __m128i *)(sb + 64 + 32 * c)));
            const __m512i scb = _mm512_cvtepu8_epi32(_mm_load_si128((const __m128i *)(sb + 80 + 32 * c)));
#pragma GCC unroll 16
            for (int t = 0; t < T; t++) {
                const uint8_t *x = xb + 256 * t + 64 * c;
                __m512i ia = _mm512_setzero_si512(), ib = _mm512_setzero_si512();
#pragma GCC unroll 8
                for (int k = 0; k < 8; k++) {
                    ia = dpbusd_bcst(ia, lo[k], x + 4 * k);
                    ib = dpbusd_bcst(ib, hi[k], x + 32 + 4 * k);
                }
                const __m512i s = _mm512_add_epi32(_mm512_mullo_epi32(ia, sca), _mm512_mullo_epi32(ib, scb));
                sumi[t] = c ? _mm512_add_epi32(sumi[t], s) : s;
            }
        }
        __m512i mw[4];
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++)
            mw[p] = _mm512_cvtepu8_epi16(_mm256_load_si256((const __m256i *)(sb + 192 + 32 * p)));
        const __m512 dw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)sb));
        const __m512 dm = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(sb + 32)));
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            __m512i summ = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int p = 0; p < 4; p++)
                summ = dpwssd_bcst(summ, mw[p], xb + 4096 + 16 * t + 4 * p);
            const __m512 dx = _mm512_set1_ps(ldf(xb + 4352 + 4 * t));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[t]), _mm512_mul_ps(dw, dx), acc[t]);
            acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(summ), _mm512_mul_ps(dm, dx), acc[t]);
        }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        _mm512_mask_storeu_ps(y + (size_t)t * ys, m, acc[t]);
}

/* Q6_K: as tile4. */
AI void tile6(const int T, const uint8_t *gd, int64_t nb, const uint8_t *xt, float *y, size_t ys, __mmask16 m)
{
    const __m512i lo4 = _mm512_set1_epi8(0x0F), hi2 = _mm512_set1_epi8(0x30);
    __m512 acc[16];
    __m512i sumi[16];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *sb = gd + (size_t)b * TN__KX16_SB6, *xb = xt + (size_t)b * TN__KX16_XSB6;
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
#pragma GCC unroll 16
            for (int k = 0; k < 16; k++)
                _mm_prefetch((const char *)(sb + KX16_PREFETCH_BYTES + 1024 * h + 64 * k), _MM_HINT_T0);
            if (h == 1) {
#pragma GCC unroll 21
                for (int k = 0; k < 21; k++)
                    _mm_prefetch((const char *)(sb + KX16_PREFETCH_BYTES + 2048 + 64 * k), _MM_HINT_T0);
            }
#pragma GCC unroll 4
            for (int mq = 0; mq < 4; mq++) {
                const uint8_t *ql = sb + 320 + 512 * (2 * h + (mq & 1)), *qh = sb + 2368 + 512 * h;
                __m512i q[8];
#pragma GCC unroll 8
                for (int k = 0; k < 8; k++) {
                    const __m512i L = _mm512_load_si512((const void *)(ql + 64 * k));
                    const __m512i H = _mm512_load_si512((const void *)(qh + 64 * k));
                    const __m512i lo = _mm512_and_si512(mq >> 1 ? _mm512_srli_epi16(L, 4) : L, lo4);
                    const __m512i hs = mq == 0   ? _mm512_slli_epi16(H, 4)
                                       : mq == 1 ? _mm512_slli_epi16(H, 2)
                                       : mq == 2 ? H
                                                 : _mm512_srli_epi16(H, 2);
                    q[k] = _mm512_ternarylogic_epi32(hs, hi2, lo, 0xEA); /* (hs & 0x30) | lo */
                }
                const int j = 8 * h + 2 * mq;
                const __m512i sca = _mm512_cvtepi8_epi32(_mm_load_si128((const __m128i *)(sb + 32 + 16 * j)));
                const __m512i scb = _mm512_cvtepi8_epi32(_mm_load_si128((const __m128i *)(sb + 48 + 16 * j)));
#pragma GCC unroll 16
                for (int t = 0; t < T; t++) {
                    const uint8_t *x = xb + 256 * t + 128 * h + 32 * mq, *xa = xb + 4096 + 64 * t + 4 * j;
                    __m512i ia = _mm512_set1_epi32(ld32(xa)), ib = _mm512_set1_epi32(ld32(xa + 4));
#pragma GCC unroll 4
                    for (int k = 0; k < 4; k++) {
                        ia = dpbusd_bcst(ia, q[k], x + 4 * k);
                        ib = dpbusd_bcst(ib, q[4 + k], x + 16 + 4 * k);
                    }
                    const __m512i s = _mm512_add_epi32(_mm512_mullo_epi32(ia, sca), _mm512_mullo_epi32(ib, scb));
                    sumi[t] = h || mq ? _mm512_add_epi32(sumi[t], s) : s;
                }
            }
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)sb));
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            const __m512 dx = _mm512_set1_ps(ldf(xb + 5120 + 4 * t));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[t]), _mm512_mul_ps(dw, dx), acc[t]);
        }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        _mm512_mask_storeu_ps(y + (size_t)t * ys, m, acc[t]);
}

/* One group against T tokens, dispatching to a compile-time tile size. */
#define TILE_CASE(n)                                                                                                   \
    case n: TILE(n, gd, nb, xt, y, ys, m); break;
#define TILE_CASES                                                                                                     \
    TILE_CASE(1) TILE_CASE(2) TILE_CASE(3) TILE_CASE(4) TILE_CASE(5) TILE_CASE(6) TILE_CASE(7) TILE_CASE(8)            \
    TILE_CASE(9) TILE_CASE(10) TILE_CASE(11) TILE_CASE(12) TILE_CASE(13) TILE_CASE(14) TILE_CASE(15) TILE_CASE(16)

static void tile4_n(int T, const uint8_t *gd, int64_t nb, const uint8_t *xt, float *y, size_t ys, __mmask16 m)
{
#define TILE tile4
    switch (T) { TILE_CASES }
#undef TILE
}

static void tile6_n(int T, const uint8_t *gd, int64_t nb, const uint8_t *xt, float *y, size_t ys, __mmask16 m)
{
#define TILE tile6
    switch (T) { TILE_CASES }
#undef TILE
}

void tn__kx16_gemm_avx512(tn_dtype xty, const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp,
                          int64_t nt, int64_t nb, float *y, size_t ystride)
{
    const bool q6 = xty == TN_DTYPE_Q6_KX16;
    for (int64_t t0 = 0; t0 < nt; t0 += 16) {
        const int T = (int)(nt - t0 < 16 ? nt - t0 : 16);
        const uint8_t *xtile = xp + (size_t)(t0 / 16) * (size_t)nb * (q6 ? TN__KX16_XSB6 : TN__KX16_XSB);
        for (int64_t g = 0; g < ng; g++) {
            const int64_t left = nr - g * 16;
            const __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
            (q6 ? tile6_n : tile4_n)(T, w + (size_t)g * gstride, nb, xtile, y + (size_t)t0 * ystride + (size_t)(g * 16), ystride, m);
        }
    }
}
