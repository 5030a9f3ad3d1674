/*
 * gguf_write.c — building and writing GGUF v3 files.
 *
 * Key idea: each metadata value is encoded into its final v3 bytes when it
 * is set (so tn_gguf_set_from converts a v1 value once, and writing the
 * header is a concatenation); tensors are only described until write time,
 * when their bytes are copied from the caller's buffer or produced by a
 * fill callback one tensor at a time into one reused scratch buffer, so a
 * model larger than memory can be written. The layout follows the offset
 * table in gguf_read.c: header, kvs, tensor infos, zero padding to the
 * alignment, then each tensor at an aligned offset, each followed by zero
 * padding to the alignment (the last one too, as llama.cpp writes it and
 * as its non-mmap loader expects).
 *
 * Limits (so llama.cpp reads what we write): tensor names shorter than 64
 * bytes, general.alignment a u32 nonzero power of two, bool values 0 or 1.
 */
#include "format/gguf_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GGML_MAX_NAME 64      /* llama.cpp's limit on tensor names, NUL included */
#define KEY_MAX 65535         /* GGUF spec: keys are at most 2^16 - 1 bytes */

typedef struct wkv {
    char *key;
    tn_gguf_type type;
    uint8_t *val; /* encoded v3 value (after the type code) */
    size_t len;
} wkv;

typedef struct wtensor {
    char *name;
    int n_dims;
    int64_t ne[TN_GGUF_MAX_DIMS];
    tn_dtype type;
    uint64_t nbytes;
    uint64_t offset; /* set at write time */
    const void *data;
    tn_gguf_fill_fn fill;
    void *ctx;
} wtensor;

struct tn_gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
};

/* ==========================================================================
 * A growable byte buffer. It grows by doubling up to SIZE_MAX / 2; a failed
 * growth sets `failed`, later puts are ignored, and the owner reports
 * TN_ERR_NOMEM once.
 * ======================================================================== */

typedef struct bytes {
    uint8_t *p;
    size_t len, cap;
    bool failed;
} bytes;

static void put(bytes *b, const void *src, size_t n)
{
    if (b->failed || n == 0)
        return;
    if (n > SIZE_MAX / 2 - b->len) {
        b->failed = true;
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np) {
            b->failed = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put_u32(bytes *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, x, 4);
}

static void put_u64(bytes *b, uint64_t v)
{
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}

static void put_str(bytes *b, const void *s, size_t len)
{
    put_u64(b, len);
    put(b, s, len);
}

/* ==========================================================================
 * Metadata.
 * ======================================================================== */

/* Creates an empty writer. */
tn_status tn_gguf_writer_new(tn_gguf_writer **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? TN_OK : tn__err(TN_ERR_NOMEM, "gguf writer: out of memory");
}

/* Frees the writer and its copies. NULL is a no-op. */
void tn_gguf_writer_free(tn_gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    for (size_t i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

static tn_status check_key(const tn_gguf_writer *w, const char *key)
{
    if (!w || !key || !*key)
        return tn__err(TN_ERR_INVALID, "gguf writer: %s", !w ? "NULL writer" : "empty or NULL key");
    if (strlen(key) > KEY_MAX)
        return tn__err(TN_ERR_INVALID, "gguf writer: key '%.40s...' is longer than %d bytes", key, KEY_MAX);
    return TN_OK;
}

/* Stores an encoded value under key (replacing an earlier value in place);
 * takes ownership of b->p in every case. */
static tn_status set_kv(tn_gguf_writer *w, const char *key, tn_gguf_type type, bytes *b)
{
    tn_status st = check_key(w, key);
    if (st)
        goto fail;
    if (b->failed) {
        st = tn__err(TN_ERR_NOMEM, "gguf writer: out of memory encoding key '%s'", key);
        goto fail;
    }
    if (!strcmp(key, "general.alignment")) {
        uint32_t a = type == TN_GGUF_UINT32 ? tn__gguf_rd_u32(b->p) : 0;
        if (type != TN_GGUF_UINT32 || a == 0 || (a & (a - 1))) {
            st = tn__err(TN_ERR_INVALID, "gguf writer: general.alignment must be a u32 nonzero power of two");
            goto fail;
        }
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (!strcmp(w->kv[i].key, key)) {
            free(w->kv[i].val);
            w->kv[i].type = type;
            w->kv[i].val = b->p;
            w->kv[i].len = b->len;
            return TN_OK;
        }
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
        wkv *nk = realloc(w->kv, cap * sizeof *nk);
        if (!nk) {
            st = tn__err(TN_ERR_NOMEM, "gguf writer: out of memory for key '%s'", key);
            goto fail;
        }
        w->kv = nk;
        w->cap_kv = cap;
    }
    char *k = strdup(key);
    if (!k) {
        st = tn__err(TN_ERR_NOMEM, "gguf writer: out of memory for key '%s'", key);
        goto fail;
    }
    w->kv[w->n_kv++] = (wkv){k, type, b->p, b->len};
    return TN_OK;
fail:
    free(b->p);
    return st;
}

static tn_status set_scalar(tn_gguf_writer *w, const char *key, tn_gguf_type type, uint64_t bits)
{
    bytes b = {0};
    size_t n = tn__gguf_scalar_size(type);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)(bits >> (8 * i));
        put(&b, &c, 1);
    }
    return set_kv(w, key, type, &b);
}

tn_status tn_gguf_set_u32(tn_gguf_writer *w, const char *key, uint32_t v)
{
    return set_scalar(w, key, TN_GGUF_UINT32, v);
}

tn_status tn_gguf_set_i32(tn_gguf_writer *w, const char *key, int32_t v)
{
    return set_scalar(w, key, TN_GGUF_INT32, (uint32_t)v);
}

tn_status tn_gguf_set_u64(tn_gguf_writer *w, const char *key, uint64_t v)
{
    return set_scalar(w, key, TN_GGUF_UINT64, v);
}

tn_status tn_gguf_set_f32(tn_gguf_writer *w, const char *key, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, 4);
    return set_scalar(w, key, TN_GGUF_FLOAT32, bits);
}

