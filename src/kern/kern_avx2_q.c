/*
 * kern_avx2_q.c — AVX2 dot products of the formats in quants.h (compiled
 * with -mavx2 -mfma -mf16c, like kern_avx2.c; cpu.c selects them with it;
 * CPUs with AVX-512 use them too, see tn__quant_dot).
 *
 * HOW IT WORKS
 *
 * One weight row at a time against one activation row; a multi-row call is
 * a loop over rows, so each row's result is trivially the bits it gets
 * alone (the activation row stays in L1 between rows).
 *
 * 32-element blocks (Q4_1, Q5_0, Q5_1, IQ4_NL) against Q8_0: one ymm holds
 * a block's 32 quants as bytes (nibbles spread with a blend; Q5's high bits
 * from the 32-bit qh word with a byte shuffle and a bit-mask compare;
 * IQ4_NL's levels looked up with pshufb and multiplied with the sign trick);
 * maddubs + madd give eight exact int32 partial sums, FMA'd with d_w·d_x;
 * Q5_0's offset is the pairs of 16·x subtracted in int16; Q4_1/Q5_1's
 * minimum term is the partial sums of x FMA'd with m_w·d_x into a second
 * accumulator.
 *
 * K-quants against Q8_K, per 256-element super-block:
 *
 *   - 32 weight quants are unpacked into one ymm of unsigned bytes (Q4_K:
 *     nibbles; Q5_K: nibbles | high bit << 4; Q6_K: nibbles | 2 high bits << 4,
 *     i.e. q + 32 in 0..63);
 *   - maddubs multiplies them by the 32 activation bytes and adds pairs into
 *     int16 (at most 2·63·128 < 2^15: no saturation); madd against the
 *     sub-block scales (broadcast as int16; for Q6_K the low and high 128-bit
 *     halves are two 16-element sub-blocks with their own scales) widens to
 *     eight exact int32 sums, accumulated over the block;
 *   - Q6_K's offset of -32 is -32·Σ_j s_j·bsums_j (one madd of the scales
 *     against the bsums; Q3_K's -4 likewise, its quants taken as q + 4 in
 *     0..7; Q2_K's quants are 0..3); Q2_K/Q4_K/Q5_K's minimum term dmin·Σ_j m_j·(bsums) is an
 *     exact integer sum too, kept in a separate f32 total;
 *   - the eight int32 lanes are converted to f32 (exact: below 2^24 per lane
 *     for these ranges) and FMA'd with d_w·d_x into an f32 accumulator.
 *
 * The block loops cover whole blocks (n is a multiple of the block size),
 * so no scalar tail is left over; the order of every sum depends only on n.
 */
#include "kern/kern_impl.h"

#include <immintrin.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))

static inline float f16(uint16_t h) { return _cvtsh_ss(h); }

/* Sum of 8 lanes in a fixed order. */
AI float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 32 unsigned quants times 32 activation bytes, pairs summed, then times
 * scale (int16) and widened: eight int32 partial sums. */
AI __m256i dot32(__m256i q, const int8_t *x, __m256i scale16)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)x)), scale16);
}

/* The Q4_K/Q5_K scales and mins of a block, and the minimum term
 * Σ_j m_j·(bsums[2j] + bsums[2j+1]) (exact). */
AI int32_t k4_scales(const uint8_t *scales, const tn_block_q8_K *x, int sc[8])
{
    int32_t summ = 0;
    for (int j = 0; j < 8; j++) {
        int m;
        tn__q4_K_scale_min(scales, j, &sc[j], &m);
        summ += m * ((int32_t)x->bsums[2 * j] + x->bsums[2 * j + 1]);
    }
    return summ;
}

/* --- Q4_K, Q5_K ---------------------------------------------------------------- */

AI float row_q45_K(const int five, const char *wr, const tn_block_q8_K *x, int64_t nb)
{
    const __m256i m4 = _mm256_set1_epi8(15), one = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps();
    float mins = 0.0f;
    for (int64_t b = 0; b < nb; b++, x++) {
        const uint16_t *dd;
        const uint8_t *scales, *qs, *qhp = NULL;
        if (five) {
            const tn_block_q5_K *w = (const tn_block_q5_K *)wr + b;
            dd = &w->d, scales = w->scales, qs = w->qs, qhp = w->qh;
        } else {
            const tn_block_q4_K *w = (const tn_block_q4_K *)wr + b;
            dd = &w->d, scales = w->scales, qs = w->qs;
        }
        int sc[8];
        const int32_t summ = k4_scales(scales, x, sc);
        const __m256i qh = five ? _mm256_loadu_si256((const __m256i *)qhp) : _mm256_setzero_si256();
        __m256i isum = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
            __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if (five) {
                const __m256i h = _mm256_srli_epi16(qh, 2 * c);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(h, one), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 1), one), 4));
            }
            isum = _mm256_add_epi32(isum, dot32(lo, x->qs + 64 * c, _mm256_set1_epi16((short)sc[2 * c])));
            isum = _mm256_add_epi32(isum, dot32(hi, x->qs + 64 * c + 32, _mm256_set1_epi16((short)sc[2 * c + 1])));
        }
        const float d = f16(dd[0]) * x->d, dmin = f16(dd[1]) * x->d;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum), acc);
        mins += dmin * (float)summ;
    }
    return hsum(acc) - mins;
}

