/*
 * kern_avx512_q.c — AVX-512 (BW, VL, DQ, VNNI) kernels of the K-quants
 * Q2_K, Q3_K, Q4_K, Q5_K and Q6_K against Q8_K activations: the one-token
 * dot kernels and a register-tiled GEMM for prefill (compiled with the
 * flags of kern_avx512.c; cpu.c selects them with it). Its table also
 * holds the 32-element formats' kernels of kern_avx512_q32.c.
 *
 * HOW IT WORKS
 *
 * A 256-element super-block of one weight row is unpacked once into
 * registers (krow), then used for every token of the tile:
 *
 *   q[c], c < 4   64 unsigned bytes: the quants of elements 64c .. 64c+63 in
 *                 element order (Q4_K: nibbles; Q5_K: nibble | high bit << 4;
 *                 Q6_K: q + 32 in 0..63; Q2_K: q in 0..3; Q3_K: q + 4 in
 *                 0..7, the 2-bit part like Q2_K's, the high bit from
 *                 hmask moved to bit 2). Q4_K's 32 bytes qs[32c'..] hold
 *                 elements 64c'+l (low nibbles) and 64c'+32+l (high), so one
 *                 broadcast load of those 32 bytes into both halves, a per-half
 *                 shift (0 and 4) and a mask give elements 64c' .. 64c'+63;
 *                 Q6_K's 64 bytes ql[64h..] and 32 bytes qh[32h..] give
 *                 elements 128h .. 128h+127 the same way. So the activations
 *                 are read in their natural Q8_K order: no packing.
 *   s[c]          32 int16: the sub-block scale of each word's pair of
 *                 elements (Q4_K/Q5_K: 32-element sub-blocks, 16 words each;
 *                 Q2_K/Q3_K/Q6_K: 16-element sub-blocks, 8 words each).
 *   m             16 int16 against the activations' 16 bsums: Q4_K/Q5_K the
 *                 minimums m_j twice each (Σ_j m_j·(bsums 2j + 2j+1));
 *                 Q2_K its 16 minimums; Q6_K -32·s_j (the offset of
 *                 q + 32), Q3_K -4·s_j.
 *   dsc           16 f32: lanes 0..7 d, lanes 8..15 -dmin (Q3_K/Q6_K: d).
 *
 * The step of one (row, token, super-block), the same in every tile:
 *
 *   p = Σ_c vpdpwssd(vpmaddubsw(q[c], x[64c..64c+63]), s[c])   16 exact int32
 *   v = [p lanes 0..7 + p lanes 8..15 | vpmaddwd(m, bsums)]    16 exact int32
 *   acc = fma(dsc · d_x, float(v), acc)
 *
 * vpmaddubsw adds two u8·s8 products into int16 without saturating (Q6_K's
 * largest is 2·63·127 < 2^15); vpdpwssd multiplies the pairs by the scales
 * and adds into int32 (at most 8 · 2 · 16002 · 128 < 2^31). At the end of
 * the row one fixed tree reduces the 16 lanes. Every element of a tile
 * (gemm_k) and the dot kernels (one token) run this same sequence of
 * operations into its own accumulator, so a result never depends on the
 * tile, the batch or the thread: kern_impl.h's contract.
 *
 * Prefill: tiles of up to 4 rows × 4 tokens; the caller (matmul.c) keeps a
 * chunk of rows in L2 while all tokens go by. Decode: the 1-token tile,
 * with every row prefetched PREFETCH_BYTES ahead.
 *
 * PREFETCH DISTANCE: a decode call spends about as long unpacking as
 * waiting for memory, and the two only overlap if the prefetches run far
 * enough ahead. 16 KiB (well past the 4-row group: the lines of later
 * groups, or of the next matrix at the end) measured best: one thread
 * streaming 256 MiB of Q4_K rows went from 6.0 to 10.4 GB/s (n = 2048;
 * 8.1 → 10.0 at n = 5632; Q6_K 9.4 → 12.0 at 8 KiB) and TinyLlama Q4_K_M
 * tg32 at 2 threads from 3.0 to 3.9-4.7 t/s against 512 bytes (a machine
 * loaded ~12 by other jobs; docs/performance.md).
 */
#include "kern/kern_avx512_q32.h"
#include "kern/kern_impl.h"

#include <immintrin.h>
#include <stdalign.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))

#ifndef PREFETCH_BYTES
#define PREFETCH_BYTES 16384 /* see PREFETCH DISTANCE */
#endif

