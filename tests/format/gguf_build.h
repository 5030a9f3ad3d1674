/*
 * gguf_build.h — a byte builder for hand-made (often hostile) GGUF files in
 * the format tests. It writes raw fields with no validation at all, so a
 * test can put any value in any field; the layout it follows is the offset
 * table in src/format/gguf_read.c.
 */
#ifndef TERN_TESTS_GGUF_BUILD_H
#define TERN_TESTS_GGUF_BUILD_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct gb {
    uint8_t *p;
    size_t len, cap;
    int version; /* 1: counts and lengths are u32; else u64 */
} gb;

static inline void gb_raw(gb *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static inline void gb_u8(gb *b, uint8_t v) { gb_raw(b, &v, 1); }

static inline void gb_u32(gb *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    gb_raw(b, x, 4);
}

static inline void gb_u64(gb *b, uint64_t v)
{
    gb_u32(b, (uint32_t)v);
    gb_u32(b, (uint32_t)(v >> 32));
}

static inline void gb_cnt(gb *b, uint64_t v)
{
    if (b->version == 1)
        gb_u32(b, (uint32_t)v);
    else
        gb_u64(b, v);
}

static inline void gb_strn(gb *b, const char *s, size_t n)
{
    gb_cnt(b, n);
    gb_raw(b, s, n);
}

static inline void gb_str(gb *b, const char *s) { gb_strn(b, s, strlen(s)); }

static inline void gb_header(gb *b, int version, uint64_t n_tensors, uint64_t n_kv)
{
    b->version = version;
    gb_raw(b, "GGUF", 4);
    gb_u32(b, (uint32_t)version);
    gb_cnt(b, n_tensors);
    gb_cnt(b, n_kv);
}

/* key + type code; the caller appends the value */
static inline void gb_key(gb *b, const char *key, uint32_t type)
{
    gb_str(b, key);
    gb_u32(b, type);
}

static inline void gb_kv_u32(gb *b, const char *key, uint32_t v)
{
    gb_key(b, key, 4);
    gb_u32(b, v);
}

static inline void gb_kv_str(gb *b, const char *key, const char *v)
{
    gb_key(b, key, 8);
    gb_str(b, v);
}

/* array header: element type and count; the caller appends the elements */
static inline void gb_arr(gb *b, uint32_t elem_type, uint64_t n)
{
    gb_u32(b, elem_type);
    gb_cnt(b, n);
}

static inline void gb_tensor(gb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                             uint64_t offset)
{
    gb_str(b, name);
    gb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        gb_cnt(b, ne[d]);
    gb_u32(b, type);
    gb_u64(b, offset);
}

static inline void gb_zeros(gb *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        gb_u8(b, 0);
}

static inline void gb_pad(gb *b, size_t align)
{
    while (b->len % align)
        gb_u8(b, 0);
}

#endif
