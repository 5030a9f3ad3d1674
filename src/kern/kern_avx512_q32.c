/*
 * kern_avx512_q32.c — AVX-512 (BW, VL, DQ, VNNI) kernels of the 32-element
 * formats Q4_1, Q5_0, Q5_1 and IQ4_NL against Q8_0 activations: the
 * one-token dot kernels and a register-tiled GEMM for prefill (compiled
 * with the flags of kern_avx512.c; kern_avx512_q.c puts them in its table).
 *
 * HOW IT WORKS
 *
 * A step covers a pair of blocks (b, b+1): 64 elements in one zmm, byte j
 * element j of block b, byte 32+j element j of block b+1, both for the
 * weights and for the activations (two 32-byte loads of the Q8_0 blocks'
 * quants), so nothing is packed ahead of time.
 *
 *   weights   64 unsigned bytes u: each block's 16 nibble bytes broadcast
 *             into two 128-bit lanes, shifted by 0 and 4, masked (element
 *             i < 16 is the low nibble of qs[i], element 16 + i the high
 *             one). Q5: the 32-bit qh words of the two blocks form a 64-bit
 *             mask that adds 16 where a high bit is set. IQ4_NL: the nibble
 *             picks its level + 128 (1..241) with one vpshufb.
 *   per token X (64 signed bytes), dx = [d_x(b) ×8 | d_x(b+1) ×8] and
 *             S = vpdpbusd(1, X): 16 int32, each the sum of 4 activation
 *             quants; computed once per token and pair, shared by the rows.
 *
 * The step of one (row, token, pair), the same in every tile:
 *
 *   P = vpdpbusd(u, X)                  16 exact int32 (lanes 0..7 block b)
 *   Q5_0: P -= 16·S, IQ4_NL: P -= 128·S (the offsets of u, exact)
 *   acc = fma(float(P), d_w·dx, acc)
 *   Q4_1/Q5_1: acc = fma(float(S), m_w·dx, acc)
 *
 * with d_w = [d(b) ×8 | d(b+1) ×8] (m_w likewise) from the two blocks' f16
 * scales. Every int32 is exact (at most 4·255·128 before the offset) and
 * below 2^24, so float(P) is exact too. An odd last block is a pair whose
 * second block is zeros (quants, scales and activations), adding +0 to
 * lanes 8..15. At the end of the row one fixed tree reduces the 16 lanes.
 * Every element of a tile and the dot kernels (one token) run the same
 * sequence of operations into its own accumulator, so a result depends
 * only on (row, token, n): kern_impl.h's contract.
 *
 * Prefill: tiles of up to 4 rows × 4 tokens, as in kern_avx512_q.c; the
 * caller keeps a chunk of rows in L2 while all tokens go by. Decode: the
 * 1-token tile, rows prefetched PREFETCH_BYTES ahead.
 */
#include "kern/kern_avx512_q32.h"

#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))

#ifndef PREFETCH_BYTES
#define PREFETCH_BYTES 16384 /* see kern_avx512_q.c, PREFETCH DISTANCE */
#endif

enum { F4_1, F5_0, F5_1, FNL };

static size_t block_bytes(const int kind)
{
    return kind == F4_1   ? sizeof(tn_block_q4_1)
           : kind == F5_0 ? sizeof(tn_block_q5_0)
           : kind == F5_1 ? sizeof(tn_block_q5_1)
                          : sizeof(tn_block_iq4_nl);
}

/* Byte offsets inside a block: the nibbles, the 32 high bits, the f16 min. */
static size_t off_qs(const int kind)
{
    return kind == F4_1 ? offsetof(tn_block_q4_1, qs)
           : kind == F5_0 ? offsetof(tn_block_q5_0, qs)
           : kind == F5_1 ? offsetof(tn_block_q5_1, qs)
                          : offsetof(tn_block_iq4_nl, qs);
}

