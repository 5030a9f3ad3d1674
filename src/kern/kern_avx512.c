/*
 * kern_avx512.c — the AVX-512 kernels (F, BW, VL, DQ, VNNI; compiled with
 * the flags in CMakeLists.txt, selected by cpu.c only where the CPU has them
 * and the OS saves the zmm state). No BF16 instruction is used: a BF16
 * weight is widened to f32 exactly (a 16-bit shift) and multiplied with FMA,
 * so its results do not depend on how activations would round to bf16.
 *
 * HOW IT WORKS
 *
 * Every kernel computes up to four weight rows against one activation row
 * (TN__DOT_ROWS), sharing the activation loads and all per-block activation
 * work between the rows. The body is an always-inline function of a
 * compile-time row count; each row keeps its own accumulators and performs
 * the same operations in the same order whatever the row count, so a row's
 * result is bit-identical whether it is computed alone or with others.
 *
 * Float weights: one 16-lane FMA accumulator per (row, token), summed at
 * the end by one fixed tree, then a scalar tail; gemm_f runs register tiles
 * of up to 4 rows × 6 tokens, the dot kernels the same sequence for one
 * token.
 *
 * Int8 weights (Q8_0, Q4_0 against Q8_0 activations): VNNI's vpdpbusd over
 * groups of four blocks, with each token's activations packed once per
 * matmul into the vectors the loop loads; gemm_q runs register tiles of up
 * to 4 rows × 4 tokens, and the dot kernels (one token) the same per-element
 * sequence. The essay above the int8 section explains the layout and why
 * the result of an element never depends on the tile. Each weight row is
 * software-prefetched PREFETCH_BYTES ahead. Blocks left over after the last
 * group of four go through a scalar tail.
 */
#include "kern/kern_impl.h"
#include "kern/exp_avx512.h"

#include <immintrin.h>
#include <math.h>
#include <stdalign.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))

/* How far ahead of the int8 kernels' position each weight row is prefetched:
 * the hardware prefetchers alone do not run far enough ahead to hide DRAM
 * latency behind these kernels' compute. */
#ifndef PREFETCH_BYTES
#define PREFETCH_BYTES 512
#endif

/* The same for the float kernels (measured with bench_matmul, cold F16
 * decode). */
#ifndef FPREFETCH_BYTES
#define FPREFETCH_BYTES 1024
#endif

static inline float f16(uint16_t h) { return _cvtsh_ss(h); }

/* --- float weights ---------------------------------------------------------- */

enum { W_F32, W_F16, W_BF16 };

/* 16 weights of row w from element i, as f32. */
AI __m512 wload(const int kind, const void *w, int64_t i)
{
    switch (kind) {
    case W_F32: return _mm512_loadu_ps((const float *)w + i);
    case W_F16: return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i)));
    default: {
        const __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i)));
        return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
    }
    }
}

AI float wscalar(const int kind, const void *w, int64_t i)
{
    switch (kind) {
    case W_F32: return ((const float *)w)[i];
    case W_F16: return f16(((const uint16_t *)w)[i]);
    default: return tn_bf16_to_fp32(((const uint16_t *)w)[i]);
    }
}

/* R rows × T tokens of float weights: one accumulator per element, 16
 * elements a step, then one fixed reduction tree and a scalar tail. The dot
 * kernels are the T = 1 case, so an element's bits never depend on the tile
 * (the same argument as for int8, see below). x: token 0's row, xs bytes to
 * the next token. */
AI void tile_f(const int kind, const int R, const int T, const char *w, size_t ws, const char *x, size_t xs,
               int64_t n, float *y, size_t ys)
{
    __m512 acc[4][6];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 6
        for (int t = 0; t < T; t++)
            acc[r][t] = _mm512_setzero_ps();
    int64_t i = 0;
    const size_t esz = kind == W_F32 ? 4 : 2;
    for (; i + 16 <= n; i += 16) {
        __m512 wv[4];
        if (kind == W_F32 || (i & 16) == 0) /* one prefetch per 64 bytes of each row */
#pragma GCC unroll 4
            for (int r = 0; r < R; r++)
                _mm_prefetch(w + ws * (size_t)r + esz * (size_t)i + FPREFETCH_BYTES, _MM_HINT_T0);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            wv[r] = wload(kind, w + ws * (size_t)r, i);
#pragma GCC unroll 6
        for (int t = 0; t < T; t++) {
            const __m512 xv = _mm512_loadu_ps((const float *)(x + xs * (size_t)t) + i);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++)
                acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            const float *xt = (const float *)(x + xs * (size_t)t);
            float sum = _mm512_reduce_add_ps(acc[r][t]);
            for (int64_t j = i; j < n; j++)
                sum += wscalar(kind, w + ws * (size_t)r, j) * xt[j];
            y[ys * (size_t)t + (size_t)r] = sum;
        }
}

