/*
 * safetensors — reading Hugging Face safetensors files (single and
 * sharded), validated before anything is trusted.
 *
 * FILE LAYOUT (all integers little-endian)
 *
 *   offset   size  field
 *   0        8     u64 N: length of the JSON header
 *   8        N     JSON object: name -> {"dtype": "F32"|"F16"|"BF16"|...,
 *                  "shape": [d0, d1, ...] (d0 outermost, row-major),
 *                  "data_offsets": [begin, end]}; optional "__metadata__":
 *                  {string: string}. May be padded with trailing spaces.
 *   8 + N    ...   the data buffer; offsets are relative to its start
 *
 * What open rejects, naming the file, the tensor and the field: a file
 * shorter than 8 bytes or than its header, a header that is not a JSON
 * object (or has duplicate keys), an unknown dtype, a shape that is not an
 * array of non-negative integers (or whose byte size overflows), offsets
 * that are not two integers begin <= end inside the data buffer, a byte
 * range that does not equal shape x dtype size, two tensors that overlap,
 * and a data buffer with bytes no tensor covers (as the reference
 * implementation does). After open succeeds every tensor's bytes lie inside
 * the mapping.
 *
 * A SET is the weights of one Hugging Face checkpoint directory: either
 * model.safetensors alone, or the shards named by
 * model.safetensors.index.json ("weight_map": {tensor: shard file}). Every
 * tensor of the index must be in the shard it names, every tensor of a
 * shard must be in the index, and names are unique across shards.
 */
#ifndef TERN_FORMAT_SAFETENSORS_H
#define TERN_FORMAT_SAFETENSORS_H

#include "base/base.h"

typedef enum tn_st_dtype {
    TN_ST_BOOL, TN_ST_U8, TN_ST_I8, TN_ST_I16, TN_ST_U16, TN_ST_F16, TN_ST_BF16, TN_ST_I32, TN_ST_U32,
    TN_ST_F32, TN_ST_F64, TN_ST_I64, TN_ST_U64, TN_ST_F8_E4M3, TN_ST_F8_E5M2, TN_ST_DTYPE_COUNT
} tn_st_dtype;

#define TN_ST_MAX_DIMS 8

typedef struct tn_st_tensor {
    const char *name;              /* NUL-terminated copy */
    tn_st_dtype dtype;
    int n_dims;                    /* 0..TN_ST_MAX_DIMS (0: a scalar) */
    int64_t shape[TN_ST_MAX_DIMS]; /* shape[0] outermost, as in the file */
    uint64_t n_elems;
    uint64_t nbytes;
    const void *data;              /* in the mapping; lives as long as the file */
    const char *file;              /* the path it came from (for messages) */
} tn_st_tensor;

typedef struct tn_st_file tn_st_file;
typedef struct tn_st_set tn_st_set;

/* "F32", "BF16", ... as spelled in files. */
const char *tn_st_dtype_name(tn_st_dtype t);
/* Bytes per element. */
size_t tn_st_dtype_size(tn_st_dtype t);

/* Opens and validates one file, mapping it read-only. On failure *out is
 * NULL and tn_last_error() names the file and the offending field. */
tn_status tn_st_open(const char *path, tn_st_file **out) TN_MUST_CHECK;
/* Same over a caller-owned buffer (borrowed; must outlive the file); label
 * stands for the path in messages. */
tn_status tn_st_open_mem(const void *data, size_t size, const char *label, tn_st_file **out) TN_MUST_CHECK;
void tn_st_close(tn_st_file *f);

int64_t tn_st_n_tensors(const tn_st_file *f);
const tn_st_tensor *tn_st_tensor_at(const tn_st_file *f, int64_t i); /* in file-offset order */
const tn_st_tensor *tn_st_find(const tn_st_file *f, const char *name); /* or NULL */

/* Opens the weights of checkpoint directory dir (see SET above). */
tn_status tn_st_set_open(const char *dir, tn_st_set **out) TN_MUST_CHECK;
void tn_st_set_free(tn_st_set *s);
int64_t tn_st_set_n_tensors(const tn_st_set *s);
/* Tensors sorted by name. */
const tn_st_tensor *tn_st_set_tensor_at(const tn_st_set *s, int64_t i);
const tn_st_tensor *tn_st_set_find(const tn_st_set *s, const char *name); /* or NULL */

/* Reads element range [i0, i0 + n) of t converted to float (F32, F16,
 * BF16, F64). TN_ERR_UNSUPPORTED naming the tensor for other dtypes. */
tn_status tn_st_read_f32(const tn_st_tensor *t, uint64_t i0, uint64_t n, float *dst) TN_MUST_CHECK;

#endif /* TERN_FORMAT_SAFETENSORS_H */