static size_t off_qh(const int kind) { return kind == F5_0 ? offsetof(tn_block_q5_0, qh) : offsetof(tn_block_q5_1, qh); }

static bool has_min(const int kind) { return kind == F4_1 || kind == F5_1; }

/* A pair of blocks of one row, unpacked (see the essay). */
typedef struct wpair {
    __m512i u;
    __m512 d, m;
} wpair;

/* A pair of blocks of one token's Q8_0 row. */
typedef struct xpair {
    __m512i x, s;
    __m512 d;
} xpair;

/* Lanes 0..7 a, lanes 8..15 b: the two f16 values of h = a | b << 16. */
AI __m512 spread2(uint32_t h)
{
    static const int32_t idx[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128((int)h));
    return _mm512_permutexvar_ps(_mm512_loadu_si512(idx), _mm512_castps128_ps512(f));
}

static inline uint16_t ld16(const char *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static inline uint32_t ld32(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Blocks b and (if two) b+1 of a row starting at p. */
AI wpair load_wpair(const int kind, const char *p, const bool two)
{
    wpair w;
    const size_t bs = block_bytes(kind);
    const char *q = p + bs;
    const __m128i n0 = _mm_loadu_si128((const __m128i *)(p + off_qs(kind)));
    const __m128i n1 = two ? _mm_loadu_si128((const __m128i *)(q + off_qs(kind))) : _mm_setzero_si128();
    const __m512i raw = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_broadcastsi128_si256(n0)),
                                           _mm256_broadcastsi128_si256(n1), 1);
    const __m512i sh = _mm512_set_epi64(0x0004000400040004ll, 0x0004000400040004ll, 0, 0, 0x0004000400040004ll,
                                        0x0004000400040004ll, 0, 0);
    __m512i u = _mm512_and_si512(_mm512_srlv_epi16(raw, sh), _mm512_set1_epi8(0x0f));
    if (kind == F5_0 || kind == F5_1) {
        const uint64_t hb = (uint64_t)ld32(p + off_qh(kind)) | (two ? (uint64_t)ld32(q + off_qh(kind)) << 32 : 0);
        u = _mm512_mask_add_epi8(u, _cvtu64_mask64(hb), u, _mm512_set1_epi8(0x10));
    }
    if (kind == FNL) {
        /* levels + 128, one 128-bit table per lane */
        const __m128i lv = _mm_add_epi8(_mm_loadu_si128((const __m128i *)tn__iq4nl_values), _mm_set1_epi8((char)0x80));
        u = _mm512_shuffle_epi8(_mm512_broadcast_i32x4(lv), u); /* a missing block's meet zero activations */
    }
    w.u = u;
    /* f16 d (and m, 2 bytes after it) of both blocks; a missing block's are 0 */
    if (has_min(kind)) {
        /* d, m adjacent: one convert of [d(b), m(b), d(b+1), m(b+1)] */
        static const int32_t id[16] = {0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2};
        static const int32_t im[16] = {1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3};
        const uint64_t h = (uint64_t)ld32(p) | (two ? (uint64_t)ld32(q) << 32 : 0);
        const __m512 f = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi64_si128((long long)h)));
        w.d = _mm512_permutexvar_ps(_mm512_loadu_si512(id), f);
        w.m = _mm512_permutexvar_ps(_mm512_loadu_si512(im), f);
    } else {
        w.d = spread2((uint32_t)ld16(p) | (two ? (uint32_t)ld16(q) << 16 : 0));
        w.m = _mm512_setzero_ps();
    }
    return w;
}

/* Blocks b and (if two) b+1 of a token's Q8_0 row x. */
AI void load_xpair(const tn_block_q8_0 *x, const bool two, xpair *v)
{
    const __m256i x0 = _mm256_loadu_si256((const __m256i *)x[0].qs);
    const __m256i x1 = two ? _mm256_loadu_si256((const __m256i *)x[1].qs) : _mm256_setzero_si256();
    v->x = _mm512_inserti64x4(_mm512_castsi256_si512(x0), x1, 1);
    v->s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), v->x);
    v->d = spread2((uint32_t)x[0].d | (two ? (uint32_t)x[1].d << 16 : 0));
}