tn_status tn_gguf_set_bool(tn_gguf_writer *w, const char *key, bool v)
{
    return set_scalar(w, key, TN_GGUF_BOOL, v ? 1 : 0);
}

/* A NUL-terminated string value; NULL is rejected. */
tn_status tn_gguf_set_str(tn_gguf_writer *w, const char *key, const char *v)
{
    if (!v)
        return tn__err(TN_ERR_INVALID, "gguf writer: NULL string for key '%s'", key ? key : "(null)");
    bytes b = {0};
    put_str(&b, v, strlen(v));
    return set_kv(w, key, TN_GGUF_STRING, &b);
}

/* Appends n numeric elements of type et (already checked numeric). */
static tn_status put_numeric(bytes *b, const char *key, tn_gguf_type et, const void *data, uint64_t n)
{
    size_t esz = tn__gguf_scalar_size(et);
    if (n > SIZE_MAX / 2 / esz)
        return tn__err(TN_ERR_INVALID, "gguf writer: key '%s': array of %" PRIu64 " elements is too large", key,
                       n);
    if (n && !data)
        return tn__err(TN_ERR_INVALID, "gguf writer: key '%s': NULL data for %" PRIu64 " elements", key, n);
    if (et == TN_GGUF_BOOL)
        for (uint64_t i = 0; i < n; i++)
            if (((const uint8_t *)data)[i] > 1)
                return tn__err(TN_ERR_INVALID, "gguf writer: key '%s': bool element %" PRIu64 " is %u, not 0 or 1",
                               key, i, ((const uint8_t *)data)[i]);
    put_u32(b, et);
    put_u64(b, n);
    put(b, data, (size_t)n * esz);
    return TN_OK;
}

static tn_status put_strings(bytes *b, const char *key, const char *const *v, uint64_t n)
{
    if (n && !v)
        return tn__err(TN_ERR_INVALID, "gguf writer: key '%s': NULL string array", key);
    put_u32(b, TN_GGUF_STRING);
    put_u64(b, n);
    for (uint64_t i = 0; i < n; i++) {
        if (!v[i])
            return tn__err(TN_ERR_INVALID, "gguf writer: key '%s': string %" PRIu64 " is NULL", key, i);
        put_str(b, v[i], strlen(v[i]));
    }
    return TN_OK;
}