/* --- Q6_K ---------------------------------------------------------------------- */

AI float row_q6_K(const tn_block_q6_K *w, const tn_block_q8_K *x, int64_t nb)
{
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++, w++, x++) {
        /* the -32 offset: -32 · Σ_j s_j · bsums_j */
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w->scales));
        __m256i isum = _mm256_slli_epi32(_mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)x->bsums)), 5);
        isum = _mm256_sub_epi32(_mm256_setzero_si256(), isum);
        for (int h = 0; h < 2; h++) {
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(w->qh + 32 * h));
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)(w->ql + 64 * h));
            const __m256i l1 = _mm256_loadu_si256((const __m256i *)(w->ql + 64 * h + 32));
            const __m256i q[4] = {
                _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4)),
                _mm256_or_si256(_mm256_and_si256(l1, m4),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4)),
            };
            for (int k = 0; k < 4; k++) {
                const int j = 8 * h + 2 * k; /* the sub-blocks of the low and high 16 bytes */
                const __m256i s = _mm256_set_m128i(_mm_set1_epi16(w->scales[j + 1]), _mm_set1_epi16(w->scales[j]));
                isum = _mm256_add_epi32(isum, dot32(q[k], x->qs + 128 * h + 32 * k, s));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(w->d) * x->d), _mm256_cvtepi32_ps(isum), acc);
    }
    return hsum(acc);
}

/* --- Q3_K, Q2_K ----------------------------------------------------------------- */

/* Q3_K: the quants as unsigned q + 4 = low 2 bits | high bit << 2 in 0..7;
 * the offset -4·Σ_j s_j·bsums_j is one madd of the scales against bsums. */
AI float row_q3_K(const tn_block_q3_K *w, const tn_block_q8_K *x, int64_t nb)
{
    const __m256i m2 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++, w++, x++) {
        int16_t sc[16];
        for (int j = 0; j < 16; j++)
            sc[j] = (int16_t)tn__q3_K_scale(w, j);
        const __m256i sc16 = _mm256_loadu_si256((const __m256i *)sc);
        __m256i isum = _mm256_slli_epi32(_mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)x->bsums)), 2);
        isum = _mm256_sub_epi32(_mm256_setzero_si256(), isum);
        const __m256i hm = _mm256_loadu_si256((const __m256i *)w->hmask);
        for (int h = 0; h < 2; h++) {
            const __m256i qs = _mm256_loadu_si256((const __m256i *)(w->qs + 32 * h));
            for (int k = 0; k < 4; k++) {
                const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * k), m2);
                const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + k), one);
                const __m256i q = _mm256_or_si256(lo, _mm256_slli_epi16(hb, 2));
                const int j = 8 * h + 2 * k;
                const __m256i s = _mm256_set_m128i(_mm_set1_epi16(sc[j + 1]), _mm_set1_epi16(sc[j]));
                isum = _mm256_add_epi32(isum, dot32(q, x->qs + 128 * h + 32 * k, s));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(w->d) * x->d), _mm256_cvtepi32_ps(isum), acc);
    }
    return hsum(acc);
}

AI float row_q2_K(const tn_block_q2_K *w, const tn_block_q8_K *x, int64_t nb)
{
    const __m256i m2 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    float mins = 0.0f;
    for (int64_t b = 0; b < nb; b++, w++, x++) {
        int32_t summ = 0;
        for (int j = 0; j < 16; j++)
            summ += (w->scales[j] >> 4) * (int32_t)x->bsums[j];
        __m256i isum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i qs = _mm256_loadu_si256((const __m256i *)(w->qs + 32 * h));
            for (int k = 0; k < 4; k++) {
                const __m256i q = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * k), m2);
                const int j = 8 * h + 2 * k;
                const __m256i s =
                    _mm256_set_m128i(_mm_set1_epi16((short)(w->scales[j + 1] & 15)), _mm_set1_epi16((short)(w->scales[j] & 15)));
                isum = _mm256_add_epi32(isum, dot32(q, x->qs + 128 * h + 32 * k, s));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(w->d) * x->d), _mm256_cvtepi32_ps(isum), acc);
        mins += (f16(w->dmin) * x->d) * (float)summ;
    }
    return hsum(acc) - mins;
}

/* --- 32-element blocks against Q8_0 ------------------------------------------------ */

enum { W_Q4_1, W_Q5_0, W_Q5_1, W_IQ4_NL };

/* A block's 16 nibble bytes as 32 unsigned bytes in element order. */
AI __m256i nibbles(const uint8_t *qs)
{
    const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    return _mm256_and_si256(_mm256_blend_epi32(v, _mm256_srli_epi16(v, 4), 0xf0), _mm256_set1_epi8(15));
}

/* Bit i of the 32-bit word at qh as 0x10 in byte i. */
AI __m256i high_bits(const uint8_t *qh)
{
    uint32_t h;
    memcpy(&h, qh, 4);
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)h), _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2,
                                                    3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10));
}

