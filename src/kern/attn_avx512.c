/*
 * attn_avx512.c — attn.c's inner loops with AVX-512F/BW/VL (attn_impl.h).
 *
 * HOW IT WORKS: vectors of 16 floats along head_dim; a partial last vector
 * is loaded and stored with masks, so any head_dim works. Scores: per head,
 * 16 rows at a time, one accumulator per row, and the 16 lane sums done
 * together in one transposing tree (reduce16: 45 shuffles and adds for 16
 * dot products instead of ~10 per dot product). p·V:
 * head_dim in chunks of 64 held in four registers while the tile's rows
 * stream through. The exponential is the polynomial of kern_avx512.c's
 * softmax (within 2 ulp).
 */
#include "kern/attn_impl.h"
#include "kern/exp_avx512.h"

#include <immintrin.h>
#include <math.h>

#define AI static inline __attribute__((always_inline))

/* Lanes [0, rem) of a vector, rem clamped to [0, 16]. */
AI __mmask16 lanes(int64_t rem)
{
    return rem >= 16 ? (__mmask16)0xffff : rem <= 0 ? (__mmask16)0 : (__mmask16)((1u << rem) - 1);
}

static void cvt_f16(const uint16_t *src, float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = lanes(n - i);
        _mm512_mask_storeu_ps(dst + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src + i)));
    }
}

static void cvt_i8(const int8_t *src, float d, float *dst, int64_t n)
{
    const __m512 vd = _mm512_set1_ps(d);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = lanes(n - i);
        const __m512i w = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, src + i));
        _mm512_mask_storeu_ps(dst + i, m, _mm512_mul_ps(_mm512_cvtepi32_ps(w), vd));
    }
}

/* Lane sums of a[0..16) as one vector: result lane r = sum of a[r]'s
 * lanes, in one fixed tree (pairs within 128-bit lanes, then 64-bit
 * halves, then the four 128-bit lanes). Lane r depends only on a[r]. */
AI __m512 reduce16(__m512 *a)
{
    __m512 b[8], c[4];
    for (int i = 0; i < 8; i++)
        b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 4; i++) {
        const __m512d x = _mm512_castps_pd(b[2 * i]), y = _mm512_castps_pd(b[2 * i + 1]);
        c[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    const __m512 f01 = _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], 0x88), _mm512_shuffle_f32x4(c[0], c[1], 0xdd));
    const __m512 f23 = _mm512_add_ps(_mm512_shuffle_f32x4(c[2], c[3], 0x88), _mm512_shuffle_f32x4(c[2], c[3], 0xdd));
    return _mm512_add_ps(_mm512_shuffle_f32x4(f01, f23, 0x88), _mm512_shuffle_f32x4(f01, f23, 0xdd));
}

/* Blocks of 16 rows: per head, one accumulator per row along head_dim (q's
 * vector loaded once for the 16 rows), then reduce16. */
static void scores(const float *q, size_t q_stride, int G, const float *const *k, int nt, int hd, float scale,
                   float *s, int ld)
{
    const __m512 vs = _mm512_set1_ps(scale);
    for (int j0 = 0; j0 < nt; j0 += 16) {
        const int nb = nt - j0 < 16 ? nt - j0 : 16;
        /* a full block always (the accumulators stay in registers): rows
         * past the end repeat the last one, and their lanes are not stored */
        const float *kr[16];
        for (int r = 0; r < 16; r++)
            kr[r] = k[j0 + (r < nb ? r : nb - 1)];
        for (int g = 0; g < G; g++) {
            const float *qg = q + (size_t)g * q_stride;
            __m512 acc[16];
            for (int r = 0; r < 16; r++)
                acc[r] = _mm512_setzero_ps();
            for (int d = 0; d < hd; d += 16) {
                const __mmask16 m = lanes(hd - d);
                const __m512 qv = _mm512_maskz_loadu_ps(m, qg + d);
                for (int r = 0; r < 16; r++)
                    acc[r] = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, kr[r] + d), acc[r]);
            }
            _mm512_mask_storeu_ps(s + (size_t)g * ld + j0, lanes(nb), _mm512_mul_ps(reduce16(acc), vs));
        }
    }
}

static float tile_max(const float *s, int nt, float m)
{
    __m512 v = _mm512_set1_ps(m);
    for (int j = 0; j < nt; j += 16)
        v = _mm512_max_ps(v, _mm512_mask_loadu_ps(_mm512_set1_ps(m), lanes(nt - j), s + j));
    return _mm512_reduce_max_ps(v);
}

static float exp_tile(float *s, int nt, float m)
{
    const __m512 vm = _mm512_set1_ps(m);
    __m512 sum = _mm512_setzero_ps();
    for (int j = 0; j < nt; j += 16) {
        const __mmask16 k = lanes(nt - j);
        const __m512 e = _mm512_maskz_mov_ps(k, exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + j), vm)));
        _mm512_mask_storeu_ps(s + j, k, e);
        sum = _mm512_add_ps(sum, e);
    }
    return _mm512_reduce_add_ps(sum);
}

static void pv(float *acc, float alpha, const float *p, const float *const *v, int nt, int hd)
{
    const __m512 va = _mm512_set1_ps(alpha);
    for (int d = 0; d < hd; d += 64) {
        const __mmask16 m0 = lanes(hd - d), m1 = lanes(hd - d - 16), m2 = lanes(hd - d - 32),
                        m3 = lanes(hd - d - 48);
        __m512 a0 = _mm512_mul_ps(_mm512_maskz_loadu_ps(m0, acc + d), va);
        __m512 a1 = _mm512_mul_ps(_mm512_maskz_loadu_ps(m1, acc + d + 16), va);
        __m512 a2 = _mm512_mul_ps(_mm512_maskz_loadu_ps(m2, acc + d + 32), va);
        __m512 a3 = _mm512_mul_ps(_mm512_maskz_loadu_ps(m3, acc + d + 48), va);
        for (int j = 0; j < nt; j++) {
            const __m512 pj = _mm512_set1_ps(p[j]);
            const float *r = v[j] + d;
            a0 = _mm512_fmadd_ps(pj, _mm512_maskz_loadu_ps(m0, r), a0);
            a1 = _mm512_fmadd_ps(pj, _mm512_maskz_loadu_ps(m1, r + 16), a1);
            a2 = _mm512_fmadd_ps(pj, _mm512_maskz_loadu_ps(m2, r + 32), a2);
            a3 = _mm512_fmadd_ps(pj, _mm512_maskz_loadu_ps(m3, r + 48), a3);
        }
        _mm512_mask_storeu_ps(acc + d, m0, a0);
        _mm512_mask_storeu_ps(acc + d + 16, m1, a1);
        _mm512_mask_storeu_ps(acc + d + 32, m2, a2);
        _mm512_mask_storeu_ps(acc + d + 48, m3, a3);
    }
}

const tn__attn_ops tn__attn_ops_avx512 = {
    .cvt_f16 = cvt_f16,
    .cvt_i8 = cvt_i8,
    .scores = scores,
    .tile_max = tile_max,
    .exp_tile = exp_tile,
    .pv = pv,
};