/* Numeric array (elem_type not STRING or ARRAY), copied. */
tn_status tn_gguf_set_arr(tn_gguf_writer *w, const char *key, tn_gguf_type elem_type, const void *data, uint64_t n)
{
    tn_status st = check_key(w, key);
    if (st)
        return st;
    if (!tn__gguf_scalar_size(elem_type))
        return tn__err(TN_ERR_INVALID, "gguf writer: key '%s': tn_gguf_set_arr needs a numeric element type, not %s",
                       key, tn_gguf_type_name(elem_type));
    bytes b = {0};
    if ((st = put_numeric(&b, key, elem_type, data, n))) {
        free(b.p);
        return st;
    }
    return set_kv(w, key, TN_GGUF_ARRAY, &b);
}

/* String array, copied. */
tn_status tn_gguf_set_arr_str(tn_gguf_writer *w, const char *key, const char *const *v, uint64_t n)
{
    tn_status st = check_key(w, key);
    if (st)
        return st;
    bytes b = {0};
    if ((st = put_strings(&b, key, v, n))) {
        free(b.p);
        return st;
    }
    return set_kv(w, key, TN_GGUF_ARRAY, &b);
}

/* Array of n arrays of elem_type (numeric or STRING), copied. */
tn_status tn_gguf_set_arr_arr(tn_gguf_writer *w, const char *key, tn_gguf_type elem_type, const void *const *data,
                              const uint64_t *counts, uint64_t n)
{
    tn_status st = check_key(w, key);
    if (st)
        return st;
    if (elem_type != TN_GGUF_STRING && !tn__gguf_scalar_size(elem_type))
        return tn__err(TN_ERR_INVALID, "gguf writer: key '%s': sub-arrays of %s are not supported here", key,
                       tn_gguf_type_name(elem_type));
    if (n && (!data || !counts))
        return tn__err(TN_ERR_INVALID, "gguf writer: key '%s': NULL data or counts", key);
    bytes b = {0};
    put_u32(&b, TN_GGUF_ARRAY);
    put_u64(&b, n);
    for (uint64_t j = 0; j < n && !st; j++)
        st = elem_type == TN_GGUF_STRING ? put_strings(&b, key, (const char *const *)data[j], counts[j])
                                         : put_numeric(&b, key, elem_type, data[j], counts[j]);
    if (st) {
        free(b.p);
        return st;
    }
    return set_kv(w, key, TN_GGUF_ARRAY, &b);
}

/* Re-encodes a validated value of src (any version) at off as v3. */
static void encode_from(bytes *b, const tn_gguf *src, size_t off, tn_gguf_type type)
{
    size_t sz = tn__gguf_scalar_size(type);
    size_t cs = tn__gguf_count_size(src);
    if (sz) {
        put(b, src->base + off, sz);
    } else if (type == TN_GGUF_STRING) {
        put_str(b, src->base + off + cs, (size_t)tn__gguf_rd_count(src, off));
    } else {
        tn_gguf_type et = (tn_gguf_type)tn__gguf_rd_u32(src->base + off);
        uint64_t n = tn__gguf_rd_count(src, off + 4);
        put_u32(b, et);
        put_u64(b, n);
        off += 4 + cs;
        size_t esz = tn__gguf_scalar_size(et);
        if (esz) {
            put(b, src->base + off, (size_t)n * esz);
            return;
        }
        for (uint64_t i = 0; i < n && !b->failed; i++) {
            encode_from(b, src, off, et);
            off = tn__gguf_value_end(src, off, et);
        }
    }
}

/* Copies entry i of src (any type) under the same key. */
tn_status tn_gguf_set_from(tn_gguf_writer *w, const tn_gguf *src, int64_t i)
{
    if (!src || i < 0 || i >= src->n_kv)
        return tn__err(TN_ERR_RANGE, "gguf writer: source kv index %" PRId64 " out of range", i);
    const tn__gguf_kv *kv = &src->kv[i];
    bytes b = {0};
    encode_from(&b, src, kv->val_off, kv->type);
    return set_kv(w, kv->key, kv->type, &b);
}

/* ==========================================================================
 * Tensors.
 * ======================================================================== */

