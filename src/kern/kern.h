/*
 * kern — the operators of the forward pass.
 *
 * Key idea: the scalar reference of every operator (kern_ref.c) is the
 * specification; ISA files (kern_avx2.c, kern_avx512.c) implement the hot
 * ones faster and are checked against it. The variant is chosen once at run
 * time from CPUID (tn_kern_init); TERN_ISA=scalar|avx2|avx512 in the
 * environment forces a lower one for testing.
 *
 * Matrix products: W is (n_out rows, n_in columns) stored row-major in its
 * dtype, as GGUF stores weights (ne[0] = n_in). X is (n_tokens, n_in) F32,
 * Y is (n_tokens, n_out) F32. Each Y element is one dot product whose
 * reduction order depends only on n_in and the dtype, never on n_tokens or
 * the thread count: a request's logits do not change with what else shares
 * the batch (the serving layer relies on this).
 */
#ifndef TERN_KERN_KERN_H
#define TERN_KERN_KERN_H

#include "base/pool.h"
#include "kern/dtype.h"

typedef enum tn_isa { TN_ISA_SCALAR = 0, TN_ISA_AVX2 = 1, TN_ISA_AVX512 = 2 } tn_isa;

/* Detects the CPU once (idempotent, thread-safe) and returns the chosen ISA. */
tn_isa tn_kern_init(void);
/* Forces a variant (tests); returns false if the CPU cannot run it. */
bool tn_kern_set_isa(tn_isa isa);
tn_isa tn_kern_isa(void);
const char *tn_isa_name(tn_isa isa);

/* Bytes of scratch tn_matmul needs for these shapes (activations converted
 * to the weight's dot-product type, e.g. Q8_0 for Q8_0/Q4_0 weights). */
size_t tn_matmul_wsize(tn_dtype wt, int64_t n_in, int64_t n_tokens);

/* Y = X · Wᵀ. w: n_out rows of n_in elements of type wt (n_in a multiple of
 * the block size; checked by the model loader, asserted here). wdata:
 * tn_matmul_wsize bytes of scratch, 64-byte aligned. Work is split over the
 * pool's threads by output rows. Does not allocate. */
void tn_matmul(tn_pool *pool, const void *w, tn_dtype wt, int64_t n_in, int64_t n_out,
               const float *x, int64_t n_tokens, float *y, void *wdata);

/* Row i of an embedding table (n_embd columns, type wt) into out (F32). */
void tn_get_row(const void *w, tn_dtype wt, int64_t n_embd, int64_t i, float *out);

/* --- small operators (scalar; cheap next to the matrix products) -------- */

/* out = x / rms(x) * w (w may be NULL: no scale), n elements. */
void tn_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps);

/* In-place SwiGLU: gate[i] = silu(gate[i]) * up[i]. */
void tn_swiglu(float *gate, const float *up, int64_t n);

/* In-place softmax over n elements. */
void tn_softmax(float *x, int64_t n);

/* Dot product of two F32 vectors (used by attention); fixed reduction order. */
float tn_dot_f32(const float *a, const float *b, int64_t n);

/* y += a * x over n elements. */
void tn_axpy_f32(float *y, float a, const float *x, int64_t n);

/* Attention's two loops over cache rows, with the kernels looked up once:
 * row i is the n floats at base + idx[i] * stride. out[i] = tn_dot_f32(q,
 * row i, n) * scale for i < n_rows; tn_axpy_f32_rows zeroes y (n floats)
 * and then adds p[i] * row i for i = 0, 1, ... in order. Bit-identical to
 * the same loops over tn_dot_f32 / tn_axpy_f32. */
void tn_dot_f32_rows(const float *q, const float *base, const int32_t *idx, size_t stride, int64_t n_rows, int64_t n,
                     float scale, float *out);
void tn_axpy_f32_rows(float *y, const float *p, const float *base, const int32_t *idx, size_t stride, int64_t n_rows,
                      int64_t n);

#endif /* TERN_KERN_KERN_H */