/* One row of 32-element blocks: per block the exact int32 partial sums of
 * q·x (eight lanes) FMA'd with d_w·d_x, and for the formats with a minimum
 * the partial sums of x FMA'd with m_w·d_x into a second accumulator. */
AI float row_32(const int kind, const char *wr, const tn_block_q8_0 *x, int64_t nb)
{
    const __m256i ones16 = _mm256_set1_epi16(1), ones8 = _mm256_set1_epi8(1), sixteen = _mm256_set1_epi8(16);
    const __m256i kv = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)tn__iq4nl_values));
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++, x++) {
        const __m256i xq = _mm256_loadu_si256((const __m256i *)x->qs);
        const float dx = f16(x->d);
        __m256i p16;
        float d, m = 0.0f;
        if (kind == W_Q4_1) {
            const tn_block_q4_1 *w = (const tn_block_q4_1 *)wr + b;
            p16 = _mm256_maddubs_epi16(nibbles(w->qs), xq);
            d = f16(w->d), m = f16(w->m);
        } else if (kind == W_Q5_1) {
            const tn_block_q5_1 *w = (const tn_block_q5_1 *)wr + b;
            p16 = _mm256_maddubs_epi16(_mm256_or_si256(nibbles(w->qs), high_bits(w->qh)), xq);
            d = f16(w->d), m = f16(w->m);
        } else if (kind == W_Q5_0) {
            const tn_block_q5_0 *w = (const tn_block_q5_0 *)wr + b;
            const __m256i q = _mm256_or_si256(nibbles(w->qs), high_bits(w->qh));
            p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(q, xq), _mm256_maddubs_epi16(sixteen, xq));
            d = f16(w->d);
        } else {
            const tn_block_iq4_nl *w = (const tn_block_iq4_nl *)wr + b;
            const __m256i q = _mm256_shuffle_epi8(kv, nibbles(w->qs)); /* signed levels */
            p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(xq, q));
            d = f16(w->d);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * dx), _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones16)), acc);
        if (kind == W_Q4_1 || kind == W_Q5_1) {
            const __m256i xs = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, xq), ones16);
            accm = _mm256_fmadd_ps(_mm256_set1_ps(m * dx), _mm256_cvtepi32_ps(xs), accm);
        }
    }
    return hsum(acc) + hsum(accm);
}

/* --- the table's entry points: one row at a time -------------------------------- */

static void dot_q4_K(const void *w, size_t ws, int nr, const void *x, int64_t n, float *y)
{
    for (int r = 0; r < nr; r++)
        y[r] = row_q45_K(0, (const char *)w + ws * (size_t)r, x, n / TN_QK_K);
}

static void dot_q5_K(const void *w, size_t ws, int nr, const void *x, int64_t n, float *y)
{
    for (int r = 0; r < nr; r++)
        y[r] = row_q45_K(1, (const char *)w + ws * (size_t)r, x, n / TN_QK_K);
}

static void dot_q6_K(const void *w, size_t ws, int nr, const void *x, int64_t n, float *y)
{
    for (int r = 0; r < nr; r++)
        y[r] = row_q6_K((const tn_block_q6_K *)((const char *)w + ws * (size_t)r), x, n / TN_QK_K);
}

#define ROWS32(name, kind)                                                                     \
    static void dot_##name(const void *w, size_t ws, int nr, const void *x, int64_t n, float *y) \
    {                                                                                          \
        for (int r = 0; r < nr; r++)                                                           \
            y[r] = row_32(kind, (const char *)w + ws * (size_t)r, x, n / 32);                  \
    }
ROWS32(q4_1, W_Q4_1)
ROWS32(q5_0, W_Q5_0)
ROWS32(q5_1, W_Q5_1)
ROWS32(iq4_nl, W_IQ4_NL)
#undef ROWS32

static void dot_q3_K(const void *w, size_t ws, int nr, const void *x, int64_t n, float *y)
{
    for (int r = 0; r < nr; r++)
        y[r] = row_q3_K((const tn_block_q3_K *)((const char *)w + ws * (size_t)r), x, n / TN_QK_K);
}

static void dot_q2_K(const void *w, size_t ws, int nr, const void *x, int64_t n, float *y)
{
    for (int r = 0; r < nr; r++)
        y[r] = row_q2_K((const tn_block_q2_K *)((const char *)w + ws * (size_t)r), x, n / TN_QK_K);
}

const tn__quant_ops tn__quant_ops_avx2 = {
    .dot =
        {
            [TN_DTYPE_Q4_K] = dot_q4_K,
            [TN_DTYPE_Q5_K] = dot_q5_K,
            [TN_DTYPE_Q6_K] = dot_q6_K,
            [TN_DTYPE_Q3_K] = dot_q3_K,
            [TN_DTYPE_Q2_K] = dot_q2_K,
            [TN_DTYPE_Q4_1] = dot_q4_1,
            [TN_DTYPE_Q5_0] = dot_q5_0,
            [TN_DTYPE_Q5_1] = dot_q5_1,
            [TN_DTYPE_IQ4_NL] = dot_iq4_nl,
        },
};