/* The dot kernels' body: nr (1 or TN__DOT_ROWS) rows, one token. */
AI void float_rows(const int kind, const char *w, size_t ws, const int nr, const float *x, int64_t n, float *y)
{
    if (nr == 4)
        tile_f(kind, 4, 1, w, ws, (const char *)x, 0, n, y, 0);
    else
        tile_f(kind, 1, 1, w, ws, (const char *)x, 0, n, y, 0);
}

#define FTILE_CASE(kind, R, T) \
    case (R - 1) * 6 + (T - 1): tile_f(kind, R, T, w, ws, x, xs, n, y, ys); break;
#define FTILE_ROW(kind, R) \
    FTILE_CASE(kind, R, 1) FTILE_CASE(kind, R, 2) FTILE_CASE(kind, R, 3) FTILE_CASE(kind, R, 4) \
    FTILE_CASE(kind, R, 5) FTILE_CASE(kind, R, 6)
#define FTILE_FN(name, kind)                                                                                   \
    static void name(int R, int T, const char *w, size_t ws, const char *x, size_t xs, int64_t n, float *y, \
                     size_t ys)                                                                              \
    {                                                                                                        \
        switch ((R - 1) * 6 + (T - 1)) {                                                                     \
            FTILE_ROW(kind, 1) FTILE_ROW(kind, 2) FTILE_ROW(kind, 3) FTILE_ROW(kind, 4)                       \
        }                                                                                                    \
    }
FTILE_FN(ftile_f32, W_F32)
FTILE_FN(ftile_f16, W_F16)
FTILE_FN(ftile_bf16, W_BF16)
#undef FTILE_FN
#undef FTILE_ROW
#undef FTILE_CASE

/* y[t·ys + r] = w_r · x_t for r < nr, t < nt (x: F32 rows xs bytes apart),
 * in tiles of 4 rows × 6 tokens, tokens outer: 24 accumulators and 4
 * converted weight vectors in registers, each converted weight used 6
 * times. The caller keeps nr rows within L2 (matmul.c). */
static void gemm_f(tn_dtype wt, const void *w, size_t ws, int64_t nr, const float *x, size_t xs, int64_t nt,
                   int64_t n, float *y, size_t ys)
{
    void (*tile)(int, int, const char *, size_t, const char *, size_t, int64_t, float *, size_t) =
        wt == TN_DTYPE_F16 ? ftile_f16 : wt == TN_DTYPE_BF16 ? ftile_bf16 : ftile_f32;
    for (int64_t t = 0; t < nt; t += 6) {
        const int T = (int)TN_MIN(6, nt - t);
        for (int64_t r = 0; r < nr; r += 4) {
            const int R = (int)TN_MIN(4, nr - r);
            tile(R, T, (const char *)w + ws * (size_t)r, ws, (const char *)x + xs * (size_t)t, xs, n,
                 y + ys * (size_t)t + (size_t)r, ys);
        }
    }
}

/* --- int8 weights ------------------------------------------------------------ */

