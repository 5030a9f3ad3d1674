/*
 * exp_avx512.h — e^x over 16 lanes, shared by the AVX-512 files (softmax and
 * SwiGLU in kern_avx512.c, the online softmax in attn_avx512.c). Include it
 * only from files compiled with -mavx512f.
 */
#ifndef TERN_KERN_EXP_AVX512_H
#define TERN_KERN_EXP_AVX512_H

#include <immintrin.h>

/* e^v lane by lane, within 2 ulp for v in [-104, 88.7] (clamped there: 0
 * below, a finite maximum above, -inf gives 0): v = k·ln2 + r with
 * |r| <= ln2/2 (ln2 in two parts, so r is nearly exact), e^r by its Taylor
 * polynomial of degree 7 (truncation error below 6e-9 relative), scaled by
 * 2^k with vscalefps. */
static inline __attribute__((always_inline)) __m512 exp_ps(__m512 v)
{
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(88.7f));
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), v);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, k);
}

#endif /* TERN_KERN_EXP_AVX512_H */
