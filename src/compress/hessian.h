/*
 * hessian — the input second-moment matrices H = Σ_tokens x xᵀ / n_tokens
 * of the dense weight matrices over a calibration text (tern imatrix
 * --hessian), which tern quantize --hessian uses for GPTQ (compress/gptq.h).
 *
 * Key idea: a weight row's output error over the calibration inputs is
 * (w − q)ᵀ H (w − q) (times n_tokens), so H is all GPTQ needs; the diagonal
 * of H is the importance matrix (imatrix.h). Matrices that read the same
 * input share one H: the naming rule below maps a weight to its input.
 *
 * NAMING RULE (weight name -> hessian tensor name):
 *   blk.N.attn_q / attn_k / attn_v.weight       -> blk.N.attn_qkv.hessian
 *   blk.N.ffn_gate / ffn_up.weight               -> blk.N.ffn_gate_up.hessian
 *   blk.N.ffn_gate_shexp / ffn_up_shexp.weight   -> blk.N.ffn_gate_up_shexp.hessian
 *   any other X.weight (attn_output, ffn_down, output, MLA's projections,
 *   ffn_down_shexp)                              -> X.hessian
 *   MoE expert stacks (*_exps) and the router (ffn_gate_inp): none (they keep
 *   the diagonal importance path); token_embd.weight: output.hessian when the
 *   embeddings are tied (the caller says so), else none (a lookup table).
 *
 * FILE FORMAT: a GGUF file (format/gguf.h) with
 *   key  general.type             str   "hessian"
 *   key  hessian.version          u32   1
 *   key  hessian.dataset          str   calibration text file (may be absent)
 *   key  hessian.chunks           i32   windows of text evaluated
 *   per input, tensor NAME (rule above), F32, ne = [n_in, n_in]: H, symmetric,
 *        each element Σ x_i x_j / n_tokens accumulated in double
 *   per input, key NAME.n_tokens  u64   rows (tokens) accumulated
 *
 * LIMITATIONS: n_in² doubles per input in memory while collecting (and n_in²
 * floats in the file): TinyLlama-size (n_embd 2048, n_ff 5632) needs
 * 3 × 16 MiB + 127 MiB per layer in the file, twice that while collecting;
 * an input wider than TN_HESSIAN_MAX_COLS is refused with an error.
 */
#ifndef TERN_COMPRESS_HESSIAN_H
#define TERN_COMPRESS_HESSIAN_H

#include "base/base.h"
#include "format/gguf.h"

#define TN_HESSIAN_MAX_COLS 8192 /* 256 MiB of F32, 512 MiB of double, per input */

typedef struct tn_hessian tn_hessian;

/* The hessian tensor name of weight wname (rule above) into out (cap bytes);
 * false when the weight has none. tied: the model has no output.weight. */
bool tn_hessian_name(const char *wname, bool tied, char *out, size_t cap);

tn_status tn_hessian_new(tn_hessian **out) TN_MUST_CHECK;
void tn_hessian_free(tn_hessian *h);

/* Adds n_rows input rows x ((n_rows, n_cols) floats) of weight wname to its
 * input's matrix (none: ignored). The same rows handed again for another
 * weight of the same input (q/k/v) in the same call are counted once (by
 * pointer; counting them twice would not change the mean anyway).
 * TN_ERR_INVALID when n_cols differs from the entry's or exceeds
 * TN_HESSIAN_MAX_COLS, or a value is not finite (naming the tensor);
 * TN_ERR_NOMEM. */
tn_status tn_hessian_add(tn_hessian *h, const char *wname, int64_t call, const float *x, int32_t n_rows,
                         int32_t n_cols) TN_MUST_CHECK;

/* Writes the file (format above); TN_ERR_IO naming the path. */
tn_status tn_hessian_save(const tn_hessian *h, const char *path, const char *dataset, int32_t chunks) TN_MUST_CHECK;

int64_t tn_hessian_n_entries(const tn_hessian *h);

/* Looks up weight wname (n_in input columns) in an opened hessian file g
 * (path for messages): *H receives the (n_in, n_in) F32 matrix (mapped, lives
 * as long as g) or NULL when the rule gives the weight no hessian. Errors
 * (TN_ERR_FORMAT, naming the tensor and the file): the file is not a hessian
 * file, the tensor is missing, is not F32 (n_in, n_in), or holds a value
 * that is not finite or a negative diagonal. */
tn_status tn_hessian_lookup(const tn_gguf *g, const char *path, const char *wname, bool tied, int64_t n_in,
                            const float **H) TN_MUST_CHECK;

/* Checks that g is a hessian file (general.type "hessian"). */
tn_status tn_hessian_check_file(const tn_gguf *g, const char *path) TN_MUST_CHECK;

#endif /* TERN_COMPRESS_HESSIAN_H */
