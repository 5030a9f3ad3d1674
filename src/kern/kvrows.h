/*
 * kvrows — the INT8 form of a KV-cache row (tn_quantize_row_kv_q8, used by
 * model/kv.c), and attention's two loops over cache rows stored in F16 or
 * INT8, one row at a time (the F32 loops are tn_dot_f32_rows /
 * tn_axpy_f32_rows in kern.h). The forward pass no longer uses the loops:
 * its attention is the tiled one of kern/attn.h. They stay as the simple
 * row-by-row form that tests/kern/test_attn.c checks the tiled attention
 * against and bench/bench_attn.c measures it against.
 *
 * Key idea: a cache row is one token's one K/V head (head_dim values). The
 * INT8 form keeps head_dim int8 values and one f32 scale per row
 * (per token, per head): x[i] = d * q[i], d = max|x| / 127, q = round(x / d).
 * Queries and probabilities stay F32; each row is widened on the fly, so the
 * only error is the storage rounding of K and V.
 *
 * DETERMINISM: every result is a fixed-order function of (q, row, n) or
 * (p, rows in the given order, n): the same whatever the batch, thread or
 * slot, as attention's batch invariance requires.
 */
#ifndef TERN_KERN_KVROWS_H
#define TERN_KERN_KVROWS_H

#include "kern/dtype.h"

/* Row i of a cache: base + idx[i] * stride elements (uint16_t f16 or
 * int8_t); for INT8 its scale is scales[idx[i] * sstride]. */

/* out[i] = (q · row i) * scale, i < n_rows; rows of n f16 values. */
void tn_dot_f16_rows(const float *q, const uint16_t *base, const int32_t *idx, size_t stride, int64_t n_rows,
                     int64_t n, float scale, float *out);
/* y = 0, then y += p[i] * row i for i = 0, 1, ... in order. */
void tn_axpy_f16_rows(float *y, const float *p, const uint16_t *base, const int32_t *idx, size_t stride,
                      int64_t n_rows, int64_t n);

/* out[i] = (q · row i) * d_i * scale, rows of n int8 values. */
void tn_dot_q8_rows(const float *q, const int8_t *base, const float *scales, const int32_t *idx, size_t stride,
                    size_t sstride, int64_t n_rows, int64_t n, float scale, float *out);
/* y = 0, then y += (p[i] * d_i) * row i in order. */
void tn_axpy_q8_rows(float *y, const float *p, const int8_t *base, const float *scales, const int32_t *idx,
                     size_t stride, size_t sstride, int64_t n_rows, int64_t n);

/* One row of n floats to int8 q and its scale *d (d = 0 and q = 0 for an
 * all-zero row). Rounding: nearest, ties away from zero. */
void tn_quantize_row_kv_q8(const float *x, int8_t *q, float *d, int64_t n);

#endif /* TERN_KERN_KVROWS_H */
