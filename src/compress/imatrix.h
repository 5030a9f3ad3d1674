/*
 * imatrix — importance matrices: for each weight matrix, the mean square of
 * each input column's activation over a calibration text (tern imatrix),
 * which tern quantize uses to weight each column's quantization error.
 *
 * Key idea: a quantization error in column c of W costs, on average,
 * E[x_c²]·err² in the product W·x, so the quantizers minimize
 * Σ_c E[x_c²]·(ŵ_c − w_c)² instead of the plain squared error. The forward
 * pass's observer (tn_forward_set_observer) hands every product's input
 * rows to tn_imatrix_add, which accumulates Σ x_c² and the row count. MoE
 * expert stacks get one slice of columns per expert, each averaged over the
 * tokens routed to that expert (tn_imatrix_add_expert), and tern quantize
 * weights each expert's matrix with its own slice; MLA's projections are
 * observed like dense ones (attn_kv_b with the normalized latents).
 *
 * FILE FORMAT: llama.cpp's legacy imatrix .dat, so llama-quantize reads
 * ours and tern quantize reads llama-imatrix's (little-endian, packed):
 *
 *   offset  size          field
 *   0       i32           n_entries
 *   then n_entries times:
 *           i32           name length L (1 ≤ L ≤ 4096)
 *           L bytes       tensor name, e.g. "blk.0.attn_q.weight" (no NUL)
 *           i32           ncall: forward calls that saw the tensor (≥ 0)
 *           i32           nval: input columns (≥ 0)
 *           f32[nval]     mean of x_c² over the rows seen, times ncall
 *   optional trailer:
 *           i32           chunks (windows) of text evaluated
 *           i32           dataset name length D, then D bytes (the text file)
 *
 * The column importance is the stored value divided by ncall (as is, when
 * ncall is 0), exactly what llama-quantize takes.
 */
#ifndef TERN_COMPRESS_IMATRIX_H
#define TERN_COMPRESS_IMATRIX_H

#include "base/pool.h"
#include "model/model.h"
#include "tok/tok.h"

typedef struct tn_imatrix tn_imatrix;

tn_status tn_imatrix_new(tn_imatrix **out) TN_MUST_CHECK;
void tn_imatrix_free(tn_imatrix *im);

/* Adds n_rows input rows of n_cols to entry name (created on first use);
 * counts one call. TN_ERR_INVALID if the entry exists with another width
 * or a value is not finite (the message names the tensor). */
tn_status tn_imatrix_add(tn_imatrix *im, const char *name, const float *x, int32_t n_rows,
                         int32_t n_cols) TN_MUST_CHECK;

/* Adds n_rows input rows of n_cols of one expert of a stack of n_expert
 * (tensor name, e.g. "blk.3.ffn_up_exps.weight"): the entry is n_expert
 * slices of n_cols, as llama-imatrix stores a stack, each slice averaged
 * over the rows its expert saw. ncall counts distinct call ids (one per
 * forward call, as llama-imatrix counts one per MUL_MAT_ID). Errors as
 * tn_imatrix_add, and TN_ERR_INVALID for an expert out of range. */
tn_status tn_imatrix_add_expert(tn_imatrix *im, const char *name, int32_t expert, int32_t n_expert, int64_t call,
                                const float *x, int32_t n_rows, int32_t n_cols) TN_MUST_CHECK;

/* Writes the file (format above) with the trailer; dataset may be NULL.
 * An expert stack in which some expert saw no row is left out (with a
 * warning), as llama-imatrix does.
 * TN_ERR_IO naming the path on failure (a partial file is removed). */
tn_status tn_imatrix_save(const tn_imatrix *im, const char *path, const char *dataset) TN_MUST_CHECK;

/* Reads a file; TN_ERR_IO if it cannot be read, TN_ERR_FORMAT naming the
 * entry and field when it is truncated or a count is out of range. */
tn_status tn_imatrix_load(const char *path, tn_imatrix **out) TN_MUST_CHECK;

int64_t tn_imatrix_n_entries(const tn_imatrix *im);
/* Entry i: its name, width, ncall. */
const char *tn_imatrix_entry(const tn_imatrix *im, int64_t i, int64_t *n_cols, int32_t *ncall);

/* The column importances (n_cols values: mean x_c²) of tensor name, or NULL
 * if there is no entry. *n_cols receives the entry's width (0 if none), so
 * a caller can refuse a mismatch. The pointer lives as long as im and is
 * invalidated by the next tn_imatrix_add. */
const float *tn_imatrix_get(tn_imatrix *im, const char *name, int64_t *n_cols);

/* Chunks recorded (tn_imatrix_collect's windows, or the file trailer's). */
int32_t tn_imatrix_n_chunks(const tn_imatrix *im);

/* Makes tn_imatrix_collect also accumulate every dense product's input
 * second moments into h (compress/hessian.h; borrowed, NULL: off). */
typedef struct tn_hessian tn_hessian;
void tn_imatrix_set_hessian(tn_imatrix *im, tn_hessian *h);

/* Called after each window: i of n done. */
typedef void (*tn_imatrix_progress_fn)(void *ud, int32_t i, int32_t n);

/* Runs text (len bytes) through model m in windows of n_ctx tokens (BOS
 * first, as tern perplexity; every token's logits wanted so the last layer
 * sees all rows), at most n_chunks windows (0: all that fit), adding every
 * dense product's input to im. TN_ERR_INVALID when the text has fewer
 * tokens than one window. */
tn_status tn_imatrix_collect(tn_imatrix *im, const tn_model *m, const tn_vocab *v, tn_pool *pool, const char *text,
                             size_t len, int32_t n_ctx, int32_t n_chunks, tn_imatrix_progress_fn progress,
                             void *progress_ud) TN_MUST_CHECK;

#endif /* TERN_COMPRESS_IMATRIX_H */