static tn_status add_tensor(tn_gguf_writer *w, const char *name, tn_dtype type, int n_dims, const int64_t *ne,
                            const void *data, tn_gguf_fill_fn fill, void *ctx)
{
    if (!w || !name || !*name)
        return tn__err(TN_ERR_INVALID, "gguf writer: %s", !w ? "NULL writer" : "empty or NULL tensor name");
    if (strlen(name) >= GGML_MAX_NAME)
        return tn__err(TN_ERR_INVALID, "gguf writer: tensor name '%s' has %zu bytes, at most %d allowed", name,
                       strlen(name), GGML_MAX_NAME - 1);
    const tn_dtype_traits *tr = tn_dtype_traits_of((int)type);
    if (!tr)
        return tn__err(TN_ERR_INVALID, "gguf writer: tensor '%s': unknown type %d", name, (int)type);
    if (n_dims < 1 || n_dims > TN_GGUF_MAX_DIMS || !ne)
        return tn__err(TN_ERR_INVALID, "gguf writer: tensor '%s': n_dims %d outside 1..%d", name, n_dims,
                       TN_GGUF_MAX_DIMS);
    wtensor t = {.n_dims = n_dims, .type = type, .data = data, .fill = fill, .ctx = ctx};
    uint64_t n_el = 1, rows = 1, row;
    for (int d = 0; d < TN_GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (t.ne[d] < 0)
            return tn__err(TN_ERR_INVALID, "gguf writer: tensor '%s': ne[%d] = %" PRId64 " is negative", name, d,
                           t.ne[d]);
        if (!tn_mul_u64(n_el, (uint64_t)t.ne[d], &n_el) || n_el > INT64_MAX ||
            (d > 0 && (!tn_mul_u64(rows, (uint64_t)t.ne[d], &rows) || rows > INT64_MAX)))
            return tn__err(TN_ERR_INVALID, "gguf writer: tensor '%s': element count overflows", name);
    }
    if (t.ne[0] % tr->block_size)
        return tn__err(TN_ERR_INVALID, "gguf writer: tensor '%s': ne[0] = %" PRId64 " not a multiple of %d (%s)",
                       name, t.ne[0], tr->block_size, tr->name);
    if (!tn_mul_u64((uint64_t)(t.ne[0] / tr->block_size), tr->type_size, &row) ||
        !tn_mul_u64(row, rows, &t.nbytes) || t.nbytes > SIZE_MAX / 2)
        return tn__err(TN_ERR_INVALID, "gguf writer: tensor '%s': byte size overflows", name);
    if (!fill && !data && t.nbytes)
        return tn__err(TN_ERR_INVALID, "gguf writer: tensor '%s': NULL data", name);
    for (size_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name))
            return tn__err(TN_ERR_INVALID, "gguf writer: duplicate tensor name '%s'", name);
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 64;
        wtensor *nt = realloc(w->t, cap * sizeof *nt);
        if (!nt)
            return tn__err(TN_ERR_NOMEM, "gguf writer: out of memory for tensor '%s'", name);
        w->t = nt;
        w->cap_t = cap;
    }
    if (!(t.name = strdup(name)))
        return tn__err(TN_ERR_NOMEM, "gguf writer: out of memory for tensor '%s'", name);
    w->t[w->n_t++] = t;
    return TN_OK;
}

/* Adds a tensor with borrowed data (see gguf.h). */
tn_status tn_gguf_add_tensor(tn_gguf_writer *w, const char *name, tn_dtype type, int n_dims, const int64_t *ne,
                             const void *data)
{
    return add_tensor(w, name, type, n_dims, ne, data, NULL, NULL);
}

/* Adds a tensor whose bytes fill() produces at write time (see gguf.h). */
tn_status tn_gguf_add_tensor_fn(tn_gguf_writer *w, const char *name, tn_dtype type, int n_dims,
                                const int64_t *ne, tn_gguf_fill_fn fill, void *ctx)
{
    if (!fill)
        return tn__err(TN_ERR_INVALID, "gguf writer: tensor '%s': NULL fill callback", name ? name : "(null)");
    return add_tensor(w, name, type, n_dims, ne, NULL, fill, ctx);
}

