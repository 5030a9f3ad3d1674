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
 * Float weights: two 16-lane FMA accumulators per row (32 elements per
 * step), summed at the end by one fixed tree, then a scalar tail.
 *
 * Int8 weights: a zmm register holds two 32-byte blocks (lanes 0-7 block a,
 * 8-15 block b). VNNI's vpdpbusd multiplies unsigned bytes by signed bytes
 * and adds each group of four products into an int32 lane, exactly (no
 * saturation). Q4_0 nibbles are unsigned 0..15 and the block wants
 * (nib - 8)·x, so the lane starts from a bias of -8·Σx (shared by the rows);
 * the high nibbles are masked in place rather than shifted down, so their
 * lanes hold 16·(nib - 8)·x (bias -128·Σx) and get the block scale / 16.
 * Q8_0 weights are made unsigned as w + 128 (xor 0x80) against a bias of
 * -128·Σx. Each block's eight exact partial sums are converted to f32
 * (exact: |sum| < 2^24) and FMA'd with that block's d_w·d_x. The scales of
 * eight blocks are gathered at once with vpermt2w (blocks are 18 or 34 bytes,
 * so the f16 scales sit at fixed word offsets) and converted with one
 * vcvtph2ps. Blocks are arranged with broadcast loads and blends rather than
 * lane shuffles, which keep port 5 free. Each row is software-prefetched
 * PREFETCH_BYTES ahead. Blocks left over after the groups of eight go
 * through a scalar tail.
 */
#include "kern/kern_impl.h"

#include <immintrin.h>
#include <stdalign.h>

#define AI static inline __attribute__((always_inline))

/* How far ahead of the int8 kernels' position each weight row is prefetched:
 * the hardware prefetchers alone do not run far enough ahead to hide DRAM
 * latency behind these kernels' compute. */
#define PREFETCH_BYTES 512

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

AI void float_rows(const int kind, const char *w, size_t ws, const int nr, const float *x, int64_t n, float *y)
{
    __m512 acc[TN__DOT_ROWS][2];
    for (int r = 0; r < nr; r++)
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + 16);
        for (int r = 0; r < nr; r++) {
            acc[r][0] = _mm512_fmadd_ps(wload(kind, w + ws * r, i), x0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(wload(kind, w + ws * r, i + 16), x1, acc[r][1]);
        }
    }
    if (i + 16 <= n) {
        const __m512 x0 = _mm512_loadu_ps(x + i);
        for (int r = 0; r < nr; r++)
            acc[r][0] = _mm512_fmadd_ps(wload(kind, w + ws * r, i), x0, acc[r][0]);
        i += 16;
    }
    for (int r = 0; r < nr; r++) {
        float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]));
        for (int64_t j = i; j < n; j++)
            sum += wscalar(kind, w + ws * r, j) * x[j];
        y[r] = sum;
    }
}

/* --- int8 weights ------------------------------------------------------------ */

/* f16 scales of 8 consecutive blocks of 18 bytes (Q4_0) as f32: the scale
 * of block k is word 9k of the 144 bytes, all within the first 128. */
AI __m256 scales8_q4_0(const tn_block_q4_0 *b)
{
    static const alignas(64) uint16_t idx[32] = {0, 9, 18, 27, 36, 45, 54, 63};
    const __m512i v = _mm512_permutex2var_epi16(_mm512_loadu_si512(b), _mm512_load_si512(idx),
                                                _mm512_loadu_si512((const char *)b + 64));
    return _mm256_cvtph_ps(_mm512_castsi512_si128(v));
}

/* Same for 8 blocks of 34 bytes (Q8_0): words 17k, all within 256 bytes. */
AI __m256 scales8_q8_0(const tn_block_q8_0 *b)
{
    static const alignas(64) uint16_t lo[32] = {0, 17, 34, 51};
    static const alignas(64) uint16_t hi[32] = {0, 0, 0, 0, 68 - 64, 85 - 64, 102 - 64, 119 - 64};
    const char *p = (const char *)b;
    const __m512i a = _mm512_permutex2var_epi16(_mm512_loadu_si512(p), _mm512_load_si512(lo), _mm512_loadu_si512(p + 64));
    const __m512i c =
        _mm512_permutex2var_epi16(_mm512_loadu_si512(p + 128), _mm512_load_si512(hi), _mm512_loadu_si512(p + 192));
    return _mm256_cvtph_ps(_mm512_castsi512_si128(_mm512_mask_blend_epi16(0xf0, a, c)));
}

/* Two blocks' 32 quants side by side: [a.qs | b.qs]. */
AI __m512i pair_q8(const tn_block_q8_0 *a, const tn_block_q8_0 *b)
{
    return _mm512_mask_blend_epi64(0xf0, _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)a->qs)),
                                   _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)b->qs)));
}

/* Two Q4_0 blocks' nibbles in element order, 128-bit lanes
 * [a & 15, a & 0xf0, b & 15, b & 0xf0]: the high nibbles are left in place,
 * i.e. multiplied by 16, which pair_scale_q4 undoes in the scale. */
