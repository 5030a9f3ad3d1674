/*
 * gptq — GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training
 * Quantization for Generative Pre-trained Transformers") for tern's block
 * formats, as tern quantize --hessian uses it.
 *
 * Key idea: a weight row w is used as w·x, so its output error over the
 * calibration inputs is (w − q)ᵀ H (w − q) with H = E[x xᵀ] (hessian.h).
 * Quantizing the columns in order and, after each, moving the rounding
 * error onto the columns not yet quantized in the direction H says is
 * cheapest (the optimal-brain-surgeon update, through the upper Cholesky
 * factor U of H⁻¹) lowers that error well below rounding each weight to
 * its nearest level, however good the levels are.
 *
 * Block formats: at the start of each quantization block (32 or 256
 * columns) the block's scales (and minimums) are fitted, per row, by
 * tern's quantizer (compress/quant_k.h, importance = diag H) on the
 * CURRENT (error-updated) weights; then each column of the block is
 * rounded to the nearest point of that fixed grid, and at the end of the
 * block the chosen integers are packed under those scales (no
 * re-quantization: the packed block dequantizes exactly to the chosen
 * values). The grid of a block is read off the block itself: the block
 * dequantized with every integer set to u gives level u of every element.
 */
#ifndef TERN_COMPRESS_GPTQ_H
#define TERN_COMPRESS_GPTQ_H

#include "base/base.h"
#include "kern/dtype.h"

/* Whether GPTQ can produce type t (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 IQ4_NL Q2_K
 * Q3_K Q4_K Q5_K Q6_K). */
bool tn_gptq_supported(tn_dtype t);

/* Cholesky factorization of the SPD (n, n) row-major matrix a in place:
 * a = L Lᵀ with L written to the lower triangle (the upper is zeroed).
 * TN_ERR_INVALID naming the pivot when a is not positive definite. */
tn_status tn_gptq_cholesky(double *a, int64_t n) TN_MUST_CHECK;

/* From H ((n, n) F32, symmetric PSD): dead[j] = 1 where H[j][j] = 0 (the
 * column is set to 1 on the diagonal and its weights to 0, as GPTQ does),
 * H' = H + damp·mean(diag H)·I, and U ((n, n) F32, upper triangular) with
 * H'⁻¹ = Uᵀ U. When H' is not positive definite in double the damping is
 * raised tenfold (up to three times, logged). TN_ERR_INVALID if it still
 * fails; TN_ERR_NOMEM. */
tn_status tn_gptq_prepare(const float *H, int64_t n, double damp, float *U, uint8_t *dead) TN_MUST_CHECK;

/* Quantizes n_rows rows of W ((n_rows, n) F32; overwritten with the
 * error-updated weights) to type t, written to dst (n_rows rows of
 * tn_dtype_row_size(t, n) bytes), with U and dead from tn_gptq_prepare and
 * imp (n values, may be NULL: the importance for the scale fits, normally
 * diag H). q_out ((n_rows, n), may be NULL) receives the chosen values,
 * which are what dst dequantizes to. TN_ERR_INVALID when n does not fill
 * whole blocks, TN_ERR_UNSUPPORTED for a type GPTQ cannot produce,
 * TN_ERR_NOMEM. Thread-safe (callers split the rows). */
tn_status tn_gptq_quantize(tn_dtype t, const float *U, const uint8_t *dead, const float *imp, float *W,
                           int64_t n_rows, int64_t n, void *dst, float *q_out) TN_MUST_CHECK;

#endif /* TERN_COMPRESS_GPTQ_H */
