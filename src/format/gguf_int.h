/*
 * gguf_int.h — what gguf_read.c and gguf_write.c share: the parsed file
 * structure and the little-endian field readers.
 *
 * Key idea: after tn_gguf_open has validated a file, every offset stored in
 * a tn__gguf_kv points at bytes that are known to lie inside the mapping, so
 * the writer (tn_gguf_set_from) and the formatter can walk values again with
 * the unchecked readers below.
 */
#ifndef TERN_FORMAT_GGUF_INT_H
#define TERN_FORMAT_GGUF_INT_H

#include "format/gguf.h"

/* Nested arrays (arrays of arrays) are allowed this many levels deep: a
 * top-level array is level 1. */
#define TN__GGUF_MAX_DEPTH 4

/* One metadata entry of an opened file. All offsets are from the start of
 * the file and were checked against its size. */
typedef struct tn__gguf_kv {
    const char *key;        /* NUL-terminated copy in tn_gguf.names */
    size_t key_off;         /* offset of the key's length prefix */
    tn_gguf_type type;
    size_t val_off;         /* offset of the value (after the type code) */
    uint64_t len;           /* STRING: byte length */
    tn_gguf_type elem_type; /* ARRAY: element type */
    uint64_t n;             /* ARRAY: element count */
    size_t data_off;        /* STRING: first byte; ARRAY: first element */
    size_t *elem_off;       /* ARRAY of STRING or ARRAY: offset of each element, else NULL */
} tn__gguf_kv;

struct tn_gguf {
    const uint8_t *base;    /* the file: mapping or caller's buffer */
    size_t size;
    bool mapped;            /* munmap on free */
    uint32_t version;       /* 1, 2 or 3 */
    uint32_t alignment;     /* power of two */
    size_t data_offset;     /* start of the tensor data section */
    int64_t n_kv;
    tn__gguf_kv *kv;        /* [n_kv] */
    int64_t n_tensors;
    tn_gguf_tensor *tensors; /* [n_tensors], in file order */
    char *names;            /* key copies, NUL-separated */
    char *tensor_names;     /* tensor-name copies, NUL-separated */
    int64_t *kv_hash;       /* open addressing: index + 1, 0 empty; [hash_cap] */
    int64_t *tensor_hash;   /* same for tensor names */
    size_t hash_cap_kv, hash_cap_tensor;
};

static inline uint32_t tn__gguf_rd_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t tn__gguf_rd_u64(const uint8_t *p)
{
    return (uint64_t)tn__gguf_rd_u32(p) | (uint64_t)tn__gguf_rd_u32(p + 4) << 32;
}

/* Width of counts and string lengths: 4 bytes in v1, 8 in v2 and v3. */
static inline size_t tn__gguf_count_size(const tn_gguf *g) { return g->version == 1 ? 4 : 8; }

/* Reads a count or length of the file's width at offset off (validated). */
static inline uint64_t tn__gguf_rd_count(const tn_gguf *g, size_t off)
{
    return g->version == 1 ? tn__gguf_rd_u32(g->base + off) : tn__gguf_rd_u64(g->base + off);
}

/* Size in bytes of one scalar of a numeric type (bool included), or 0 for
 * STRING, ARRAY and unknown codes. */
size_t tn__gguf_scalar_size(uint32_t type);

/* Offset just past the (validated) value of the given type at off. */
size_t tn__gguf_value_end(const tn_gguf *g, size_t off, tn_gguf_type type);

#endif /* TERN_FORMAT_GGUF_INT_H */