/*
 * THE PACKED ACTIVATION LAYOUT
 *
 * Both int8 kernels work on groups of four blocks (128 elements). The
 * activation side of a group is the same for every weight row, so matmul.c
 * rearranges each token's Q8_0 blocks once per call (xpack) into exactly
 * the vectors the inner loop wants, and the loop only loads them:
 *
 *   256 bytes per group, for both weight types:
 *     lo[64]   int8  qs[0..16) of blocks 0..3 side by side (the values the
 *                    low nibbles, or the first halves of Q8_0 blocks,
 *                    multiply)
 *     hi[64]   int8  qs[16..32) of blocks 0..3 (high nibbles, second halves)
 *     bias[16] int32 lane l: -c · (the 8 x values lane l sums), c = 8 for
 *                    Q4_0, 128 for Q8_0 (see below), so that a lane starting
 *                    from it ends at the exact signed integer dot
 *     dx[16]   f32   lane l: d_x of block l / 4
 *
 * Blocks after the last whole group (n/32 mod 4 of them) follow as plain
 * Q8_0 blocks and go through a scalar tail.
 *
 * THE WEIGHT SIDE OF A GROUP
 *
 * A group of Q4_0 weights is 72 bytes; every f16 scale and every 16-byte
 * run of nibbles starts at an even offset, so one vpermt2w over the first 64
 * bytes and the next 8 gathers the four blocks' nibbles into one register
 * and one vpermw spreads the four scales over their four lanes each. The
 * nibbles are split with an and and a shift. VNNI's vpdpbusd multiplies
 * unsigned bytes (the nibbles 0..15) by signed bytes (x) and adds each lane's
 * four products into its int32, exactly; two of them (low, high nibbles)
 * leave lane l holding the exact integer dot of 8 weights of block l / 4.
 * Q8_0 is the same with w + 128 (an xor) for the unsigned side (bias
 * -128·Σx): two vpermt2w over the 136 bytes gather the first and the
 * second 16 quants of each block, so its lanes line up with Q4_0's.
 *
 * THE ORDER OF THE FLOATING-POINT SUM (what makes prefill equal decode)
 *
 * Per (row, token) there is one f32 accumulator vector. Each group adds
 * fma(d_w·d_x, float(lane sum), acc) lane by lane (d_w·d_x of two f16 values
 * is exact in f32, the int32 is exact below 2^24, so each step rounds once);
 * At the end one fixed tree reduces the
 * 16 lanes, then the tail blocks are added left to right. gemm_q (any number
 * of rows × tokens, register-blocked 4 × 4) and the table's dot kernels
 * (any number of rows, one token, packing each group on the fly) run this
 * same sequence per element through one always-inline step function, so a
 * result never depends on the tile it was computed in.
 */

enum { W_Q8_0, W_Q4_0 };

#define GROUP_BYTES 256

typedef struct xgroup {
    int8_t lo[64], hi[64];
    int32_t bias[16];
    float dx[16];
} xgroup;
static_assert(sizeof(xgroup) == GROUP_BYTES, "packed group");

/* Packs blocks x[0..4) into o; c: 8 (Q4_0 weights) or 128 (Q8_0). */
static inline void pack_group(const tn_block_q8_0 *x, int c, xgroup *o)
{
    for (int k = 0; k < 4; k++) {
        memcpy(o->lo + 16 * k, x[k].qs, 16);
        memcpy(o->hi + 16 * k, x[k].qs + 16, 16);
        const float d = f16(x[k].d);
        for (int l = 0; l < 4; l++)
            o->dx[4 * k + l] = d;
    }
    const __m512i cv = _mm512_set1_epi8((char)c);
    __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), cv, _mm512_loadu_si512(o->lo));
    s = _mm512_dpbusd_epi32(s, cv, _mm512_loadu_si512(o->hi));
    _mm512_storeu_si512(o->bias, _mm512_sub_epi32(_mm512_setzero_si512(), s));
}

/* One group of one weight row, unpacked: u0 the unsigned weights that
 * pair with lo (low nibbles, or first halves + 128), u1 those for hi, s
 * the blocks' scales, four lanes each. p: the group's first byte. */
typedef struct wg {
    __m512i u0, u1;
    __m512 s;
} wg;

