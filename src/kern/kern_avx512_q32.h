/*
 * kern_avx512_q32.h — internal to src/kern: the AVX-512 dot and GEMM
 * kernels of Q4_1, Q5_0, Q5_1 and IQ4_NL (kern_avx512_q32.c), which
 * kern_avx512_q.c puts in tn__quant_ops_avx512. Contracts: kern_impl.h
 * (tn__dot_fn, tn__gemm_fn); activations are Q8_0 rows.
 */
#ifndef TERN_KERN_AVX512_Q32_H
#define TERN_KERN_AVX512_Q32_H

#include "kern/kern_impl.h"

#define TN__Q32_AVX512(name)                                                                                    \
    void tn__dot_##name##_avx512(const void *w, size_t ws, int nr, const void *x, int64_t n, float *y);        \
    void tn__gemm_##name##_avx512(const void *w, size_t ws, int64_t nr, const void *x, size_t xs, int64_t nt, \
                                  int64_t n, float *y, size_t ys);
TN__Q32_AVX512(q4_1)
TN__Q32_AVX512(q5_0)
TN__Q32_AVX512(q5_1)
TN__Q32_AVX512(iq4_nl)
#undef TN__Q32_AVX512

#endif /* TERN_KERN_AVX512_Q32_H */
