/*
 * gguf — reading and writing GGUF files (v1, v2 and v3 read, v3 written).
 *
 * Key idea: validate everything before trusting anything. The reader maps the
 * file, walks the header with a cursor that never reads past the mapping,
 * and rejects (with the field name and byte offset in tn_last_error()) bad
 * magic, unknown versions, counts and string lengths that cannot fit in the
 * file, unknown value or tensor types, dimensions whose product overflows,
 * tensor byte ranges outside the data section, misaligned or overlapping
 * tensors. After tn_gguf_open succeeds every accessor is safe.
 *
 * The file layout is documented as an offset table in gguf_read.c.
 */
#ifndef TERN_FORMAT_GGUF_H
#define TERN_FORMAT_GGUF_H

#include "base/base.h"
#include "kern/dtype.h"

/* GGUF metadata value types (values are the on-disk codes). */
typedef enum tn_gguf_type {
    TN_GGUF_UINT8 = 0,
    TN_GGUF_INT8 = 1,
    TN_GGUF_UINT16 = 2,
    TN_GGUF_INT16 = 3,
    TN_GGUF_UINT32 = 4,
    TN_GGUF_INT32 = 5,
    TN_GGUF_FLOAT32 = 6,
    TN_GGUF_BOOL = 7,
    TN_GGUF_STRING = 8,
    TN_GGUF_ARRAY = 9,
    TN_GGUF_UINT64 = 10,
    TN_GGUF_INT64 = 11,
    TN_GGUF_FLOAT64 = 12,
    TN_GGUF_TYPE_COUNT
} tn_gguf_type;

#define TN_GGUF_MAX_DIMS 4
#define TN_GGUF_DEFAULT_ALIGNMENT 32

typedef struct tn_gguf tn_gguf;

/* One tensor of an opened file. All fields valid after open; data points
 * into the mapping (read-only, lives as long as the tn_gguf). */
typedef struct tn_gguf_tensor {
    const char *name;                 /* NUL-terminated copy */
    int n_dims;                       /* 1..4 */
    int64_t ne[TN_GGUF_MAX_DIMS];     /* ne[0] is the contiguous dimension; unused dims are 1 */
    tn_dtype type;
    uint64_t offset;                  /* relative to the start of the data section */
    uint64_t nbytes;
    const void *data;
} tn_gguf_tensor;

/* Opens and validates a file, mapping it read-only. On failure *out is NULL
 * and tn_last_error() says what and where (prefixed with the path). */
tn_status tn_gguf_open(const char *path, tn_gguf **out) TN_MUST_CHECK;

/* Same over a caller-owned buffer (borrowed; must outlive the tn_gguf).
 * Used by tests and fuzzers. */
tn_status tn_gguf_open_mem(const void *data, size_t size, tn_gguf **out) TN_MUST_CHECK;

/* Unmaps and frees. NULL is a no-op. */
void tn_gguf_free(tn_gguf *g);
/* True when the tensor data is a read-only mapping of a file (tn_gguf_open),
 * whose pages the kernel may drop and read back: a caller that has copied a
 * tensor may madvise(MADV_DONTNEED) its pages. False for tn_gguf_open_mem. */
bool tn_gguf_is_mapped(const tn_gguf *g);

uint32_t tn_gguf_version(const tn_gguf *g);
uint32_t tn_gguf_alignment(const tn_gguf *g);

/* --- metadata ------------------------------------------------------------ */
int64_t tn_gguf_n_kv(const tn_gguf *g);
const char *tn_gguf_kv_key(const tn_gguf *g, int64_t i);   /* NUL-terminated */
tn_gguf_type tn_gguf_kv_type(const tn_gguf *g, int64_t i);
/* Index of key, or -1. */
int64_t tn_gguf_find_key(const tn_gguf *g, const char *key);

/* Typed getters by key. Return TN_ERR_NOT_FOUND if the key is absent (with
 * a message naming it), TN_ERR_FORMAT if its type does not fit. Integer
 * getters accept any integer type whose value fits; tn_gguf_get_f32 accepts
 * FLOAT32 and FLOAT64. */
tn_status tn_gguf_get_u32(const tn_gguf *g, const char *key, uint32_t *out) TN_MUST_CHECK;
tn_status tn_gguf_get_i32(const tn_gguf *g, const char *key, int32_t *out) TN_MUST_CHECK;
tn_status tn_gguf_get_u64(const tn_gguf *g, const char *key, uint64_t *out) TN_MUST_CHECK;
tn_status tn_gguf_get_f32(const tn_gguf *g, const char *key, float *out) TN_MUST_CHECK;
tn_status tn_gguf_get_bool(const tn_gguf *g, const char *key, bool *out) TN_MUST_CHECK;
/* String value: pointer into the mapping (NOT NUL-terminated) and length. */
tn_status tn_gguf_get_str(const tn_gguf *g, const char *key, const char **s, size_t *len) TN_MUST_CHECK;

/* Arrays. tn_gguf_get_arr gives the element type and count; for numeric
 * element types *data points at the packed little-endian elements in the
 * mapping (possibly unaligned: read with memcpy). For string arrays use
 * tn_gguf_arr_str; for nested arrays tn_gguf_arr_arr. */
tn_status tn_gguf_get_arr(const tn_gguf *g, const char *key, tn_gguf_type *elem_type,
                          uint64_t *n, const void **data) TN_MUST_CHECK;