/* ==========================================================================
 * Writing.
 * ======================================================================== */

static uint64_t align_up(uint64_t x, uint32_t a) { return (x + a - 1) / a * a; }

static tn_status write_all(FILE *f, const void *p, size_t n, const char *path, const char *what)
{
    if (n && fwrite(p, 1, n, f) != n)
        return tn__err(TN_ERR_IO, "gguf writer: %s: writing %s failed", path, what);
    return TN_OK;
}

static tn_status write_pad(FILE *f, uint64_t pos, uint32_t align, const char *path)
{
    static const uint8_t zeros[256];
    uint64_t pad = align_up(pos, align) - pos;
    while (pad) {
        size_t n = pad > sizeof zeros ? sizeof zeros : (size_t)pad;
        tn_status st = write_all(f, zeros, n, path, "padding");
        if (st)
            return st;
        pad -= n;
    }
    return TN_OK;
}

/* Writes the header, kvs and tensor infos into b; sets tensor offsets. */
static void build_header(tn_gguf_writer *w, uint32_t align, bytes *b)
{
    put(b, "GGUF", 4);
    put_u32(b, 3);
    put_u64(b, w->n_t);
    put_u64(b, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        put_str(b, w->kv[i].key, strlen(w->kv[i].key));
        put_u32(b, w->kv[i].type);
        put(b, w->kv[i].val, w->kv[i].len);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        wtensor *t = &w->t[i];
        t->offset = off;
        off += align_up(t->nbytes, align);
        put_str(b, t->name, strlen(t->name));
        put_u32(b, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++)
            put_u64(b, (uint64_t)t->ne[d]);
        put_u32(b, (uint32_t)t->type);
        put_u64(b, t->offset);
    }
}

static tn_status write_file(tn_gguf_writer *w, FILE *f, const char *path, uint32_t align)
{
    bytes hdr = {0};
    build_header(w, align, &hdr);
    if (hdr.failed) {
        free(hdr.p);
        return tn__err(TN_ERR_NOMEM, "gguf writer: out of memory building the header");
    }
    tn_status st = write_all(f, hdr.p, hdr.len, path, "the header");
    if (!st)
        st = write_pad(f, hdr.len, align, path);
    free(hdr.p);

    void *scratch = NULL;
    size_t scratch_cap = 0;
    for (size_t i = 0; i < w->n_t && !st; i++) {
        wtensor *t = &w->t[i];
        const void *src = t->data;
        if (t->fill) {
            if (t->nbytes > scratch_cap) {
                tn_free_aligned(scratch);
                scratch_cap = (size_t)t->nbytes;
                if (!(scratch = tn_alloc_aligned(scratch_cap, 64))) {
                    st = tn__err(TN_ERR_NOMEM, "gguf writer: out of memory for tensor '%s' (%" PRIu64 " bytes)",
                                 t->name, t->nbytes);
                    break;
                }
            }
            if ((st = t->fill(t->ctx, scratch, (size_t)t->nbytes))) {
                st = tn__err_prefix(st, "gguf writer: filling tensor '%s'", t->name);
                break;
            }
            src = scratch;
        }
        if (!(st = write_all(f, src, (size_t)t->nbytes, path, t->name)))
            st = write_pad(f, t->nbytes, align, path);
    }
    tn_free_aligned(scratch);
    return st;
}

/* Writes a GGUF v3 file; on failure the partial file is removed. */
tn_status tn_gguf_writer_write(tn_gguf_writer *w, const char *path)
{
    if (!w || !path)
        return tn__err(TN_ERR_INVALID, "gguf writer: NULL %s", !w ? "writer" : "path");
    uint32_t align = TN_GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, "general.alignment"))
            align = tn__gguf_rd_u32(w->kv[i].val); /* checked by set_kv */
    FILE *f = fopen(path, "wb");
    if (!f)
        return tn__err(TN_ERR_IO, "gguf writer: cannot create '%s': %s", path, strerror(errno));
    tn_status st = write_file(w, f, path, align);
    if (fclose(f) != 0 && !st)
        st = tn__err(TN_ERR_IO, "gguf writer: %s: closing failed: %s", path, strerror(errno));
    if (st)
        remove(path);
    return st;
}