/* The step of one (row, token, pair); see the essay. */
AI __m512 step_q32(const int kind, const wpair *w, const xpair *x, __m512 acc)
{
    __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w->u, x->x);
    if (kind == F5_0)
        p = _mm512_sub_epi32(p, _mm512_slli_epi32(x->s, 4));
    if (kind == FNL)
        p = _mm512_sub_epi32(p, _mm512_slli_epi32(x->s, 7));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(w->d, x->d), acc);
    if (has_min(kind))
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(x->s), _mm512_mul_ps(w->m, x->d), acc);
    return acc;
}

/* R rows × T tokens over all blocks: y[t·ys + r]. w: row 0 (ws bytes to
 * the next); x: token 0's Q8_0 row, xs bytes to the next token. */
AI void tile_q32(const int kind, const int R, const int T, const char *w, size_t ws, const char *x, size_t xs,
                 int64_t nb, float *y, size_t ys)
{
    const size_t bsz = block_bytes(kind);
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            acc[r][t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b += 2) {
        const bool two = b + 1 < nb;
        xpair xp[4];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            load_xpair((const tn_block_q8_0 *)(x + xs * (size_t)t) + b, two, &xp[t]);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const char *p = w + ws * (size_t)r + bsz * (size_t)b;
            _mm_prefetch(p + PREFETCH_BYTES, _MM_HINT_T0); /* 2 blocks <= 48 bytes: one line per step suffices */
            const wpair wp = load_wpair(kind, p, two);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                acc[r][t] = step_q32(kind, &wp, &xp[t], acc[r][t]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            y[ys * (size_t)t + (size_t)r] = _mm512_reduce_add_ps(acc[r][t]);
}

#define TILE_CASE(kind, R, T) \
    case (R - 1) * 4 + (T - 1): tile_q32(kind, R, T, w, ws, x, xs, nb, y, ys); break;
#define TILE_ROW(kind, R) TILE_CASE(kind, R, 1) TILE_CASE(kind, R, 2) TILE_CASE(kind, R, 3) TILE_CASE(kind, R, 4)
#define TILE_FN(name, kind)                                                                                     \
    static void name(int R, int T, const char *w, size_t ws, const char *x, size_t xs, int64_t nb, float *y,   \
                     size_t ys)                                                                                 \
    {                                                                                                           \
        switch ((R - 1) * 4 + (T - 1)) {                                                                        \
            TILE_ROW(kind, 1) TILE_ROW(kind, 2) TILE_ROW(kind, 3) TILE_ROW(kind, 4)                              \
        }                                                                                                       \
    }
TILE_FN(tile_q4_1, F4_1)
TILE_FN(tile_q5_0, F5_0)
TILE_FN(tile_q5_1, F5_1)
TILE_FN(tile_iq4_nl, FNL)
#undef TILE_FN
#undef TILE_ROW
#undef TILE_CASE

#define ENTRIES(name)                                                                                          \
    void tn__gemm_##name##_avx512(const void *w, size_t ws, int64_t nr, const void *x, size_t xs, int64_t nt, \
                                  int64_t n, float *y, size_t ys)                                             \
    {                                                                                                          \
        tn__gemm_tiles4(tile_##name, w, ws, nr, x, xs, nt, n / TN_QK8_0, y, ys);                               \
    }                                                                                                          \
    void tn__dot_##name##_avx512(const void *w, size_t ws, int nr, const void *x, int64_t n, float *y)        \
    {                                                                                                          \
        tn__gemm_tiles4(tile_##name, w, ws, nr, x, 0, 1, n / TN_QK8_0, y, 0);                                  \
    }
ENTRIES(q4_1)
ENTRIES(q5_0)
ENTRIES(q5_1)
ENTRIES(iq4_nl)
#undef ENTRIES