enum { K2, K3, K4, K5, K6 };

static inline float f16(uint16_t h) { return _cvtsh_ss(h); }

typedef struct krow {
    __m512i q[4], s[4];
    __m256i m;
    __m512 dsc;
} krow;

/* Word w of s[c] takes scale index idx_s[kind][c][w]; m takes idx_m. */
static const alignas(64) uint16_t idx_s45[4][32] = {
    {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    {2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3},
    {4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5},
    {6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7},
};
static const alignas(64) uint16_t idx_m45[32] = {8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15};
static const alignas(64) uint16_t idx_s6[4][32] = {
    {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
    {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7},
    {8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9, 10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11},
    {12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13,
     14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15},
};

static size_t block_bytes(const int kind)
{
    return kind == K2   ? sizeof(tn_block_q2_K)
           : kind == K3 ? sizeof(tn_block_q3_K)
           : kind == K4 ? sizeof(tn_block_q4_K)
           : kind == K5 ? sizeof(tn_block_q5_K)
                        : sizeof(tn_block_q6_K);
}

/* The 6-bit scales and mins of a Q4_K/Q5_K block as 16 int16 words
 * (sc0..7, m0..7) in the low half of a zmm; the layout of quants.h
 * (tn__q4_K_scale_min) decoded in one ymm: with b the 12 bytes, lane L
 * takes A = b[ia[L]], masked to 6 bits (j < 4) or shifted by 0 (sc) / 4
 * (m) and masked to 4 bits (j >= 4), and for j >= 4 the top two bits of
 * B = b[ib[L]] as bits 4-5. Reads 16 bytes (the 4 after the scales are
 * the block's quants, ignored). */
AI __m512i k45_scales(const uint8_t *b)
{
    static const alignas(32) uint16_t ia[16] = {0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11};
    static const alignas(32) uint16_t ib[16] = {0, 0, 0, 0, 0, 1, 2, 3, 0, 0, 0, 0, 4, 5, 6, 7};
    static const alignas(32) uint16_t sha[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4};
    static const alignas(32) uint16_t msk[16] = {63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 15, 15, 15, 15};
    const __m256i raw = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)b));
    const __m256i a = _mm256_permutexvar_epi16(_mm256_load_si256((const __m256i *)ia), raw);
    const __m256i hb = _mm256_maskz_permutexvar_epi16(0xf0f0, _mm256_load_si256((const __m256i *)ib), raw);
    const __m256i lo = _mm256_and_si256(_mm256_srlv_epi16(a, _mm256_load_si256((const __m256i *)sha)),
                                        _mm256_load_si256((const __m256i *)msk));
    const __m256i v = _mm256_ternarylogic_epi32(lo, _mm256_srli_epi16(hb, 2), _mm256_set1_epi16(0x30), 0xf8); /* a | (b & c) */
    return _mm512_castsi256_si512(v);
}

/* Lanes 0..7 the f16 value of bits 0-15 of h, lanes 8..15 that of bits 16-31. */
AI __m512 spread_f16x2(uint32_t h)
{
    static const alignas(64) int32_t idx[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128((int)h));
    return _mm512_permutexvar_ps(_mm512_load_si512(idx), _mm512_castps128_ps512(f));
}

/* [d ×8 | -dmin ×8] from the f16 pair d, dmin at p (the sign of dmin flipped
 * in its f16 bits: the same value as negating the f32). */
AI __m512 d_negdmin(const void *p)
{
    uint32_t h;
    memcpy(&h, p, 4);
    return spread_f16x2(h ^ 0x80000000u);
}

/* The 16 6-bit scales of a Q3_K block minus 32 as int16 words (the layout
 * of quants.h, tn__q3_K_scale), four bytes at a time. */
AI __m256i k3_scales(const uint8_t *b)
{
    uint32_t u[3];
    memcpy(u, b, 12);
    const uint32_t m4 = 0x0f0f0f0fu, m2 = 0x03030303u;
    const uint32_t s0 = (u[0] & m4) | (u[2] & m2) << 4, s1 = (u[1] & m4) | (u[2] >> 2 & m2) << 4;
    const uint32_t s2 = (u[0] >> 4 & m4) | (u[2] >> 4 & m2) << 4, s3 = (u[1] >> 4 & m4) | (u[2] >> 6 & m2) << 4;
    const __m128i v = _mm_set_epi32((int)s3, (int)s2, (int)s1, (int)s0);
    return _mm256_sub_epi16(_mm256_cvtepu8_epi16(v), _mm256_set1_epi16(32));
}

