/*
 * convert_int.h — what the converter's files share: the conversion
 * context, the output-tensor table and the helpers that fill it.
 */
#ifndef TERN_CONVERT_CONVERT_INT_H
#define TERN_CONVERT_CONVERT_INT_H

#include "convert/convert.h"
#include "format/gguf.h"
#include "format/hf_config.h"
#include "format/safetensors.h"

#define CV_MAX_SRC 1024 /* experts stacked into one tensor */

/* One GGUF tensor to write: n_src checkpoint tensors of [rows, cols]
 * (cols = 1 for vectors) stacked along ne[2]. With perm_heads > 0 the rows
 * of each head (rows / perm_heads of them) are reordered from Hugging
 * Face's rotate-half layout (i, i + d/2) to the adjacent pairs (2i, 2i+1)
 * that llama.cpp's NORM RoPE rotates. */
typedef struct tn__cv_tensor {
    char name[96];
    tn_dtype type;
    int n_dims;
    int64_t ne[3];
    int64_t rows, cols;       /* per source */
    int perm_heads;
    int n_src;
    const tn_st_tensor **src; /* (n_src) */
    float *data;              /* instead of sources: computed values (owned) */
} tn__cv_tensor;

typedef struct tn__cv {
    const char *dir;
    tn_hf_config *cfg;
    tn_st_set *st;
    tn_gguf_writer *w;
    tn_dtype dtype;           /* of the matrices */
    char family[32], arch[32];
    bool *claimed;            /* (n checkpoint tensors) */
    tn__cv_tensor *t;
    int64_t n_t, cap_t;
    tn_convert_info info;
} tn__cv;

/* Claims checkpoint tensor `name` (which must exist and be unclaimed) and
 * checks its shape is [rows, cols], or [rows] when cols == 0. */
tn_status tn__cv_take(tn__cv *c, const char *name, int64_t rows, int64_t cols, const tn_st_tensor **out) TN_MUST_CHECK;
/* True if the checkpoint has tensor name. */
bool tn__cv_has(const tn__cv *c, const char *name);

/* Adds GGUF tensor gguf_name made of checkpoint tensor hf_name, a matrix
 * [rows, cols] (cols == 0: a vector, written F32). f32: keep F32 whatever
 * the requested dtype (routers). perm_heads: see tn__cv_tensor. */
tn_status tn__cv_add(tn__cv *c, const char *gguf_name, const char *hf_name, int64_t rows, int64_t cols, bool f32,
                     int perm_heads) TN_MUST_CHECK;
/* Adds a stack of n_expert matrices [rows, cols] named by fmt with %d the
 * expert index (e.g. "model.layers.3.mlp.experts.%d.up_proj.weight"). */
tn_status tn__cv_add_experts(tn__cv *c, const char *gguf_name, const char *fmt, int n_expert, int64_t rows,
                             int64_t cols) TN_MUST_CHECK;

/* Adds F32 vector gguf_name of n computed values (copied), e.g.
 * rope_freqs.weight. */
tn_status tn__cv_add_data(tn__cv *c, const char *gguf_name, const float *v, int64_t n) TN_MUST_CHECK;

/* Metadata helpers: "<arch>.<key>". */
tn_status tn__cv_u32(tn__cv *c, const char *key, int64_t v) TN_MUST_CHECK;
tn_status tn__cv_f32(tn__cv *c, const char *key, double v) TN_MUST_CHECK;
tn_status tn__cv_bool(tn__cv *c, const char *key, bool v) TN_MUST_CHECK;

/* convert_arch.c: the family's metadata and tensor table. */
tn_status tn__cv_family(tn__cv *c) TN_MUST_CHECK;

/* convert_vocab.c: the tokenizer's tokenizer.ggml.* keys, padded with
 * [PAD<id>] tokens up to n_vocab rows of the embedding. */
tn_status tn__cv_vocab(tn__cv *c, int64_t n_vocab) TN_MUST_CHECK;

/* convert_spm.c: a SentencePiece tokenizer.model (protobuf) as the
 * tokenizer.ggml.* keys llama.cpp writes for it ("llama" model). Errors
 * name the file and the byte offset. */
tn_status tn__cv_spm_to_gguf(const char *path, tn_gguf_writer *w) TN_MUST_CHECK;

#endif /* TERN_CONVERT_CONVERT_INT_H */
