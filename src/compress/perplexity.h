/*
 * perplexity — how well a model predicts a text, and how far a quantized
 * model's predictions drift from the full-precision model's.
 *
 * Key idea (llama.cpp's perplexity, so figures compare): the whole text is
 * tokenized once (BOS first if the vocabulary adds one), cut into
 * non-overlapping windows of n_ctx tokens, and each window is evaluated on
 * its own from an empty KV cache with its first token replaced by BOS. Only
 * the second half of each window is scored (positions n_ctx/2 .. n_ctx-2
 * predict the next token), so every scored token sees at least n_ctx/2
 * tokens of context. PPL = exp(mean negative log-likelihood).
 *
 * The scored positions' log-probabilities can be saved (docs/formats.md,
 * "TNLOGITS") and a later run, typically of a quantized model, compared
 * against them: the KL divergence KL(base || model) per token, its mean,
 * median, 99th / 99.9th percentile and max, how often both pick the same
 * most likely token, and the mean change in the probability of the correct
 * token (Δp = p_model - p_base). Both sides are compared at the file's
 * resolution (the current log-probabilities are rounded to the base row's
 * grid first), so a model compared with its own saved run gives exactly 0.
 */
#ifndef TERN_COMPRESS_PERPLEXITY_H
#define TERN_COMPRESS_PERPLEXITY_H

#include "base/pool.h"
#include "model/model.h"
#include "tok/tok.h"

/* Called after each window: i of n windows done, PPL so far. */
typedef void (*tn_ppl_progress_fn)(void *ud, int32_t i, int32_t n, double ppl);

typedef struct tn_ppl_opts {
    int32_t n_ctx;            /* window (>= 4); 0: take it from kl_base, else 512 */
    int32_t n_chunks;         /* windows to score; 0: all that fit (or kl_base's count) */
    int32_t n_batch;          /* tokens per forward call; 0: min(n_ctx, 512) */
    const char *save_logits;  /* optional: write the scored log-probabilities here */
    const char *kl_base;      /* optional: compare with this saved run */
    const char *kl_out;       /* optional, with kl_base: each scored position's KL, one "%.9g" line
                               * per position, window by window (for paired comparisons of two models) */
    tn_kv_type kv_type;       /* KV-cache storage (0: F32) */
    tn_ppl_progress_fn progress; /* optional */
    void *progress_ud;
} tn_ppl_opts;

typedef struct tn_ppl_result {
    int32_t n_ctx, n_chunks, n_tokens_text;
    int64_t n_scored;
    double nll;               /* mean negative log-likelihood (nats) */
    double ppl, ppl_err;      /* exp(nll) and its standard error (as llama.cpp estimates it) */
    double seconds;
    /* with kl_base */
    bool has_kl;
    double base_ppl;          /* the base run's PPL over the same tokens */
    double kl_mean, kl_err, kl_median, kl_p99, kl_p999, kl_max;
    double top1;              /* fraction of positions with the same argmax, [0, 1] */
    double dp_mean, dp_rms;   /* mean and RMS of p_model - p_base of the correct token */
} tn_ppl_result;

/* Runs the evaluation of text (len bytes) with model m and vocabulary v
 * (borrowed) on pool (may be NULL). Errors: TN_ERR_INVALID when the text
 * has fewer tokens than one window or the options are out of range
 * (messages give the counts), TN_ERR_FORMAT for a kl_base file that is not
 * a TNLOGITS file or does not match (vocabulary size, window, tokens: the
 * message says which), TN_ERR_INVALID for kl_out without kl_base, TN_ERR_IO when a file cannot be read or written,
 * whatever the forward pass fails with. *r is filled on success. */
tn_status tn_perplexity(const tn_model *m, const tn_vocab *v, tn_pool *pool, const char *text, size_t len,
                        const tn_ppl_opts *o, tn_ppl_result *r) TN_MUST_CHECK;

#endif /* TERN_COMPRESS_PERPLEXITY_H */