/* Q2_K/Q3_K: the 2-bit quants of elements 64c .. 64c+63: bits 2k..2k+1 of
 * qs[32h + l] hold element 128h + 32k + l, so for c = 2h + j the 32 bytes
 * qs[32h..] broadcast into both halves, shifted by 2·(2j) and 2·(2j+1). */
AI __m512i k23_low2(const uint8_t *qs, int c)
{
    const __m512i raw = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * (c >> 1))));
    const __m512i sh = _mm512_inserti64x4(_mm512_set1_epi16((short)(4 * (c & 1))),
                                          _mm256_set1_epi16((short)(4 * (c & 1) + 2)), 1);
    return _mm512_and_si512(_mm512_srlv_epi16(raw, sh), _mm512_set1_epi8(3));
}

/* Unpacks super-block b of a row (see the essay). */
AI void load_krow(const int kind, const char *p, krow *k)
{
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    if (kind == K2) {
        /* q: 0..3; s: the 4-bit scales; m: the 4-bit mins against -dmin */
        const tn_block_q2_K *w = (const tn_block_q2_K *)p;
        for (int c = 0; c < 4; c++)
            k->q[c] = k23_low2(w->qs, c);
        const __m128i sc = _mm_loadu_si128((const __m128i *)w->scales);
        const __m512i s512 = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(sc, _mm_set1_epi8(15))));
        for (int c = 0; c < 4; c++)
            k->s[c] = _mm512_permutexvar_epi16(_mm512_load_si512(idx_s6[c]), s512);
        k->m = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), _mm_set1_epi8(15)));
        k->dsc = d_negdmin(&w->d);
    } else if (kind == K3) {
        /* q + 4 in 0..7: the high bit of element 64c + 32·half + l is bit
         * 2c + half of hmask[l]; moved to bit 2. m: -4·s_j (the offset). */
        const tn_block_q3_K *w = (const tn_block_q3_K *)p;
        const __m512i hv = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)w->hmask));
        const __m512i b2 = _mm512_set1_epi8(0x04);
        const __m512i l0 = _mm512_inserti64x4(_mm512_set1_epi16(2), _mm256_set1_epi16(1), 1);
        const __m512i r1 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(1), 1);
        const __m512i r2 = _mm512_inserti64x4(_mm512_set1_epi16(2), _mm256_set1_epi16(3), 1);
        const __m512i r3 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(5), 1);
        k->q[0] = _mm512_ternarylogic_epi32(k23_low2(w->qs, 0), _mm512_sllv_epi16(hv, l0), b2, 0xf8); /* a | (b & c) */
        k->q[1] = _mm512_ternarylogic_epi32(k23_low2(w->qs, 1), _mm512_srlv_epi16(hv, r1), b2, 0xf8);
        k->q[2] = _mm512_ternarylogic_epi32(k23_low2(w->qs, 2), _mm512_srlv_epi16(hv, r2), b2, 0xf8);
        k->q[3] = _mm512_ternarylogic_epi32(k23_low2(w->qs, 3), _mm512_srlv_epi16(hv, r3), b2, 0xf8);
        const __m256i sc16 = k3_scales(w->scales);
        const __m512i s512 = _mm512_castsi256_si512(sc16);
        for (int c = 0; c < 4; c++)
            k->s[c] = _mm512_permutexvar_epi16(_mm512_load_si512(idx_s6[c]), s512);
        k->m = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(sc16, 2));
        k->dsc = _mm512_set1_ps(f16(w->d));
    } else if (kind == K4 || kind == K5) {
        const uint8_t *scales, *qs;
        const uint16_t *dd; /* d, dmin */
        if (kind == K4) {
            const tn_block_q4_K *w = (const tn_block_q4_K *)p;
            scales = w->scales, qs = w->qs, dd = &w->d;
        } else {
            const tn_block_q5_K *w = (const tn_block_q5_K *)p;
            scales = w->scales, qs = w->qs, dd = &w->d;
        }
        const __m512i sh = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
        for (int c = 0; c < 4; c++) {
            const __m512i raw = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * c)));
            k->q[c] = _mm512_and_si512(_mm512_srlv_epi16(raw, sh), m4);
        }
        if (kind == K5) {
            /* element 64c + 32h + l has bit 2c + h of qh[l]; move it to bit 4 */
            const tn_block_q5_K *w = (const tn_block_q5_K *)p;
            const __m512i hv = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)w->qh));
            const __m512i b4 = _mm512_set1_epi8(0x10);
            const __m512i l0 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(3), 1);
            const __m512i l1 = _mm512_inserti64x4(_mm512_set1_epi16(2), _mm256_set1_epi16(1), 1);
            const __m512i r2 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(1), 1);
            const __m512i r3 = _mm512_inserti64x4(_mm512_set1_epi16(2), _mm256_set1_epi16(3), 1);
            k->q[0] = _mm512_ternarylogic_epi32(k->q[0], _mm512_sllv_epi16(hv, l0), b4, 0xf8); /* a | (b & c) */
            k->q[1] = _mm512_ternarylogic_epi32(k->q[1], _mm512_sllv_epi16(hv, l1), b4, 0xf8);
            k->q[2] = _mm512_ternarylogic_epi32(k->q[2], _mm512_srlv_epi16(hv, r2), b4, 0xf8);
            k->q[3] = _mm512_ternarylogic_epi32(k->q[3], _mm512_srlv_epi16(hv, r3), b4, 0xf8);
        }
        const __m512i sm = k45_scales(scales);
        for (int c = 0; c < 4; c++)
            k->s[c] = _mm512_permutexvar_epi16(_mm512_load_si512(idx_s45[c]), sm);
        k->m = _mm512_castsi512_si256(_mm512_permutexvar_epi16(_mm512_load_si512(idx_m45), sm));
        k->dsc = d_negdmin(dd);
    } else {
        const tn_block_q6_K *w = (const tn_block_q6_K *)p;
        const __m512i m30 = _mm512_set1_epi8(0x30);
        for (int h = 0; h < 2; h++) {
            const __m512i l = _mm512_loadu_si512(w->ql + 64 * h);
            const __m256i h256 = _mm256_loadu_si256((const __m256i *)(w->qh + 32 * h));
            /* bytes 0..31: bits 0-1 (k = 0) and 4-5 (k = 2); 32..63: the
             * same for k = 1 and 3, i.e. qh >> 2 */
            const __m512i hv = _mm512_inserti64x4(_mm512_castsi256_si512(h256), _mm256_srli_epi16(h256, 2), 1);
            const __m512i lo_hi = _mm512_and_si512(_mm512_slli_epi16(hv, 4), m30);
            const __m512i hi_hi = _mm512_and_si512(hv, m30);
            k->q[2 * h] = _mm512_ternarylogic_epi32(l, m4, lo_hi, 0xea);                          /* (a & b) | c */
            k->q[2 * h + 1] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(l, 4), m4, hi_hi, 0xea); /* (a & b) | c */
        }
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w->scales));
        const __m512i s512 = _mm512_castsi256_si512(sc16);
        for (int c = 0; c < 4; c++)
            k->s[c] = _mm512_permutexvar_epi16(_mm512_load_si512(idx_s6[c]), s512);
        k->m = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(sc16, 5));
        k->dsc = _mm512_set1_ps(f16(w->d));
    }
}