/* The i-th string of a string array stored at key index kv (not NUL-terminated). */
tn_status tn_gguf_arr_str(const tn_gguf *g, int64_t kv, uint64_t i, const char **s, size_t *len) TN_MUST_CHECK;
/* The i-th element of an array of arrays stored at key index kv: its element
 * type, count and, for numeric element types, the packed elements (else
 * *data is NULL). Levels below that are validated but reachable only through
 * tn_gguf_kv_format and tn_gguf_set_from. TN_ERR_RANGE for a bad kv or i,
 * TN_ERR_FORMAT if the entry is not an array of arrays. */
tn_status tn_gguf_arr_arr(const tn_gguf *g, int64_t kv, uint64_t i, tn_gguf_type *elem_type,
                          uint64_t *n, const void **data) TN_MUST_CHECK;

/* Short name of a value type ("u8", "i32", "f32", "bool", "str", "arr", ...;
 * "?" for codes outside the enum). */
const char *tn_gguf_type_name(tn_gguf_type t);

/* A metadata value rendered as short text (for `tern info`): strings are
 * quoted and truncated, arrays show type, count and the first elements.
 * Writes at most cap bytes including the NUL; returns buf. */
char *tn_gguf_kv_format(const tn_gguf *g, int64_t i, char *buf, size_t cap);

/* --- tensors ------------------------------------------------------------- */
int64_t tn_gguf_n_tensors(const tn_gguf *g);
const tn_gguf_tensor *tn_gguf_tensor_at(const tn_gguf *g, int64_t i);
/* By name, or NULL. */
const tn_gguf_tensor *tn_gguf_find_tensor(const tn_gguf *g, const char *name);

/* --- writing ------------------------------------------------------------- */
typedef struct tn_gguf_writer tn_gguf_writer;

tn_status tn_gguf_writer_new(tn_gguf_writer **out) TN_MUST_CHECK;
void tn_gguf_writer_free(tn_gguf_writer *w);

/* Setters copy key and value. Setting an existing key replaces its value
 * (order of first insertion is kept). */
tn_status tn_gguf_set_u32(tn_gguf_writer *w, const char *key, uint32_t v) TN_MUST_CHECK;
tn_status tn_gguf_set_i32(tn_gguf_writer *w, const char *key, int32_t v) TN_MUST_CHECK;
tn_status tn_gguf_set_u64(tn_gguf_writer *w, const char *key, uint64_t v) TN_MUST_CHECK;
tn_status tn_gguf_set_f32(tn_gguf_writer *w, const char *key, float v) TN_MUST_CHECK;
tn_status tn_gguf_set_bool(tn_gguf_writer *w, const char *key, bool v) TN_MUST_CHECK;
tn_status tn_gguf_set_str(tn_gguf_writer *w, const char *key, const char *v) TN_MUST_CHECK;
/* Numeric array of n elements of elem_type, copied from data. */
tn_status tn_gguf_set_arr(tn_gguf_writer *w, const char *key, tn_gguf_type elem_type,
                          const void *data, uint64_t n) TN_MUST_CHECK;
/* String array (NUL-terminated strings), copied. */
tn_status tn_gguf_set_arr_str(tn_gguf_writer *w, const char *key, const char *const *v, uint64_t n) TN_MUST_CHECK;
/* Array of n arrays, copied: sub-array j holds counts[j] elements of
 * elem_type taken from data[j] (packed values for numeric types, a
 * `const char *const *` for TN_GGUF_STRING). Deeper nesting: tn_gguf_set_from. */
tn_status tn_gguf_set_arr_arr(tn_gguf_writer *w, const char *key, tn_gguf_type elem_type,
                              const void *const *data, const uint64_t *counts, uint64_t n) TN_MUST_CHECK;
/* Copies metadata entry i of an opened file (any type, arrays included). */
tn_status tn_gguf_set_from(tn_gguf_writer *w, const tn_gguf *src, int64_t i) TN_MUST_CHECK;

/* Adds a tensor. ne[0] is the contiguous dimension. data must hold
 * tn_dtype_row_size(type, ne[0]) * ne[1] * ne[2] * ne[3] bytes; it is
 * borrowed until tn_gguf_writer_write returns. */
tn_status tn_gguf_add_tensor(tn_gguf_writer *w, const char *name, tn_dtype type, int n_dims,
                             const int64_t *ne, const void *data) TN_MUST_CHECK;

/* Adds a tensor whose bytes are produced at write time: fill(ctx, dst,
 * nbytes) must write exactly nbytes (the tensor's size) to dst and return
 * TN_OK; an error aborts the write. Lets a model larger than memory be
 * written tensor by tensor (synth, quantize, convert). */
typedef tn_status (*tn_gguf_fill_fn)(void *ctx, void *dst, size_t nbytes);
tn_status tn_gguf_add_tensor_fn(tn_gguf_writer *w, const char *name, tn_dtype type, int n_dims,
                                const int64_t *ne, tn_gguf_fill_fn fill, void *ctx) TN_MUST_CHECK;

/* Writes a GGUF v3 file (alignment general.alignment if set, else 32). */
tn_status tn_gguf_writer_write(tn_gguf_writer *w, const char *path) TN_MUST_CHECK;

#endif /* TERN_FORMAT_GGUF_H */