AI __m512i pair_q4(const tn_block_q4_0 *a, const tn_block_q4_0 *b)
{
    const __m512i v = _mm512_mask_blend_epi64(0xf0, _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)a->qs)),
                                              _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)b->qs)));
    const __m512i m = _mm512_mask_blend_epi64(0xcc, _mm512_set1_epi8(0x0f), _mm512_set1_epi8((char)0xf0));
    return _mm512_and_si512(v, m);
}

/* Scale vector of pair k of a group of 8: lanes 0-7 s[2k], 8-15 s[2k+1]. */
AI __m512 pair_scale(__m512 s8, int k)
{
    const __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(2 * k),
                                         _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
    return _mm512_permutexvar_ps(idx, s8);
}

/* The same for pair_q4's layout, from s8 and s8/16: lanes 4-7 and 12-15
 * hold the high nibbles' sums, which are 16 times too large. 16·isum is
 * exact in f32 and FMA rounds the exact product once, so (s/16)·(16·isum)
 * gives the same bits as s·isum (s/16 is exact unless s is below 2^-122). */
AI __m512 pair_scale_q4(__m512 s8, __m512 s8_16, int k)
{
    const __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(2 * k),
                                         _mm512_setr_epi32(0, 0, 0, 0, 16, 16, 16, 16, 1, 1, 1, 1, 17, 17, 17, 17));
    return _mm512_permutex2var_ps(s8, idx, s8_16);
}

enum { W_Q8_0, W_Q4_0 };

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

AI void int8_rows(const int kind, const char *w, size_t ws, const int nr, const tn_block_q8_0 *x, int64_t n, float *y)
{
    const size_t bsz = kind == W_Q8_0 ? sizeof(tn_block_q8_0) : sizeof(tn_block_q4_0);
    const int64_t nb = n / TN_QK8_0;
    const __m512i zero = _mm512_setzero_si512();
    /* the unsigned shift of w: w + 128 for Q8_0; nib, or 16·nib in the
     * high-nibble lanes, for Q4_0 (whose 8 becomes 128 there) */
    const __m512i offset = kind == W_Q8_0 ? _mm512_set1_epi8((char)0x80)
                                          : _mm512_mask_blend_epi64(0xcc, _mm512_set1_epi8(8), _mm512_set1_epi8((char)0x80));
    __m512 acc[TN__DOT_ROWS][2];
    for (int r = 0; r < nr; r++)
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8) {
        const __m256 dx = scales8_q8_0(x + b);
        __m512 s8[TN__DOT_ROWS], s8_16[TN__DOT_ROWS];
        for (int r = 0; r < nr; r++) {
            const char *wr = w + ws * r + bsz * b;
            for (size_t off = 0; off < 8 * bsz; off += 64)
                _mm_prefetch(wr + PREFETCH_BYTES + off, _MM_HINT_T0);
            const __m256 dw = kind == W_Q8_0 ? scales8_q8_0((const tn_block_q8_0 *)wr) : scales8_q4_0((const tn_block_q4_0 *)wr);
            s8[r] = _mm512_castps256_ps512(_mm256_mul_ps(dw, dx));
            if (kind == W_Q4_0)
                s8_16[r] = _mm512_mul_ps(s8[r], _mm512_set1_ps(1.0f / 16));
        }
        for (int k = 0; k < 4; k++) {
            const tn_block_q8_0 *xa = x + b + 2 * k;
            const __m512i xq = pair_q8(xa, xa + 1);
            const __m512i bias = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, offset, xq));
            for (int r = 0; r < nr; r++) {
                const char *wa = w + ws * r + bsz * (size_t)(b + 2 * k);
                __m512i wq;
                if (kind == W_Q8_0)
                    wq = _mm512_xor_si512(pair_q8((const tn_block_q8_0 *)wa, (const tn_block_q8_0 *)(wa + bsz)), offset);
                else
                    wq = pair_q4((const tn_block_q4_0 *)wa, (const tn_block_q4_0 *)(wa + bsz));
                const __m512i p = _mm512_dpbusd_epi32(bias, wq, xq);
                const __m512 sc = kind == W_Q8_0 ? pair_scale(s8[r], k) : pair_scale_q4(s8[r], s8_16[r], k);
                acc[r][k & 1] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(p), acc[r][k & 1]);
            }
        }
    }
    for (int r = 0; r < nr; r++) {
        float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]));
        for (int64_t c = b; c < nb; c++) {
            const char *wb = w + ws * r + bsz * (size_t)c;
            const uint16_t d = kind == W_Q8_0 ? ((const tn_block_q8_0 *)wb)->d : ((const tn_block_q4_0 *)wb)->d;
            sum += (float)block_isum(kind, wb, x + c) * (f16(d) * f16(x[c].d));
        }
        y[r] = sum;
    }
}

/* --- the table's entry points: groups of TN__DOT_ROWS rows, then single rows */

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
DOT_ENTRY(dot_q8_0, int8_rows, W_Q8_0, tn_block_q8_0)
DOT_ENTRY(dot_q4_0, int8_rows, W_Q4_0, tn_block_q8_0)

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

static void axpy_f32(float *y, float a, const float *x, int64_t n)
{
    const __m512 va = _mm512_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
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
};