AI wg load_wg(const int kind, const char *p)
{
    wg g;
    if (kind == W_Q4_0) {
        /* nibbles of block k: words 9k+1 .. 9k+8; scales: word 9k */
        static const alignas(64) uint16_t iq[32] = {1,  2,  3,  4,  5,  6,  7,  8,  10, 11, 12, 13, 14, 15, 16, 17,
                                                    19, 20, 21, 22, 23, 24, 25, 26, 28, 29, 30, 31, 32, 33, 34, 35};
        static const alignas(64) uint16_t id[32] = {0, 0, 0, 0, 9, 9, 9, 9, 18, 18, 18, 18, 27, 27, 27, 27};
        const __m512i a = _mm512_loadu_si512(p);
        const __m512i b = _mm512_castsi128_si512(_mm_loadl_epi64((const __m128i *)(p + 64)));
        const __m512i q = _mm512_permutex2var_epi16(a, _mm512_load_si512(iq), b);
        const __m512i m = _mm512_set1_epi8(0x0f);
        g.u0 = _mm512_and_si512(q, m);
        g.u1 = _mm512_and_si512(_mm512_srli_epi16(q, 4), m);
        g.s = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(_mm512_load_si512(id), a)));
    } else {
        /* block k (34 bytes): scale at word 17k, first half of the quants
         * at words 17k+1 .. 17k+8, second half at 17k+9 .. 17k+16; the
         * second halves are read from p + 8 (4 words less) so that every
         * index stays below the 64 words of two registers */
        static const alignas(64) uint16_t i0[32] = {1,  2,  3,  4,  5,  6,  7,  8,  18, 19, 20, 21, 22, 23, 24, 25,
                                                    35, 36, 37, 38, 39, 40, 41, 42, 52, 53, 54, 55, 56, 57, 58, 59};
        static const alignas(64) uint16_t i1[32] = {5,  6,  7,  8,  9,  10, 11, 12, 22, 23, 24, 25, 26, 27, 28, 29,
                                                    39, 40, 41, 42, 43, 44, 45, 46, 56, 57, 58, 59, 60, 61, 62, 63};
        static const alignas(64) uint16_t id[32] = {0, 0, 0, 0, 17, 17, 17, 17, 34, 34, 34, 34, 51, 51, 51, 51};
        const __m512i a = _mm512_loadu_si512(p), c = _mm512_loadu_si512(p + 64);
        const __m512i a8 = _mm512_loadu_si512(p + 8), c8 = _mm512_loadu_si512(p + 72);
        const __m512i off = _mm512_set1_epi8((char)0x80);
        g.u0 = _mm512_xor_si512(_mm512_permutex2var_epi16(a, _mm512_load_si512(i0), c), off);
        g.u1 = _mm512_xor_si512(_mm512_permutex2var_epi16(a8, _mm512_load_si512(i1), c8), off);
        g.s = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutex2var_epi16(a, _mm512_load_si512(id), c)));
    }
    return g;
}

/* The step every (row, token) pair takes per group: see the essay. */
AI __m512 step_group(const wg *g, const xgroup *x, __m512 acc)
{
    __m512i s = _mm512_dpbusd_epi32(_mm512_loadu_si512(x->bias), g->u0, _mm512_loadu_si512(x->lo));
    s = _mm512_dpbusd_epi32(s, g->u1, _mm512_loadu_si512(x->hi));
    const __m512 sc = _mm512_mul_ps(g->s, _mm512_loadu_ps(x->dx));
    return _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(s), acc);
}

/* Exact scalar sum of one block's 32 products. */
AI int32_t block_isum(const int kind, const void *wb, const tn_block_q8_0 *x)
{
    int32_t isum = 0;
    if (kind == W_Q8_0) {
        const tn_block_q8_0 *w = wb;
        for (int j = 0; j < TN_QK8_0; j++)
            isum += (int32_t)w->qs[j] * x->qs[j];
    } else {
        const tn_block_q4_0 *w = wb;
        for (int j = 0; j < TN_QK4_0 / 2; j++) {
            isum += ((w->qs[j] & 15) - 8) * (int32_t)x->qs[j];
            isum += ((w->qs[j] >> 4) - 8) * (int32_t)x->qs[j + TN_QK4_0 / 2];
        }
    }
    return isum;
}

/* The end of every element: reduce the lanes, add the tail blocks
 * [b0, nb) of weight row w (tail activation blocks xt). */
AI float finish(const int kind, __m512 acc, const char *w, int64_t b0, int64_t nb, const tn_block_q8_0 *xt)
{
    const size_t bsz = kind == W_Q8_0 ? sizeof(tn_block_q8_0) : sizeof(tn_block_q4_0);
    float sum = _mm512_reduce_add_ps(acc);
    for (int64_t c = b0; c < nb; c++) {
        const char *wb = w + bsz * (size_t)c;
        const uint16_t d = kind == W_Q8_0 ? ((const tn_block_q8_0 *)wb)->d : ((const tn_block_q4_0 *)wb)->d;
        sum += (float)block_isum(kind, wb, xt + (c - b0)) * (f16(d) * f16(xt[c - b0].d));
    }
    return sum;
}

