/*
 * tern — a large-language-model inference stack in C11.
 *
 * This is the public header of libtern. Everything here is prefixed tn_;
 * types are opaque. A function that can fail returns tn_status (0 ok, a
 * negative code otherwise); tn_status_str() names the code and
 * tn_last_error() gives the detailed message of the last failure on the
 * calling thread (what was wrong and where: a field, a byte offset).
 */
#ifndef TERN_TERN_H
#define TERN_TERN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TN_API_VERSION 1

#if defined(__GNUC__)
#define TN_MUST_CHECK __attribute__((warn_unused_result))
#else
#define TN_MUST_CHECK
#endif

/* ---------------------------------------------------------------------------
 * Status codes: one X-macro table so codes and messages never drift.
 * ------------------------------------------------------------------------ */
#define TN_STATUS_LIST(X)                                   \
    X(TN_OK, 0, "ok")                                       \
    X(TN_ERR_NOMEM, -1, "out of memory")                    \
    X(TN_ERR_IO, -2, "input/output error")                  \
    X(TN_ERR_FORMAT, -3, "malformed data")                  \
    X(TN_ERR_UNSUPPORTED, -4, "unsupported")                \
    X(TN_ERR_INVALID, -5, "invalid argument")               \
    X(TN_ERR_NOT_FOUND, -6, "not found")                    \
    X(TN_ERR_RANGE, -7, "value out of range")               \
    X(TN_ERR_FULL, -8, "capacity exhausted")

typedef enum tn_status {
#define TN__STATUS_ENUM(name, code, msg) name = code,
    TN_STATUS_LIST(TN__STATUS_ENUM)
#undef TN__STATUS_ENUM
} tn_status;

/* Short fixed text for a status code ("unknown status" for others). */
const char *tn_status_str(tn_status s);

/* The detailed message of the last error set on this thread ("" if none).
 * Valid until the next failing call on the same thread. */
const char *tn_last_error(void);

/* ===========================================================================
 * The library API. Contracts in brief here; the module headers under src/
 * (model/model.h, tok/tok.h, engine/sample.h, base/pool.h) hold the full
 * ones and declare the same functions (the compiler checks they agree).
 * Pointer parameters are borrowed unless a comment says otherwise. Every
 * object is owned by one thread at a time; none is internally locked.
 * ======================================================================== */

typedef struct tn_pool tn_pool;
typedef struct tn_model tn_model;
typedef struct tn_vocab tn_vocab;
typedef struct tn_kv_cache tn_kv_cache;
typedef struct tn_forward tn_forward;
typedef struct tn_sampler tn_sampler;

/* --- compute threads ------------------------------------------------------ */
/* A fork/join pool of n_threads (0: all cores; clamped to the core count). */
tn_status tn_pool_new(int n_threads, tn_pool **out) TN_MUST_CHECK;
void tn_pool_free(tn_pool *pool);

/* --- models --------------------------------------------------------------- */
/* Loads and validates a GGUF model (mmapped). Errors name the key, tensor
 * or byte offset at fault (tn_last_error()). */
tn_status tn_model_load(const char *path, tn_model **out) TN_MUST_CHECK;
void tn_model_free(tn_model *m);
int32_t tn_model_n_vocab(const tn_model *m);
int32_t tn_model_n_ctx_train(const tn_model *m);

/* --- vocabularies and tokenization --------------------------------------- */
/* Builds the vocabulary stored in a GGUF file (a model or a vocab-only file). */
tn_status tn_vocab_load(const char *path, tn_vocab **out) TN_MUST_CHECK;
void tn_vocab_free(tn_vocab *v);
int32_t tn_vocab_n_tokens(const tn_vocab *v);
int32_t tn_vocab_bos(const tn_vocab *v);
int32_t tn_vocab_eos(const tn_vocab *v);
bool tn_vocab_add_bos(const tn_vocab *v);
bool tn_vocab_is_eog(const tn_vocab *v, int32_t id);
/* Writes at most cap ids to out, sets *n_out to the number needed;
 * TN_ERR_FULL if cap was too small. */
