/*
 * smoothquant — W8A8 models (kern/w8a8.h) with SmoothQuant-style migration
 * scales calibrated on text: `tern quantize IN OUT w8a8 --calib TEXT`.
 *
 * Key idea (Xiao et al., SmoothQuant, 2022): activations have a few input
 * channels with large magnitudes, which per-token int8 quantization turns
 * into large errors everywhere else in the row; weights are easy. For a
 * matrix that consumes an RMSNorm's output, y = W (g ⊙ x̂), a per-channel
 * factor s_j can be moved from the activation into the weight at no cost:
 *
 *     g'_j = g_j / s_j        (folded into the norm weight)
 *     W'[:, j] = W[:, j] s_j  (folded into the weight columns)
 *
 * with s_j = max|X_j|^α / max|W_j|^(1-α) over a calibration text (X_j:
 * channel j of the norm's output, W_j: column j of every matrix that reads
 * it). α = 0.5 splits the range evenly. q/k/v share attn_norm's output,
 * gate/up share ffn_norm's; attn_output and ffn_down read no norm and get
 * s = 1 (per-row weight scales and per-token activation scales only).
 *
 * LIMITATIONS: dense llama / qwen2 / qwen3 only (a MoE router also reads
 * ffn_norm's output; latent attention's matrices are sliced per head);
 * token_embd and output keep their type.
 */
#ifndef TERN_COMPRESS_SMOOTHQUANT_H
#define TERN_COMPRESS_SMOOTHQUANT_H

#include "base/pool.h"
#include "model/model.h"
#include "tok/tok.h"

/* The smallest Hadamard block worth rotating by (kern/hadamard.h). */
#define TN_W8A8_MIN_ROTATION 16

typedef struct tn_w8a8_opts {
    const char *in_path;
    const char *out_path;
    const char *calib_text;   /* NULL: no smoothing (s = 1 everywhere) */
    size_t calib_len;
    float alpha;              /* migration strength in [0, 1] (0 given: 0.5) */
    int32_t n_ctx;            /* calibration window in tokens (0: min(256, n_ctx_train)) */
    int32_t n_chunks;         /* windows to run (0: all that fit, at most 64) */
    int32_t n_threads;        /* 0: all cores */
    const char *keep;         /* comma-separated matrix names left in their type ("ffn_down"), or NULL */
    const char *rotate;       /* matrix names written as W8A8_HAD ("ffn_down"), or NULL; a matrix
                                 whose rows allow no Hadamard block of TN_W8A8_MIN_ROTATION stays W8A8 */
} tn_w8a8_opts;

typedef struct tn_w8a8_result {
    int32_t n_w8a8;           /* matrices written as W8A8 or W8A8_HAD */
    int32_t n_rotated;        /* of which W8A8_HAD */
    int32_t n_chunks;         /* calibration windows run */
    double max_s, min_s;      /* range of the migration scales */
    uint64_t bytes_in, bytes_out;
} tn_w8a8_result;

/* Calibrates (when calib_text is given) and writes OUT. TN_ERR_UNSUPPORTED
 * for a MoE or latent-attention model; TN_ERR_INVALID for a bad alpha or a
 * text shorter than one window; errors of loading and writing name the path. */
tn_status tn_quantize_w8a8(const tn_w8a8_opts *o, tn_w8a8_result *r) TN_MUST_CHECK;

/* s[j] = amax[j]^alpha / wmax[j]^(1-alpha), 1 where either is 0, clamped
 * to [1e-5, 1e5]. */
void tn_smoothquant_scales(const float *amax, const float *wmax, int64_t n, float alpha, float *s);

#endif /* TERN_COMPRESS_SMOOTHQUANT_H */