/* R rows × T tokens, all groups: the register-blocked tile of gemm_q.
 * w: row 0's first byte; xp: token 0's packed row. */
AI void tile_q(const int kind, const int R, const int T, const char *w, size_t ws, const char *xp, size_t xps,
               int64_t n, float *y, size_t ys)
{
    const size_t bsz = kind == W_Q8_0 ? sizeof(tn_block_q8_0) : sizeof(tn_block_q4_0);
    const size_t gx = GROUP_BYTES;
    const int64_t nb = n / TN_QK8_0, ng = nb / 4;
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            acc[r][t] = _mm512_setzero_ps();
    for (int64_t g = 0; g < ng; g++) {
        /* one row's weights at a time in registers, the tokens' packed
         * vectors reloaded from L1 for each row: 16 accumulators, no spills */
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const char *p = w + ws * (size_t)r + 4 * bsz * (size_t)g;
            _mm_prefetch(p + PREFETCH_BYTES, _MM_HINT_T0);
            _mm_prefetch(p + PREFETCH_BYTES + 64, _MM_HINT_T0);
            const wg wr = load_wg(kind, p);
    #pragma GCC unroll 4
        for (int t = 0; t < T; t++)
                acc[r][t] = step_group(&wr, (const xgroup *)(xp + xps * (size_t)t + gx * (size_t)g), acc[r][t]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            y[ys * (size_t)t + (size_t)r] =
                finish(kind, acc[r][t], w + ws * (size_t)r, 4 * ng, nb,
                       (const tn_block_q8_0 *)(xp + xps * (size_t)t + gx * (size_t)ng));
}

/* Dispatch to the tile with compile-time R, T (1..4 each). */
#define TILE_CASE(kind, R, T) \
    case (R - 1) * 4 + (T - 1): tile_q(kind, R, T, w, ws, xp, xps, n, y, ys); break;
#define TILE_ROW(kind, R) TILE_CASE(kind, R, 1) TILE_CASE(kind, R, 2) TILE_CASE(kind, R, 3) TILE_CASE(kind, R, 4)

static void tile_q4_0(int R, int T, const char *w, size_t ws, const char *xp, size_t xps, int64_t n, float *y, size_t ys)
{
    switch ((R - 1) * 4 + (T - 1)) {
        TILE_ROW(W_Q4_0, 1) TILE_ROW(W_Q4_0, 2) TILE_ROW(W_Q4_0, 3) TILE_ROW(W_Q4_0, 4)
    }
}

static void tile_q8_0(int R, int T, const char *w, size_t ws, const char *xp, size_t xps, int64_t n, float *y, size_t ys)
{
    switch ((R - 1) * 4 + (T - 1)) {
        TILE_ROW(W_Q8_0, 1) TILE_ROW(W_Q8_0, 2) TILE_ROW(W_Q8_0, 3) TILE_ROW(W_Q8_0, 4)
    }
}
#undef TILE_ROW
#undef TILE_CASE

/* Packs one token's Q8_0 activation row for weight type wt; see the essay
 * and tn__xpack_row_size. */
static void xpack(tn_dtype wt, const tn_block_q8_0 *x, int64_t n, void *xp)
{
    const int64_t nb = n / TN_QK8_0, ng = nb / 4;
    char *o = xp;
    for (int64_t g = 0; g < ng; g++)
        pack_group(x + 4 * g, wt == TN_DTYPE_Q4_0 ? 8 : 128, (xgroup *)o + g);
    memcpy(o + GROUP_BYTES * (size_t)ng, x + 4 * ng, sizeof(tn_block_q8_0) * (size_t)(nb - 4 * ng));
}

/* y[t·ys + r] = w_r · x_t for r < nr, t < nt, in tiles of 4 rows × 4
 * tokens. Tokens are the outer loop: the four tokens' packed rows stay in
 * L1 while the rows go by, and the caller keeps the nr rows small enough
 * to stay in L2 (matmul.c, CHUNK_BYTES_GEMM), so per tile the weights come
 * from L2 at 72 bytes per 4 × 4 × 128 multiply-adds. xp: nt packed rows,
 * xps bytes apart. */
static void gemm_q(tn_dtype wt, const void *w, size_t ws, int64_t nr, const void *xp, size_t xps, int64_t nt,
                   int64_t n, float *y, size_t ys)
{
    void (*tile)(int, int, const char *, size_t, const char *, size_t, int64_t, float *, size_t) =
        wt == TN_DTYPE_Q4_0 ? tile_q4_0 : tile_q8_0;
    for (int64_t t = 0; t < nt; t += 4) {
        const int T = (int)TN_MIN(4, nt - t);
        for (int64_t r = 0; r < nr; r += 4) {
            const int R = (int)TN_MIN(4, nr - r);
            tile(R, T, (const char *)w + ws * (size_t)r, ws, (const char *)xp + xps * (size_t)t, xps, n,
                 y + ys * (size_t)t + (size_t)r, ys);
        }
    }
}

/* The table's dot kernels: one token, packed on the fly group by group into
 * a small buffer, then the same tile as gemm_q; rows in fours. */
AI void int8_dot(const int kind, const char *w, size_t ws, int nr, const tn_block_q8_0 *x, int64_t n, float *y)
{
    enum { CHUNK = 16 }; /* groups packed at a time */
    const int64_t nb = n / TN_QK8_0, ng = nb / 4;
    const size_t bsz = kind == W_Q8_0 ? sizeof(tn_block_q8_0) : sizeof(tn_block_q4_0);
    alignas(64) xgroup buf[CHUNK];
    for (int r0 = 0; r0 < nr; r0 += 4) {
        const int R = TN_MIN(4, nr - r0);
        const char *wr = w + ws * (size_t)r0;
        __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int64_t g0 = 0; g0 < ng; g0 += CHUNK) {
            const int64_t gn = TN_MIN((int64_t)CHUNK, ng - g0);
            for (int64_t g = 0; g < gn; g++)
                pack_group(x + 4 * (g0 + g), kind == W_Q4_0 ? 8 : 128, buf + g);
            for (int64_t g = 0; g < gn; g++)
                for (int r = 0; r < R; r++) {
                    const wg wv = load_wg(kind, wr + ws * (size_t)r + 4 * bsz * (size_t)(g0 + g));
                    acc[r] = step_group(&wv, buf + g, acc[r]);
                }
        }
        for (int r = 0; r < R; r++)
            y[r0 + r] = finish(kind, acc[r], wr + ws * (size_t)r, 4 * ng, nb, x + 4 * ng);
    }
}

static void dot_q8_0(const void *w, size_t ws, int nr, const void *x, int64_t n, float *y)
{
    int8_dot(W_Q8_0, w, ws, nr, x, n, y);
}

static void dot_q4_0(const void *w, size_t ws, int nr, const void *x, int64_t n, float *y)
{
    int8_dot(W_Q4_0, w, ws, nr, x, n, y);
}

/* --- the float entry points: groups of TN__DOT_ROWS rows, then single rows */

#define DOT_ENTRY(name, body, kind, xtype)                                                            \
    static void name(const void *w, size_t ws, int nr, const void *x, int64_t n, float *y)           \
    {                                                                                                 \
        const char *wc = w;                                                                           \
        int r = 0;                                                                                    \
        for (; r + TN__DOT_ROWS <= nr; r += TN__DOT_ROWS)                                             \
            body(kind, wc + ws * (size_t)r, ws, TN__DOT_ROWS, (const xtype *)x, n, y + r);            \
        for (; r < nr; r++)                                                                           \
            body(kind, wc + ws * (size_t)r, ws, 1, (const xtype *)x, n, y + r);                       \
    }

DOT_ENTRY(dot_f32, float_rows, W_F32, float)
DOT_ENTRY(dot_f16, float_rows, W_F16, float)
DOT_ENTRY(dot_bf16, float_rows, W_BF16, float)

/* --- activation quantization ----------------------------------------------- */

/* roundf of each lane as int32: adding the largest float below 0.5 with the
 * lane's sign and truncating is exact for every float of magnitude below
 * 2^23 (checked exhaustively for |v| < 192; quantized values are <= 127). */
AI __m512i round_away(__m512 v)
{
    const __m512i sign = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32((int)0x80000000u));
    const __m512 half = _mm512_castsi512_ps(_mm512_or_si512(sign, _mm512_castps_si512(_mm512_set1_ps(0.49999997f))));
    return _mm512_cvttps_epi32(_mm512_add_ps(v, half));
}

