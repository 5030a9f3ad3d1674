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
 * so every ISA gives bit-identical results (the tests check this).
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

/* The integer dot kernels, for tests: isum[r] = sum_j q_r[j] * qx[j] for nr
 * (<= 4) weight rows at w + r * w_stride (pointing at the int8 part). */
typedef void (*tn_w8a8_idot_fn)(const int8_t *w, size_t w_stride, int nr, const int8_t *qx, int64_t n,
                                int32_t *isum);
/* The kernel of an ISA (0 scalar, 1 AVX2, 2 AVX-512 VNNI), or NULL if this
 * CPU cannot run it. */
tn_w8a8_idot_fn tn_w8a8_idot_of(int isa);

#endif /* TERN_KERN_W8A8_H */
