/*
 * attn_avx2.c — attn.c's inner loops with AVX2, FMA and F16C
 * (attn_impl.h).
 *
 * HOW IT WORKS: vectors of 8 floats along head_dim; a partial last vector
 * goes through maskload/maskstore (F32) or a scalar tail (conversions), so
 * any head_dim works. Scores: per head, 8 rows at a time, one accumulator
 * per row, the 8 lane sums done together in one transposing tree. p·V: head_dim in chunks of 32
 * held in four registers while the tile's rows stream through. The
 * exponential: the same range reduction and degree-7 polynomial as the
 * AVX-512 file, 2^k built in the exponent field; arguments below -87.3
 * (e^v < 1.2e-38) give 0.
 */
#include "kern/attn_impl.h"

#include <immintrin.h>
#include <math.h>

#define AI static inline __attribute__((always_inline))

/* Load/store mask of lanes [0, rem), rem clamped to [0, 8]. */
AI __m256i lanes(int64_t rem)
{
    const int r = rem >= 8 ? 8 : rem <= 0 ? 0 : (int)rem;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

AI float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AI __m256 exp_ps(__m256 v)
{
    const __m256 lo = _mm256_set1_ps(-87.3f);
    const __m256 keep = _mm256_cmp_ps(v, lo, _CMP_GE_OQ);
    v = _mm256_min_ps(_mm256_max_ps(v, lo), _mm256_set1_ps(88.7f));
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(v, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), v);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    /* 2^k for k in [-126, 128): k + 127 in the exponent field; e^88.7
     * rounds k to 128 only at the clamp, where 2^127 * p*2 would overflow:
     * split the scaling in two halves instead. */
    const __m256i ki = _mm256_cvtps_epi32(k);
    const __m256i h1 = _mm256_srai_epi32(ki, 1), h2 = _mm256_sub_epi32(ki, h1);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h1, _mm256_set1_epi32(127)), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h2, _mm256_set1_epi32(127)), 23));
    return _mm256_and_ps(_mm256_mul_ps(_mm256_mul_ps(p, s1), s2), keep);
}

static void cvt_f16(const uint16_t *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++)
        dst[i] = tn_fp16_to_fp32(src[i]);
}

static void cvt_i8(const int8_t *src, float d, float *dst, int64_t n)
{
    const __m256 vd = _mm256_set1_ps(d);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i w = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(src + i)));
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_cvtepi32_ps(w), vd));
    }
    for (; i < n; i++)
        dst[i] = (float)src[i] * d;
}

/* Lane sums of a[0..8) as one vector: result lane r = sum of a[r]'s
 * lanes, in one fixed tree. Lane r depends only on a[r]. */
AI __m256 reduce8(__m256 *a)
{
    __m256 b[4], c[2];
    for (int i = 0; i < 4; i++)
        b[i] = _mm256_add_ps(_mm256_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm256_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 2; i++) {
        const __m256d x = _mm256_castps_pd(b[2 * i]), y = _mm256_castps_pd(b[2 * i + 1]);
        c[i] = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(x, y)), _mm256_castpd_ps(_mm256_unpackhi_pd(x, y)));
    }
    return _mm256_add_ps(_mm256_permute2f128_ps(c[0], c[1], 0x20), _mm256_permute2f128_ps(c[0], c[1], 0x31));
}

/* Blocks of 8 rows: per head, one accumulator per row along head_dim, then
 * reduce8. */