static void quantize_q8_0(const float *x, tn_block_q8_0 *y, int64_t n)
{
    for (int64_t b = 0; b < n / TN_QK8_0; b++, x += TN_QK8_0) {
        const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        const float d = amax / 127.0f;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        const __m512 vid = _mm512_set1_ps(id);
        _mm_storeu_si128((__m128i *)y[b].qs, _mm512_cvtepi32_epi8(round_away(_mm512_mul_ps(v0, vid))));
        _mm_storeu_si128((__m128i *)(y[b].qs + 16), _mm512_cvtepi32_epi8(round_away(_mm512_mul_ps(v1, vid))));
    }
}

AI void axpy_body(float *y, float a, const float *x, int64_t n)
{
    const __m512 va = _mm512_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

static void axpy_f32(float *y, float a, const float *x, int64_t n) { axpy_body(y, a, x, n); }

/* --- attention's row loops, softmax, SwiGLU ------------------------------------ */

/* The loops of kern.h's tn_dot_f32_rows / tn_axpy_f32_rows with the bodies
 * of dot_f32 (tile_f, one row, one token) and axpy_f32 inlined: the same
 * operations per row, so the same bits, without a call per cache row. */
static void dot_f32_rows(const float *q, const float *base, const int32_t *idx, size_t stride, int64_t n_rows,
                         int64_t n, float scale, float *out)
{
    for (int64_t i = 0; i < n_rows; i++) {
        float d;
        tile_f(W_F32, 1, 1, (const char *)(base + (size_t)idx[i] * stride), 0, (const char *)q, 0, n, &d, 0);
        out[i] = d * scale;
    }
}

static void axpy_f32_rows(float *y, const float *p, const float *base, const int32_t *idx, size_t stride,
                          int64_t n_rows, int64_t n)
{
    memset(y, 0, (size_t)n * sizeof(float));
    for (int64_t i = 0; i < n_rows; i++)
        axpy_body(y, p[i], base + (size_t)idx[i] * stride, n);
}

/* kern_ref.c's softmax (sum in double, an all -inf row becomes zeros) with
 * the vector exp; a partial last vector is handled with masks. */
static void softmax(float *x, int64_t n)
{
    if (n <= 0)
        return;
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), m, x + i));
    }
    const float max = _mm512_reduce_max_ps(vmax);
    if (max == -INFINITY) {
        memset(x, 0, (size_t)n * sizeof(float));
        return;
    }
    const __m512 vm = _mm512_set1_ps(max);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        const __m512 e = _mm512_maskz_mov_ps(m, exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vm)));
        _mm512_mask_storeu_ps(x + i, m, e);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    const double sum = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    const __m512 inv = _mm512_set1_ps((float)(1.0 / sum));
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
    }
}

/* gate = gate / (1 + e^-gate) · up, with the vector exp. */
static void swiglu(float *gate, const float *up, int64_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
        const __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g));
        const __m512 r = _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(m, up + i));
        _mm512_mask_storeu_ps(gate + i, m, r);
    }
}

const tn__kern_ops tn__kern_ops_avx512 = {
    .isa = TN_ISA_AVX512,
    .dot_f32 = dot_f32,
    .dot_f16 = dot_f16,
    .dot_bf16 = dot_bf16,
    .dot_q8_0 = dot_q8_0,
    .dot_q4_0 = dot_q4_0,
    .quantize_q8_0 = quantize_q8_0,
    .axpy_f32 = axpy_f32,
    .xpack = xpack,
    .gemm_q = gemm_q,
    .gemm_f = gemm_f,
    .dot_f32_rows = dot_f32_rows,
    .axpy_f32_rows = axpy_f32_rows,
    .softmax = softmax,
    .swiglu = swiglu,
};