tn_status tn_tokenize(const tn_vocab *v, const char *text, size_t len, bool add_bos, bool parse_special,
                      int32_t *out, size_t cap, size_t *n_out) TN_MUST_CHECK;
/* The text of one token; returns its full length (may exceed cap). */
size_t tn_token_to_piece(const tn_vocab *v, int32_t id, bool render_special, char *buf, size_t cap);

/* Streaming detokenizer: never emits part of a UTF-8 sequence. */
typedef struct tn_detok {
    char pending[8];
    int n_pending;
} tn_detok;
#define TN_DETOK_MAX 2048 /* room for one token's text */
void tn_detok_init(tn_detok *d);
size_t tn_detok_push(tn_detok *d, const tn_vocab *v, int32_t id, char *out, size_t cap);
size_t tn_detok_flush(tn_detok *d, char *out, size_t cap);

/* --- the KV cache and the batched forward pass ---------------------------- */
tn_status tn_kv_new(const tn_model *m, int32_t n_slots, int32_t n_seq_max, tn_kv_cache **out) TN_MUST_CHECK;
void tn_kv_free(tn_kv_cache *kv);
void tn_kv_seq_rm(tn_kv_cache *kv, int32_t seq);
void tn_kv_clear(tn_kv_cache *kv);

/* One flattened batch: token i of sequence seq_id[i] at position pos[i]
 * writes its K/V to cache slot kv_slot[i] and attends to every cell of its
 * sequence at positions <= pos[i]. */
typedef struct tn_batch {
    int32_t n_tokens;
    const int32_t *token;    /* (n_tokens) ids in [0, n_vocab) */
    const int32_t *pos;      /* (n_tokens) >= 0 */
    const int32_t *seq_id;   /* (n_tokens) in [0, n_seq_max) */
    const int32_t *kv_slot;  /* (n_tokens) in [0, n_slots), distinct within a batch */
    const bool *want_logits; /* (n_tokens) */
} tn_batch;

/* Scratch for batches of up to n_batch_max tokens. */
tn_status tn_forward_new(const tn_model *m, int32_t n_batch_max, tn_forward **out) TN_MUST_CHECK;
void tn_forward_free(tn_forward *f);
/* Runs the batch; writes the wanted logits rows, in batch order, to logits
 * ((n_wanted, n_vocab) floats). pool may be NULL (one thread). */
tn_status tn_forward_run(tn_forward *f, tn_kv_cache *kv, tn_pool *pool, const tn_batch *b,
                         float *logits) TN_MUST_CHECK;

/* --- sampling -------------------------------------------------------------- */
typedef struct tn_sample_params {
    float temperature;        /* <= 0: greedy */
    int32_t top_k;            /* <= 0: off */
    float top_p;              /* >= 1: off */
    float min_p;              /* <= 0: off */
    float repeat_penalty;     /* 1: off; divides positive logits, multiplies negative */
    float presence_penalty;   /* 0: off; subtracted once if a token appeared */
    float frequency_penalty;  /* 0: off; subtracted per occurrence */
    int32_t penalty_last_n;   /* window of past tokens the penalties look at; 0: off, -1: all */
    uint64_t seed;
} tn_sample_params;

tn_sample_params tn_sample_params_default(void);
tn_status tn_sampler_new(const tn_sample_params *p, int32_t n_vocab, tn_sampler **out) TN_MUST_CHECK;
void tn_sampler_free(tn_sampler *s);
tn_status tn_sampler_set_logit_bias(tn_sampler *s, const int32_t *ids, const float *bias,
                                    int32_t n) TN_MUST_CHECK;
void tn_sampler_accept(tn_sampler *s, int32_t token);
int32_t tn_sampler_sample(tn_sampler *s, const float *logits);

#ifdef __cplusplus
}
#endif
#endif /* TERN_TERN_H */