/* The step of one (row, token, super-block); see the essay. */
AI __m512 step_k(const krow *k, const tn_block_q8_K *x, __m512 acc)
{
    __m512i p = _mm512_dpwssd_epi32(_mm512_setzero_si512(),
                                    _mm512_maddubs_epi16(k->q[0], _mm512_loadu_si512(x->qs)), k->s[0]);
    p = _mm512_dpwssd_epi32(p, _mm512_maddubs_epi16(k->q[1], _mm512_loadu_si512(x->qs + 64)), k->s[1]);
    p = _mm512_dpwssd_epi32(p, _mm512_maddubs_epi16(k->q[2], _mm512_loadu_si512(x->qs + 128)), k->s[2]);
    p = _mm512_dpwssd_epi32(p, _mm512_maddubs_epi16(k->q[3], _mm512_loadu_si512(x->qs + 192)), k->s[3]);
    const __m256i p8 = _mm256_add_epi32(_mm512_castsi512_si256(p), _mm512_extracti64x4_epi64(p, 1));
    const __m256i m8 = _mm256_madd_epi16(k->m, _mm256_loadu_si256((const __m256i *)x->bsums));
    const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(p8), m8, 1);
    return _mm512_fmadd_ps(_mm512_mul_ps(k->dsc, _mm512_set1_ps(x->d)), _mm512_cvtepi32_ps(v), acc);
}

/* R rows × T tokens over all super-blocks: y[t·ys + r]. w: row 0; x: token
 * 0's Q8_K row, xs bytes to the next token. */
