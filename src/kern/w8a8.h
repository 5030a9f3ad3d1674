/*
 * w8a8.h — tern's own W8A8 weight type: int8 weights with one f32 scale per
 * output row, against int8 activations with one f32 scale per token.
 *
 * LAYOUT (TN_DTYPE_W8A8; docs/formats.md). A matrix of n_out rows and n_in
 * columns is n_out rows of W8A8_ROW(n_in) = 4 + n_in bytes:
 *
 *   offset 0   f32  d_w     the row's scale (little-endian, unaligned)
 *   offset 4   int8 q[n_in] w[j] = d_w * q[j], q in [-127, 127]
 *
 * In a GGUF file the tensor's ne[0] is therefore n_in + 4 (so a reader that
 * multiplies ne[0] by the type size of 1 byte gets the right byte count);
 * the model loader takes 4 off.
 *
 * ACTIVATIONS are quantized per token at run time: d_x = max|x| / 127,
 * q = round(x / d_x) (ties away from zero), the same on every ISA. A dot
 * product is then the EXACT int32 sum of q_w * q_x, times d_w * d_x in f32,
 * so every ISA gives bit-identical results (the tests check this). The
 * int32 sum is exact for n_in < 2^31 / 127² ≈ 133,000 columns (the
 * largest LLM rows are ~30,000); the SIMD kernels' intermediate sums wrap
 * modulo 2^32 and so still end on the exact value.
 */
#ifndef TERN_KERN_W8A8_H
#define TERN_KERN_W8A8_H

#include "base/pool.h"
#include "kern/dtype.h"

#define TN_W8A8_ROW(n_in) ((size_t)(n_in) + 4)

/* One weight row (n floats) to the layout above. */
void tn_w8a8_quantize_row(const float *x, void *dst, int64_t n);
/* One stored row back to floats. */
void tn_w8a8_dequantize_row(const void *src, float *dst, int64_t n);

/* Activation row: q[n] int8 and its scale. */
void tn_w8a8_quantize_act(const float *x, int8_t *q, float *d, int64_t n);

/* Scratch bytes of tn_w8a8_matmul for n_tokens rows of n_in. */
size_t tn_w8a8_wsize(int64_t n_in, int64_t n_tokens);

/* Y = X · Wᵀ for W8A8 weights; as tn_matmul (kern.h). */
void tn_w8a8_matmul(tn_pool *pool, const void *w, int64_t n_in, int64_t n_out, const float *x, int64_t n_tokens,
                    float *y, void *wdata);

/* TN_DTYPE_W8A8_HAD: the same rows, holding W·H (kern/hadamard.h); each
 * activation row is rotated (x -> H·x) into the scratch before it is
 * quantized, so the product is still X·Wᵀ. */
size_t tn_w8a8_had_wsize(int64_t n_in, int64_t n_tokens);
void tn_w8a8_had_matmul(tn_pool *pool, const void *w, int64_t n_in, int64_t n_out, const float *x, int64_t n_tokens,
                        float *y, void *wdata);

/* The kernels of one ISA, for tests; w8a8.c picks them at run time.
 *
 * quant: one activation row x[n] to q[n] and its scale (returned); with
 *   offset, q holds q + 128 as unsigned bytes (the form gemm_offset says the
 *   ISA's gemm takes). The bytes equal the scalar quantizer's on every ISA.
 * idot: isum[r] = sum_j q_r[j] * qx[j] for nr (<= 4) weight rows at
 *   w + r * w_stride (pointing at the int8 part), qx signed.
 * gemm: y[t * ys + r] = (float)isum(r, t) * (d_w[r] * xd[t]) for nr rows
 *   of the stored layout at w (stride w_row, scales included) and nt
 *   tokens of quantized activations at xq (stride xq_row, in the ISA's
 *   form), n columns. Bit-identical to the scalar gemm. */
typedef float (*tn_w8a8_quant_fn)(const float *x, int8_t *q, int64_t n, bool offset);
typedef void (*tn_w8a8_idot_fn)(const int8_t *w, size_t w_stride, int nr, const int8_t *qx, int64_t n,
                                int32_t *isum);
typedef void (*tn_w8a8_gemm_fn)(const void *w, size_t w_row, int64_t nr, const int8_t *xq, size_t xq_row,
                                const float *xd, int64_t nt, int64_t n, float *y, size_t ys);
typedef struct tn_w8a8_kernels {
    tn_w8a8_quant_fn quant;
    tn_w8a8_idot_fn idot;
    tn_w8a8_gemm_fn gemm;
    bool gemm_offset; /* gemm takes activations as q + 128 */
} tn_w8a8_kernels;

/* The kernels of an ISA (0 scalar, 1 AVX2, 2 AVX-512 VNNI); false if this
 * CPU cannot run them. */
bool tn_w8a8_kernels_of(int isa, tn_w8a8_kernels *k);

#endif /* TERN_KERN_W8A8_H */
