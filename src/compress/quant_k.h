/*
 * quant_k — weight quantizers (float rows → blocks) for the K-quants
 * (Q2_K … Q6_K) and IQ4_NL, and importance-weighted versions of the
 * 32-element types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1), as `tern quantize` uses them.
 *
 * Key idea: every format is "integers times a scale (minus a minimum)", so
 * all of them are fitted by the same two weighted least-squares searches
 * (quant_k.c has the essay): a per-sub-block fit of a scale (and minimum),
 * then the sub-block scales themselves fitted as integers under one f16
 * super-block scale, then the element integers re-rounded against the
 * scales as stored and the super-block scale(s) refitted by least squares
 * with those integers held fixed. The error minimized is
 * Σ w_i (x̂_i − x_i)², with w_i = imp_i · √(σ² + x_i²): imp_i is the
 * importance matrix entry of input column i (mean squared activation,
 * tern imatrix) or 1, σ² twice the mean square of the super-block.
 *
 * The bit layouts are kern/quants.h's (the one place they are written
 * down); what reads the blocks back is tn_dequantize_row.
 */
#ifndef TERN_COMPRESS_QUANT_K_H
#define TERN_COMPRESS_QUANT_K_H

#include "base/base.h"
#include "kern/dtype.h"

/* Quantizes one row of n floats (n a multiple of t's block size) to type t.
 * imp (n values, may be NULL) is the importance of each element: the
 * importance-matrix column values. Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and IQ4_NL
 * always use tern's fitted quantizers; Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 do
 * only when imp is given (without it they are llama.cpp's rounding, bit for
 * bit, from tn_quantize_row); every other type goes to tn_quantize_row,
 * which ignores imp. With imp, each 32-element block's stored f16 scale
 * (and offset) is a local optimum of its weighted error on the f16 lattice,
 * and no worse than the unweighted rounding's. Errors: TN_ERR_INVALID when n does not fill whole blocks,
 * TN_ERR_UNSUPPORTED for a type nothing can produce. Thread-safe. */
tn_status tn_quant_row(tn_dtype t, const float *x, void *dst, int64_t n, const float *imp) TN_MUST_CHECK;

/* Whether tn_quant_row can produce type t. */
bool tn_quant_row_supported(tn_dtype t);

#endif /* TERN_COMPRESS_QUANT_K_H */