AI void tile_k(const int kind, const int R, const int T, const char *w, size_t ws, const char *x, size_t xs, int64_t nb,
               float *y, size_t ys)
{
    const size_t bsz = block_bytes(kind);
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            acc[r][t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const char *p = w + ws * (size_t)r + bsz * (size_t)b;
            /* one prefetch per 64 bytes of block: consecutive blocks of
             * the row then cover every line */
            for (size_t o = 0; o < bsz; o += 64)
                _mm_prefetch(p + PREFETCH_BYTES + o, _MM_HINT_T0);
            krow k;
            load_krow(kind, p, &k);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                acc[r][t] = step_k(&k, (const tn_block_q8_K *)(x + xs * (size_t)t) + b, acc[r][t]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            y[ys * (size_t)t + (size_t)r] = _mm512_reduce_add_ps(acc[r][t]);
}

#define TILE_CASE(kind, R, T) \
    case (R - 1) * 4 + (T - 1): tile_k(kind, R, T, w, ws, x, xs, nb, y, ys); break;
#define TILE_ROW(kind, R) TILE_CASE(kind, R, 1) TILE_CASE(kind, R, 2) TILE_CASE(kind, R, 3) TILE_CASE(kind, R, 4)
#define TILE_FN(name, kind)                                                                                     \
    static void name(int R, int T, const char *w, size_t ws, const char *x, size_t xs, int64_t nb, float *y,   \
                     size_t ys)                                                                                 \
    {                                                                                                           \
        switch ((R - 1) * 4 + (T - 1)) {                                                                        \
            TILE_ROW(kind, 1) TILE_ROW(kind, 2) TILE_ROW(kind, 3) TILE_ROW(kind, 4)                              \
        }                                                                                                       \
    }
TILE_FN(tile_q2_K, K2)
TILE_FN(tile_q3_K, K3)
TILE_FN(tile_q4_K, K4)
TILE_FN(tile_q5_K, K5)
TILE_FN(tile_q6_K, K6)
#undef TILE_FN
#undef TILE_ROW
#undef TILE_CASE

#define ENTRIES(name)                                                                                          \
    static void gemm_##name(const void *w, size_t ws, int64_t nr, const void *x, size_t xs, int64_t nt,       \
                            int64_t n, float *y, size_t ys)                                                   \
    {                                                                                                          \
        tn__gemm_tiles4(tile_##name, w, ws, nr, x, xs, nt, n / TN_QK_K, y, ys);                                \
    }                                                                                                          \
    static void dot_##name(const void *w, size_t ws, int nr, const void *x, int64_t n, float *y)              \
    {                                                                                                          \
        tn__gemm_tiles4(tile_##name, w, ws, nr, x, 0, 1, n / TN_QK_K, y, 0);                                   \
    }
ENTRIES(q2_K)
ENTRIES(q3_K)
ENTRIES(q4_K)
ENTRIES(q5_K)
ENTRIES(q6_K)
#undef ENTRIES

const tn__quant_ops tn__quant_ops_avx512 = {
    .dot =
        {
            [TN_DTYPE_Q4_1] = tn__dot_q4_1_avx512,
            [TN_DTYPE_Q5_0] = tn__dot_q5_0_avx512,
            [TN_DTYPE_Q5_1] = tn__dot_q5_1_avx512,
            [TN_DTYPE_IQ4_NL] = tn__dot_iq4_nl_avx512,
            [TN_DTYPE_Q2_K] = dot_q2_K,
            [TN_DTYPE_Q3_K] = dot_q3_K,
            [TN_DTYPE_Q4_K] = dot_q4_K,
            [TN_DTYPE_Q5_K] = dot_q5_K,
            [TN_DTYPE_Q6_K] = dot_q6_K,
        },
    .gemm =
        {
            [TN_DTYPE_Q4_1] = tn__gemm_q4_1_avx512,
            [TN_DTYPE_Q5_0] = tn__gemm_q5_0_avx512,
            [TN_DTYPE_Q5_1] = tn__gemm_q5_1_avx512,
            [TN_DTYPE_IQ4_NL] = tn__gemm_iq4_nl_avx512,
            [TN_DTYPE_Q2_K] = gemm_q2_K,
            [TN_DTYPE_Q3_K] = gemm_q3_K,
            [TN_DTYPE_Q4_K] = gemm_q4_K,
            [TN_DTYPE_Q5_K] = gemm_q5_K,
            [TN_DTYPE_Q6_K] = gemm_q6_K,
        },
};
