/*
 * sample — turning a row of logits into the next token.
 *
 * Key idea: one sampler per request, holding its parameters, its RNG state
 * and the penalty history; a chain applied in llama.cpp's order: penalties
 * (repetition, presence, frequency over the last penalty_last_n tokens),
 * then top-k, then top-p, then min-p, then temperature, then a draw from the
 * softmax with the seeded RNG. An optional logit bias is added before the
 * penalties. temperature <= 0 is greedy (argmax after
 * penalties; ties go to the lowest id). The same seed and inputs reproduce
 * the same tokens.
 */
#ifndef TERN_ENGINE_SAMPLE_H
#define TERN_ENGINE_SAMPLE_H

#include "base/base.h"

/* tn_sample_params is defined in tern/tern.h (public): fields and their
 * "off" values are documented there. */

/* Defaults: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, penalties off,
 * penalty_last_n 64, seed 0. */
tn_sample_params tn_sample_params_default(void);

typedef struct tn_sampler tn_sampler;

/* Allocates a sampler for a vocabulary of n_vocab tokens (its scratch is
 * sized once here; sampling does not allocate). */
tn_status tn_sampler_new(const tn_sample_params *p, int32_t n_vocab, tn_sampler **out) TN_MUST_CHECK;
void tn_sampler_free(tn_sampler *s);

/* Sets the per-request logit bias: bias[i] is added to the logit of token
 * ids[i] (copied; n == 0 clears) before anything else in the chain
 * (penalties, top-k, ...). Adding, as vLLM does: a bias of -100 bans a
 * token in practice, +100 all but forces it. Errors: TN_ERR_INVALID for an
 * id outside [0, n_vocab) (named in the message) or a non-finite bias,
 * TN_ERR_NOMEM; on error the previous bias stays. Sampling stays
 * allocation-free (the bias is applied to the sampler's scratch copy). */
tn_status tn_sampler_set_logit_bias(tn_sampler *s, const int32_t *ids, const float *bias, int32_t n) TN_MUST_CHECK;

/* Records a token in the penalty history (prompt tokens and each accepted
 * token). */
void tn_sampler_accept(tn_sampler *s, int32_t token);

/* Picks the next token from logits (n_vocab floats; not modified). Does not
 * record it: call tn_sampler_accept with the result. */
int32_t tn_sampler_sample(tn_sampler *s, const float *logits);

/* The RNG: xoshiro256** seeded through splitmix64. Exposed for tests. */
typedef struct tn_rng {
    uint64_t s[4];
} tn_rng;
void tn_rng_seed(tn_rng *r, uint64_t seed);
uint64_t tn_rng_next(tn_rng *r);
/* Uniform in [0, 1) with 53 random bits... as float64. */
double tn_rng_uniform(tn_rng *r);

#endif /* TERN_ENGINE_SAMPLE_H */