static void scores(const float *q, size_t q_stride, int G, const float *const *k, int nt, int hd, float scale,
                   float *s, int ld)
{
    const __m256 vs = _mm256_set1_ps(scale);
    for (int j0 = 0; j0 < nt; j0 += 8) {
        const int nb = nt - j0 < 8 ? nt - j0 : 8;
        /* a full block always (the accumulators stay in registers): rows
         * past the end repeat the last one, and their lanes are not stored */
        const float *kr[8];
        for (int r = 0; r < 8; r++)
            kr[r] = k[j0 + (r < nb ? r : nb - 1)];
        for (int g = 0; g < G; g++) {
            const float *qg = q + (size_t)g * q_stride;
            __m256 acc[8];
            for (int r = 0; r < 8; r++)
                acc[r] = _mm256_setzero_ps();
            for (int d = 0; d < hd; d += 8) {
                const __m256i m = lanes(hd - d);
                const __m256 qv = _mm256_maskload_ps(qg + d, m);
                for (int r = 0; r < 8; r++)
                    acc[r] = _mm256_fmadd_ps(qv, _mm256_maskload_ps(kr[r] + d, m), acc[r]);
            }
            _mm256_maskstore_ps(s + (size_t)g * ld + j0, lanes(nb), _mm256_mul_ps(reduce8(acc), vs));
        }
    }
}

static float tile_max(const float *s, int nt, float m)
{
    __m256 v = _mm256_set1_ps(m);
    int j = 0;
    for (; j + 8 <= nt; j += 8)
        v = _mm256_max_ps(v, _mm256_loadu_ps(s + j));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    float r = _mm_cvtss_f32(h);
    for (; j < nt; j++)
        r = s[j] > r ? s[j] : r;
    return r;
}

static float exp_tile(float *s, int nt, float m)
{
    const __m256 vm = _mm256_set1_ps(m);
    __m256 sum = _mm256_setzero_ps();
    for (int j = 0; j < nt; j += 8) {
        const __m256i k = lanes(nt - j);
        const __m256 e = _mm256_and_ps(exp_ps(_mm256_sub_ps(_mm256_maskload_ps(s + j, k), vm)),
                                       _mm256_castsi256_ps(k));
        _mm256_maskstore_ps(s + j, k, e);
        sum = _mm256_add_ps(sum, e);
    }
    return hsum(sum);
}

static void pv(float *acc, float alpha, const float *p, const float *const *v, int nt, int hd)
{
    const __m256 va = _mm256_set1_ps(alpha);
    for (int d = 0; d < hd; d += 32) {
        const __m256i m0 = lanes(hd - d), m1 = lanes(hd - d - 8), m2 = lanes(hd - d - 16), m3 = lanes(hd - d - 24);
        __m256 a0 = _mm256_mul_ps(_mm256_maskload_ps(acc + d, m0), va);
        __m256 a1 = _mm256_mul_ps(_mm256_maskload_ps(acc + d + 8, m1), va);
        __m256 a2 = _mm256_mul_ps(_mm256_maskload_ps(acc + d + 16, m2), va);
        __m256 a3 = _mm256_mul_ps(_mm256_maskload_ps(acc + d + 24, m3), va);
        for (int j = 0; j < nt; j++) {
            const __m256 pj = _mm256_set1_ps(p[j]);
            const float *r = v[j] + d;
            a0 = _mm256_fmadd_ps(pj, _mm256_maskload_ps(r, m0), a0);
            a1 = _mm256_fmadd_ps(pj, _mm256_maskload_ps(r + 8, m1), a1);
            a2 = _mm256_fmadd_ps(pj, _mm256_maskload_ps(r + 16, m2), a2);
            a3 = _mm256_fmadd_ps(pj, _mm256_maskload_ps(r + 24, m3), a3);
        }
        _mm256_maskstore_ps(acc + d, m0, a0);
        _mm256_maskstore_ps(acc + d + 8, m1, a1);
        _mm256_maskstore_ps(acc + d + 16, m2, a2);
        _mm256_maskstore_ps(acc + d + 24, m3, a3);
    }
}

const tn__attn_ops tn__attn_ops_avx2 = {
    .cvt_f16 = cvt_f16,
    .cvt_i8 = cvt_i8,
    .scores = scores,
    .tile_max = tile_max,
    .exp_tile = exp_tile,
    .pv = pv,
};
