/*
 * gguf_read.c — opening, validating and querying GGUF files.
 *
 * Key idea: the file is untrusted until tn_gguf_open returns. A parser
 * walks the header with a cursor whose every read is checked against the
 * bytes left, every count is bounded by those bytes before anything is
 * allocated for it (so work and memory are bounded by the file size), and
 * every failure names the field and its byte offset. Once open, accessors
 * read through offsets that were validated and never check again; an open
 * tn_gguf is immutable, so any thread may call them concurrently.
 *
 * FILE FORMAT (all little-endian; "cnt" is a u32 in v1, a u64 in v2 and v3)
 *
 *   offset      size      field
 *   ----------  --------  ----------------------------------------------------
 *   0           4         magic "GGUF" (47 47 55 46)
 *   4           4         version: u32 1, 2 or 3 (a byte-swapped version
 *                         means a big-endian file: rejected)
 *   8           cnt       n_tensors
 *   8+c         cnt       n_kv
 *   8+2c        ...       n_kv metadata entries, each:
 *                           str    key (unique, no NUL bytes)
 *                           u32    value type (tn_gguf_type, 0..12)
 *                           value  (below)
 *   ...         ...       n_tensors tensor infos, each:
 *                           str    name (unique, no NUL bytes)
 *                           u32    n_dims, 1..4
 *                           cnt    ne[0..n_dims-1], ne[0] contiguous (a u32 in
 *                                  v1, a u64 <= INT64_MAX otherwise); ne[0] a
 *                                  multiple of the type's block size
 *                           u32    type (GGML type code = tn_dtype)
 *                           u64    offset of the bytes from the data section
 *                                  start, a multiple of the alignment
 *   ...         < align   padding (zeros) to a multiple of the alignment
 *   D           ...       data section: tensor i's bytes at D + offset_i,
 *                         row_size(type, ne[0]) * ne[1] * ne[2] * ne[3]
 *                         bytes, inside the file, no two tensors overlapping
 *
 *   str    cnt length, then length bytes (UTF-8 by convention, no NUL)
 *   value  u8 i8 bool: 1 byte (bool 0 or 1); u16 i16: 2; u32 i32 f32: 4;
 *          u64 i64 f64: 8; str; or an array:
 *            u32  element type
 *            cnt  count
 *            count elements of that type, packed (arrays of arrays nest, at
 *            most TN__GGUF_MAX_DEPTH levels here)
 *
 *   The alignment is general.alignment (a u32, nonzero power of two) when
 *   present, else 32. v2 and v3 share the little-endian encoding (v3 added
 *   big-endian files); v1 differs only in the width of cnt and of ne.
 */
#include "format/gguf_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ==========================================================================
 * Small helpers: type sizes, names, printable copies of untrusted strings.
 * ======================================================================== */

size_t tn__gguf_scalar_size(uint32_t type)
{
    switch (type) {
    case TN_GGUF_UINT8:
    case TN_GGUF_INT8:
    case TN_GGUF_BOOL:
        return 1;
    case TN_GGUF_UINT16:
    case TN_GGUF_INT16:
        return 2;
    case TN_GGUF_UINT32:
    case TN_GGUF_INT32:
    case TN_GGUF_FLOAT32:
        return 4;
    case TN_GGUF_UINT64:
    case TN_GGUF_INT64:
    case TN_GGUF_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

const char *tn_gguf_type_name(tn_gguf_type t)
{
    static const char *const names[TN_GGUF_TYPE_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64",
    };
    return (unsigned)t < TN_GGUF_TYPE_COUNT ? names[t] : "?";
}

/* Copies at most 48 bytes of an untrusted string into dst for an error
 * message, replacing control and non-ASCII bytes by '?'. */
static const char *printable(char dst[64], const uint8_t *s, uint64_t len)
{
    size_t n = len > 48 ? 48 : (size_t)len;
    for (size_t i = 0; i < n; i++)
        dst[i] = s[i] >= 0x20 && s[i] < 0x7f ? (char)s[i] : '?';
    if (len > n) {
        memcpy(dst + n, "...", 3);
        n += 3;
    }
    dst[n] = '\0';
    return dst;
}

/* ==========================================================================
 * The parser: a cursor over the untrusted bytes.
 * ======================================================================== */

typedef struct parser {
    tn_gguf *g;
    const uint8_t *p;
    size_t size;
    size_t pos;
    size_t csize;     /* width of counts and lengths: 4 (v1) or 8 */
    char field[160];  /* what is being read, for error messages */
    /* name copies are collected here, then handed to g */
    char *names;
    size_t names_len, names_cap;
} parser;

static size_t left(const parser *ps) { return ps->size - ps->pos; }

/* Formats "gguf: FIELD at offset OFF: DETAIL" as a TN_ERR_FORMAT error. */
static tn_status perr(const parser *ps, size_t off, const char *fmt, ...) TN_PRINTF(3, 4);
static tn_status perr(const parser *ps, size_t off, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return tn__err(TN_ERR_FORMAT, "gguf: %s at offset %zu: %s", ps->field, off, detail);
}

static tn_status need(const parser *ps, size_t n, const char *what)
{
    if (left(ps) < n)
        return perr(ps, ps->pos, "%s needs %zu bytes but only %zu are left in the file", what, n, left(ps));
    return TN_OK;
}

static tn_status rd_u32(parser *ps, const char *what, uint32_t *v)
{
    tn_status st = need(ps, 4, what);
    if (st)
        return st;
    *v = tn__gguf_rd_u32(ps->p + ps->pos);
    ps->pos += 4;
    return TN_OK;
}

static tn_status rd_u64(parser *ps, const char *what, uint64_t *v)
{
    tn_status st = need(ps, 8, what);
    if (st)
        return st;
    *v = tn__gguf_rd_u64(ps->p + ps->pos);
    ps->pos += 8;
    return TN_OK;
}

/* A count or length: u32 in v1, u64 otherwise. */
static tn_status rd_cnt(parser *ps, const char *what, uint64_t *v)
{
    if (ps->csize == 4) {
        uint32_t v32 = 0;
        tn_status st = rd_u32(ps, what, &v32);
        *v = v32;
        return st;
    }
    return rd_u64(ps, what, v);
}

/* Reads a string's length and checks its bytes are in the file; *off gets
 * the offset of the first byte. Advances past the string. */
static tn_status rd_str(parser *ps, const char *what, size_t *off, uint64_t *len)
{
    size_t at = ps->pos;
    tn_status st = rd_cnt(ps, what, len);
    if (st)
        return st;
    if (*len > left(ps))
        return perr(ps, at, "%s length %" PRIu64 " exceeds the %zu bytes left in the file", what, *len,
                    left(ps));
    *off = ps->pos;
    ps->pos += (size_t)*len;
    return TN_OK;
}

/* Reads a key or tensor name: a string with no NUL bytes, copied into the
 * names buffer (NUL-terminated). *name_off gets its offset there. */
static tn_status rd_name(parser *ps, const char *what, size_t *name_off, size_t *src_off, uint64_t *len)
{
    size_t at = ps->pos;
    tn_status st = rd_str(ps, what, src_off, len);
    if (st)
        return st;
    if (memchr(ps->p + *src_off, 0, (size_t)*len))
        return perr(ps, at, "%s contains a NUL byte", what);
    size_t need_cap = ps->names_len + (size_t)*len + 1;
    if (need_cap > ps->names_cap) {
        size_t cap = ps->names_cap ? ps->names_cap : 256;
        while (cap < need_cap)
            cap *= 2;
        char *nb = realloc(ps->names, cap);
        if (!nb)
            return tn__err(TN_ERR_NOMEM, "gguf: out of memory copying names (%zu bytes)", cap);
        ps->names = nb;
        ps->names_cap = cap;
    }
    memcpy(ps->names + ps->names_len, ps->p + *src_off, (size_t)*len);
    ps->names[ps->names_len + *len] = '\0';
    *name_off = ps->names_len;
    ps->names_len += (size_t)*len + 1;
    return TN_OK;
}

/* Hands the collected names over: returns the buffer (shrunk) and resets
 * the parser's, so the next section starts a fresh one. */
static char *take_names(parser *ps)
{
    char *n = ps->names;
    if (!n)
        n = calloc(1, 1);
    ps->names = NULL;
    ps->names_len = ps->names_cap = 0;
    return n;
}

/* ==========================================================================
 * Values: validation walk. Arrays nest at most TN__GGUF_MAX_DEPTH deep; each
 * element consumes at least one byte, so the walk is linear in the file.
 * ======================================================================== */

static tn_status check_bools(const parser *ps, size_t off, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if (ps->p[off + i] > 1)
            return perr(ps, off + (size_t)i, "bool value %u is neither 0 nor 1", ps->p[off + i]);
    return TN_OK;
}

/* Validates a value of the given type at the cursor and advances past it.
 * depth is the array nesting level of the value (0 at top). If elem_off is
 * non-NULL and the value is an array of strings or arrays, it is set to a
 * malloc'd table of element offsets (caller frees). */
static tn_status skip_value(parser *ps, uint32_t type, int depth, size_t **elem_off)
{
    size_t at = ps->pos;
    if (type >= TN_GGUF_TYPE_COUNT)
        return perr(ps, at, "unknown value type %" PRIu32, type);
    size_t sz = tn__gguf_scalar_size(type);
    if (sz) {
        tn_status st = need(ps, sz, tn_gguf_type_name((tn_gguf_type)type));
        if (st)
            return st;
        if (type == TN_GGUF_BOOL && (st = check_bools(ps, ps->pos, 1)))
            return st;
        ps->pos += sz;
        return TN_OK;
    }
    if (type == TN_GGUF_STRING) {
        size_t off;
        uint64_t len;
        return rd_str(ps, "string", &off, &len);
    }
    /* array */
    if (depth + 1 > TN__GGUF_MAX_DEPTH)
        return perr(ps, at, "arrays nested more than %d levels deep", TN__GGUF_MAX_DEPTH);
    uint32_t et;
    uint64_t n;
    tn_status st = rd_u32(ps, "array element type", &et);
    if (st)
        return st;
    if (et >= TN_GGUF_TYPE_COUNT)
        return perr(ps, at, "unknown array element type %" PRIu32, et);
    size_t count_at = ps->pos;
    if ((st = rd_cnt(ps, "array count", &n)))
        return st;
    size_t esz = tn__gguf_scalar_size(et);
    if (esz) {
        if (n > left(ps) / esz)
            return perr(ps, count_at, "array of %" PRIu64 " %s needs more than the %zu bytes left in the file", n,
                        tn_gguf_type_name((tn_gguf_type)et), left(ps));
        if (et == TN_GGUF_BOOL && (st = check_bools(ps, ps->pos, n)))
            return st;
        ps->pos += (size_t)(n * esz);
        return TN_OK;
    }
    /* strings take at least a length, arrays a type and a count */
    size_t min_elem = et == TN_GGUF_STRING ? ps->csize : 4 + ps->csize;
    if (n > left(ps) / min_elem)
        return perr(ps, count_at, "array of %" PRIu64 " %s cannot fit in the %zu bytes left in the file", n,
                    tn_gguf_type_name((tn_gguf_type)et), left(ps));
    size_t *offs = NULL;
    if (elem_off && n) {
        offs = malloc((size_t)n * sizeof *offs);
        if (!offs)
            return tn__err(TN_ERR_NOMEM, "gguf: out of memory for %" PRIu64 " array element offsets", n);
    }
    for (uint64_t i = 0; i < n; i++) {
        if (offs)
            offs[i] = ps->pos;
        if ((st = skip_value(ps, et, depth + 1, NULL))) {
            free(offs);
            return st;
        }
    }
    if (elem_off)
        *elem_off = offs;
    return TN_OK;
}

size_t tn__gguf_value_end(const tn_gguf *g, size_t off, tn_gguf_type type)
{
    size_t sz = tn__gguf_scalar_size(type);
    if (sz)
        return off + sz;
    size_t cs = tn__gguf_count_size(g);
    if (type == TN_GGUF_STRING)
        return off + cs + (size_t)tn__gguf_rd_count(g, off);
    tn_gguf_type et = (tn_gguf_type)tn__gguf_rd_u32(g->base + off);
    uint64_t n = tn__gguf_rd_count(g, off + 4);
    off += 4 + cs;
    size_t esz = tn__gguf_scalar_size(et);
    if (esz)
        return off + (size_t)n * esz;
    for (uint64_t i = 0; i < n; i++)
        off = tn__gguf_value_end(g, off, et);
    return off;
}

/* ==========================================================================
 * Name lookup: open addressing over FNV-1a hashes, built once at open.
 * ======================================================================== */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

/* Builds a table of n names (names[i] via stride); returns the index of a
 * duplicate's second occurrence in *dup (-1 if none). */
static tn_status hash_build(const char *const *names, size_t stride, int64_t n, int64_t **tab, size_t *cap,
                            int64_t *dup, int64_t *first)
{
    size_t c = 16;
    while (c < (size_t)n * 2)
        c *= 2;
    int64_t *t = calloc(c, sizeof *t);
    if (!t)
        return tn__err(TN_ERR_NOMEM, "gguf: out of memory for a name table of %zu slots", c);
    *dup = -1;
    for (int64_t i = 0; i < n; i++) {
        const char *s = *(const char *const *)((const char *)names + (size_t)i * stride);
        size_t h = (size_t)hash_str(s) & (c - 1);
        while (t[h]) {
            const char *o = *(const char *const *)((const char *)names + (size_t)(t[h] - 1) * stride);
            if (!strcmp(o, s)) {
                *dup = i;
                *first = t[h] - 1;
                break;
            }
            h = (h + 1) & (c - 1);
        }
        if (*dup >= 0)
            break;
        t[h] = i + 1;
    }
    *tab = t;
    *cap = c;
    return TN_OK;
}

static int64_t hash_find(const int64_t *tab, size_t cap, const char *const *names, size_t stride, const char *s)
{
    if (!tab || !s)
        return -1;
    size_t h = (size_t)hash_str(s) & (cap - 1);
    while (tab[h]) {
        const char *o = *(const char *const *)((const char *)names + (size_t)(tab[h] - 1) * stride);
        if (!strcmp(o, s))
            return tab[h] - 1;
        h = (h + 1) & (cap - 1);
    }
    return -1;
}

/* ==========================================================================
 * Header sections.
 * ======================================================================== */

static tn_status parse_header(parser *ps, uint64_t *n_tensors, uint64_t *n_kv)
{
    tn_gguf *g = ps->g;
    snprintf(ps->field, sizeof ps->field, "header magic");
    if (ps->size < 4 || memcmp(ps->p, "GGUF", 4) != 0) {
        char got[64];
        return perr(ps, 0, "expected \"GGUF\", found \"%s\" (file of %zu bytes)",
                    printable(got, ps->p, ps->size < 4 ? ps->size : 4), ps->size);
    }
    ps->pos = 4;
    snprintf(ps->field, sizeof ps->field, "header version");
    uint32_t v;
    tn_status st = rd_u32(ps, "version", &v);
    if (st)
        return st;
    if (v < 1 || v > 3) {
        uint32_t sw = __builtin_bswap32(v);
        if (sw >= 1 && sw <= 3)
            return perr(ps, 4, "version %" PRIu32 " is a big-endian file, which is not supported", sw);
        return perr(ps, 4, "unsupported version %" PRIu32 " (1, 2 and 3 are known)", v);
    }
    g->version = v;
    ps->csize = v == 1 ? 4 : 8;
    snprintf(ps->field, sizeof ps->field, "header n_tensors");
    if ((st = rd_cnt(ps, "n_tensors", n_tensors)))
        return st;
    snprintf(ps->field, sizeof ps->field, "header n_kv");
    if ((st = rd_cnt(ps, "n_kv", n_kv)))
        return st;
    /* smallest kv: key length + type + 1-byte value; smallest tensor info:
     * name length + n_dims + one dim + type + offset */
    size_t min_kv = ps->csize + 4 + 1, min_ti = ps->csize + 4 + ps->csize + 4 + 8;
    if (*n_kv > left(ps) / min_kv)
        return perr(ps, 8 + ps->csize, "%" PRIu64 " entries cannot fit in the %zu bytes left in the file", *n_kv,
                    left(ps));
    size_t after_kv = left(ps) - (size_t)*n_kv * min_kv;
    if (*n_tensors > after_kv / min_ti) {
        snprintf(ps->field, sizeof ps->field, "header n_tensors");
        return perr(ps, 8, "%" PRIu64 " tensor infos cannot fit in the %zu bytes left in the file", *n_tensors,
                    after_kv);
    }
    return TN_OK;
}

static tn_status parse_kvs(parser *ps, int64_t n_kv)
{
    tn_gguf *g = ps->g;
    g->kv = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
    if (!g->kv)
        return tn__err(TN_ERR_NOMEM, "gguf: out of memory for %" PRId64 " metadata entries", n_kv);
    size_t *name_off = malloc((n_kv ? (size_t)n_kv : 1) * sizeof *name_off);
    if (!name_off)
        return tn__err(TN_ERR_NOMEM, "gguf: out of memory for %" PRId64 " metadata entries", n_kv);
    tn_status st = TN_OK;
    for (int64_t i = 0; i < n_kv; i++) {
        tn__gguf_kv *kv = &g->kv[i];
        g->n_kv = i + 1; /* entries up to here own their elem_off */
        kv->key_off = ps->pos;
        snprintf(ps->field, sizeof ps->field, "kv %" PRId64 " key", i);
        size_t src;
        uint64_t len;
        if ((st = rd_name(ps, "key", &name_off[i], &src, &len)))
            goto out;
        char shown[64];
        snprintf(ps->field, sizeof ps->field, "kv %" PRId64 " ('%s')", i, printable(shown, ps->p + src, len));
        uint32_t type;
        size_t type_at = ps->pos;
        if ((st = rd_u32(ps, "value type", &type)))
            goto out;
        if (type >= TN_GGUF_TYPE_COUNT) {
            st = perr(ps, type_at, "unknown value type %" PRIu32, type);
            goto out;
        }
        kv->type = (tn_gguf_type)type;
        kv->val_off = ps->pos;
        if ((st = skip_value(ps, type, 0, &kv->elem_off)))
            goto out;
        if (type == TN_GGUF_STRING) {
            kv->len = tn__gguf_rd_count(g, kv->val_off);
            kv->data_off = kv->val_off + ps->csize;
        } else if (type == TN_GGUF_ARRAY) {
            kv->elem_type = (tn_gguf_type)tn__gguf_rd_u32(ps->p + kv->val_off);
            kv->n = tn__gguf_rd_count(g, kv->val_off + 4);
            kv->data_off = kv->val_off + 4 + ps->csize;
        } else {
            kv->data_off = kv->val_off;
        }
    }
    g->n_kv = n_kv;
    g->names = take_names(ps);
    if (!g->names) {
        st = tn__err(TN_ERR_NOMEM, "gguf: out of memory for key names");
        goto out;
    }
    for (int64_t i = 0; i < n_kv; i++)
        g->kv[i].key = g->names + name_off[i];
    int64_t dup = -1, first = -1;
    if ((st = hash_build(&g->kv[0].key, sizeof g->kv[0], n_kv, &g->kv_hash, &g->hash_cap_kv, &dup, &first)))
        goto out;
    if (dup >= 0) {
        char shown[64];
        snprintf(ps->field, sizeof ps->field, "kv %" PRId64 " key", dup);
        st = perr(ps, g->kv[dup].key_off, "duplicate key '%s' (also kv %" PRId64 ")",
                  printable(shown, (const uint8_t *)g->kv[dup].key, strlen(g->kv[dup].key)), first);
    }
out:
    free(name_off);
    return st;
}

static tn_status parse_alignment(parser *ps)
{
    tn_gguf *g = ps->g;
    g->alignment = TN_GGUF_DEFAULT_ALIGNMENT;
    int64_t i = tn_gguf_find_key(g, "general.alignment");
    if (i < 0)
        return TN_OK;
    const tn__gguf_kv *kv = &g->kv[i];
    snprintf(ps->field, sizeof ps->field, "kv %" PRId64 " ('general.alignment')", i);
    if (kv->type != TN_GGUF_UINT32)
        return perr(ps, kv->val_off, "type %s, expected u32", tn_gguf_type_name(kv->type));
    uint32_t a = tn__gguf_rd_u32(g->base + kv->val_off);
    if (a == 0 || (a & (a - 1)) != 0)
        return perr(ps, kv->val_off, "alignment %" PRIu32 " is not a nonzero power of two", a);
    g->alignment = a;
    return TN_OK;
}

/* Reads one tensor info (name already copied) and checks its shape, type
 * and offset alignment; ranges are checked once the data section is known. */
static tn_status parse_tensor_info(parser *ps, tn_gguf_tensor *t, size_t *off_at)
{
    size_t at = ps->pos;
    uint32_t n_dims;
    tn_status st = rd_u32(ps, "n_dims", &n_dims);
    if (st)
        return st;
    if (n_dims < 1 || n_dims > TN_GGUF_MAX_DIMS)
        return perr(ps, at, "n_dims %" PRIu32 " is outside 1..%d", n_dims, TN_GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    for (int d = 0; d < TN_GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    char *colon = strrchr(ps->field, ')');
    size_t base_len = colon ? (size_t)(colon - ps->field) + 1 : strlen(ps->field);
    snprintf(ps->field + base_len, sizeof ps->field - base_len, " dims");
    size_t dims_at = ps->pos;
    for (uint32_t d = 0; d < n_dims; d++) {
        uint64_t ne;
        if ((st = rd_cnt(ps, "dimension", &ne)))
            return st;
        if (ne > (uint64_t)INT64_MAX)
            return perr(ps, ps->pos - ps->csize, "ne[%" PRIu32 "] = %" PRIu64 " is negative as int64", d, ne);
        t->ne[d] = (int64_t)ne;
    }
    snprintf(ps->field + base_len, sizeof ps->field - base_len, " type");
    size_t type_at = ps->pos;
    uint32_t type;
    if ((st = rd_u32(ps, "type", &type)))
        return st;
    const tn_dtype_traits *tr = type < TN_DTYPE_COUNT ? tn_dtype_traits_of((int)type) : NULL;
    if (!tr)
        return perr(ps, type_at, "unknown tensor type %" PRIu32, type);
    t->type = (tn_dtype)type;
    snprintf(ps->field + base_len, sizeof ps->field - base_len, " dims");
    if (t->ne[0] % tr->block_size != 0)
        return perr(ps, dims_at, "ne[0] = %" PRId64 " is not a multiple of the %s block size %d", t->ne[0],
                    tr->name, tr->block_size);
    uint64_t n_el = 1, rows = 1, row, nbytes;
    for (int d = 0; d < TN_GGUF_MAX_DIMS; d++)
        if (!tn_mul_u64(n_el, (uint64_t)t->ne[d], &n_el) || n_el > (uint64_t)INT64_MAX)
            return perr(ps, dims_at, "element count overflows");
    for (int d = 1; d < TN_GGUF_MAX_DIMS; d++) /* separately: ne[0] == 0 hides a row overflow */
        if (!tn_mul_u64(rows, (uint64_t)t->ne[d], &rows) || rows > (uint64_t)INT64_MAX)
            return perr(ps, dims_at, "row count overflows");
    if (!tn_mul_u64((uint64_t)(t->ne[0] / tr->block_size), tr->type_size, &row) ||
        !tn_mul_u64(row, rows, &nbytes) || nbytes > SIZE_MAX)
        return perr(ps, dims_at, "byte size overflows");
    t->nbytes = nbytes;
    snprintf(ps->field + base_len, sizeof ps->field - base_len, " offset");
    *off_at = ps->pos;
    if ((st = rd_u64(ps, "offset", &t->offset)))
        return st;
    if (t->offset % ps->g->alignment != 0)
        return perr(ps, *off_at, "data offset %" PRIu64 " is not a multiple of the alignment %" PRIu32, t->offset,
                    ps->g->alignment);
    return TN_OK;
}

/* A tensor's byte range, sorted by start to find overlaps. */
typedef struct tensor_ref {
    uint64_t offset;
    uint64_t end;
    int64_t index;
} tensor_ref;

static int cmp_ref(const void *a, const void *b)
{
    const tensor_ref *x = a, *y = b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static tn_status parse_tensors(parser *ps, int64_t n_tensors)
{
    tn_gguf *g = ps->g;
    g->tensors = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *g->tensors);
    size_t *name_off = malloc((n_tensors ? (size_t)n_tensors : 1) * sizeof *name_off);
    size_t *info_off = malloc((n_tensors ? (size_t)n_tensors : 1) * sizeof *info_off);
    size_t *field_off = malloc((n_tensors ? (size_t)n_tensors : 1) * sizeof *field_off);
    tensor_ref *refs = NULL;
    tn_status st = TN_OK;
    char shown[64];
    if (!g->tensors || !name_off || !info_off || !field_off) {
        st = tn__err(TN_ERR_NOMEM, "gguf: out of memory for %" PRId64 " tensor infos", n_tensors);
        goto out;
    }
    for (int64_t i = 0; i < n_tensors; i++) {
        info_off[i] = ps->pos;
        snprintf(ps->field, sizeof ps->field, "tensor %" PRId64 " name", i);
        size_t src;
        uint64_t len;
        if ((st = rd_name(ps, "name", &name_off[i], &src, &len)))
            goto out;
        snprintf(ps->field, sizeof ps->field, "tensor %" PRId64 " ('%s')", i, printable(shown, ps->p + src, len));
        if ((st = parse_tensor_info(ps, &g->tensors[i], &field_off[i])))
            goto out;
    }
    g->n_tensors = n_tensors;
    g->tensor_names = take_names(ps);
    if (!g->tensor_names) {
        st = tn__err(TN_ERR_NOMEM, "gguf: out of memory for tensor names");
        goto out;
    }
    for (int64_t i = 0; i < n_tensors; i++)
        g->tensors[i].name = g->tensor_names + name_off[i];

    /* the data section */
    size_t infos_end = ps->pos;
    uint64_t data_off = ((uint64_t)infos_end + g->alignment - 1) / g->alignment * g->alignment;
    snprintf(ps->field, sizeof ps->field, "data section");
    if (n_tensors > 0 && data_off > ps->size) {
        st = perr(ps, infos_end, "the data section would start at %" PRIu64 ", past the end of the file (%zu bytes)",
                  data_off, ps->size);
        goto out;
    }
    g->data_offset = data_off > ps->size ? ps->size : (size_t)data_off;
    uint64_t data_size = ps->size - g->data_offset;

    int64_t dup = -1, first = -1;
    if ((st = hash_build(&g->tensors[0].name, sizeof g->tensors[0], n_tensors, &g->tensor_hash,
                         &g->hash_cap_tensor, &dup, &first)))
        goto out;
    if (dup >= 0) {
        const char *nm = g->tensors[dup].name;
        snprintf(ps->field, sizeof ps->field, "tensor %" PRId64 " name", dup);
        st = perr(ps, info_off[dup], "duplicate tensor name '%s' (also tensor %" PRId64 ")",
                  printable(shown, (const uint8_t *)nm, strlen(nm)), first);
        goto out;
    }

    refs = malloc((n_tensors ? (size_t)n_tensors : 1) * sizeof *refs);
    if (!refs) {
        st = tn__err(TN_ERR_NOMEM, "gguf: out of memory for %" PRId64 " tensor ranges", n_tensors);
        goto out;
    }
    for (int64_t i = 0; i < n_tensors; i++) {
        tn_gguf_tensor *t = &g->tensors[i];
        const char *nm = printable(shown, (const uint8_t *)t->name, strlen(t->name));
        snprintf(ps->field, sizeof ps->field, "tensor %" PRId64 " ('%s') offset", i, nm);
        if (t->offset > data_size || t->nbytes > data_size - t->offset) {
            st = perr(ps, field_off[i],
                      "bytes [%" PRIu64 ", +%" PRIu64 ") of the data section (at %zu) run past the end of the "
                      "file (%zu bytes)",
                      t->offset, t->nbytes, g->data_offset, ps->size);
            goto out;
        }
        t->data = ps->p + g->data_offset + t->offset;
        refs[i] = (tensor_ref){t->offset, t->offset + t->nbytes, i};
    }
    qsort(refs, (size_t)n_tensors, sizeof *refs, cmp_ref);
    {
        /* sorted by start: a non-empty tensor overlaps an earlier one iff it
         * starts before the furthest end seen so far */
        uint64_t max_end = 0;
        int64_t max_i = -1;
        for (int64_t k = 0; k < n_tensors; k++) {
            const tensor_ref *r = &refs[k];
            if (max_i >= 0 && r->offset < max_end && r->end > r->offset) {
                int64_t i = r->index;
                const char *nm = printable(shown, (const uint8_t *)g->tensors[i].name, strlen(g->tensors[i].name));
                char other[64];
                snprintf(ps->field, sizeof ps->field, "tensor %" PRId64 " ('%s') offset", i, nm);
                st = perr(ps, field_off[i],
                          "bytes [%" PRIu64 ", %" PRIu64 ") overlap tensor %" PRId64 " ('%s') ending at %" PRIu64,
                          r->offset, r->end, max_i,
                          printable(other, (const uint8_t *)g->tensors[max_i].name, strlen(g->tensors[max_i].name)),
                          max_end);
                goto out;
            }
            if (r->end > max_end) {
                max_end = r->end;
                max_i = r->index;
            }
        }
    }
out:
    free(refs);
    free(name_off);
    free(info_off);
    free(field_off);
    return st;
}

/* ==========================================================================
 * Opening and freeing.
 * ======================================================================== */

static tn_status parse(tn_gguf *g)
{
    parser ps = {.g = g, .p = g->base, .size = g->size};
    uint64_t n_tensors, n_kv;
    tn_status st = parse_header(&ps, &n_tensors, &n_kv);
    if (!st)
        st = parse_kvs(&ps, (int64_t)n_kv);
    if (!st)
        st = parse_alignment(&ps);
    if (!st)
        st = parse_tensors(&ps, (int64_t)n_tensors);
    free(ps.names);
    return st;
}

void tn_gguf_free(tn_gguf *g)
{
    if (!g)
        return;
    if (g->kv)
        for (int64_t i = 0; i < g->n_kv; i++)
            free(g->kv[i].elem_off);
    free(g->kv);
    free(g->tensors);
    free(g->names);
    free(g->tensor_names);
    free(g->kv_hash);
    free(g->tensor_hash);
    if (g->mapped)
        munmap((void *)g->base, g->size);
    free(g);
}

/* Parses g (base and size set); frees it on failure. */
static tn_status finish_open(tn_gguf *g, tn_gguf **out)
{
    tn_status st = parse(g);
    if (st) {
        tn_gguf_free(g);
        return st;
    }
    *out = g;
    return TN_OK;
}

/* Opens a GGUF file held in a caller's buffer; see gguf.h. */
tn_status tn_gguf_open_mem(const void *data, size_t size, tn_gguf **out)
{
    *out = NULL;
    if (!data && size)
        return tn__err(TN_ERR_INVALID, "gguf: NULL buffer of %zu bytes", size);
    tn_gguf *g = calloc(1, sizeof *g);
    if (!g)
        return tn__err(TN_ERR_NOMEM, "gguf: out of memory");
    static const uint8_t empty[1];
    g->base = data ? data : empty;
    g->size = size;
    return finish_open(g, out);
}

/* Maps a file read-only and validates it; see gguf.h. */
tn_status tn_gguf_open(const char *path, tn_gguf **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tn__err(TN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return tn__err(TN_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return tn__err(TN_ERR_IO, "%s: not a regular file", path);
    }
    if (sb.st_size == 0) {
        close(fd);
        return tn__err(TN_ERR_FORMAT, "%s: gguf: header magic at offset 0: the file is empty", path);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return tn__err(TN_ERR_IO, "%s: file too large to map", path);
    }
    size_t size = (size_t)sb.st_size;
    void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED)
        return tn__err(TN_ERR_IO, "%s: cannot map %zu bytes: %s", path, size, strerror(e));
    tn_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        munmap(m, size);
        return tn__err(TN_ERR_NOMEM, "%s: out of memory", path);
    }
    g->base = m;
    g->size = size;
    g->mapped = true;
    tn_status st = finish_open(g, out);
    if (st)
        return tn__err_prefix(st, "%s", path);
    return TN_OK;
}

bool tn_gguf_is_mapped(const tn_gguf *g) { return g && g->mapped; }

/* ==========================================================================
 * Accessors.
 * ======================================================================== */

uint32_t tn_gguf_version(const tn_gguf *g) { return g->version; }
uint32_t tn_gguf_alignment(const tn_gguf *g) { return g->alignment; }
int64_t tn_gguf_n_kv(const tn_gguf *g) { return g->n_kv; }

/* Key of entry i, or NULL if i is out of range. */
const char *tn_gguf_kv_key(const tn_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_kv ? g->kv[i].key : NULL;
}

/* Type of entry i, or TN_GGUF_TYPE_COUNT if i is out of range. */
tn_gguf_type tn_gguf_kv_type(const tn_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_kv ? g->kv[i].type : TN_GGUF_TYPE_COUNT;
}

/* Index of key, or -1 (also for a NULL key). */
int64_t tn_gguf_find_key(const tn_gguf *g, const char *key)
{
    return hash_find(g->kv_hash, g->hash_cap_kv, g->n_kv ? &g->kv[0].key : NULL, sizeof g->kv[0], key);
}

int64_t tn_gguf_n_tensors(const tn_gguf *g) { return g->n_tensors; }

/* Tensor i, or NULL if out of range. */
const tn_gguf_tensor *tn_gguf_tensor_at(const tn_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

/* Tensor by name, or NULL. */
const tn_gguf_tensor *tn_gguf_find_tensor(const tn_gguf *g, const char *name)
{
    int64_t i = hash_find(g->tensor_hash, g->hash_cap_tensor, g->n_tensors ? &g->tensors[0].name : NULL,
                          sizeof g->tensors[0], name);
    return i < 0 ? NULL : &g->tensors[i];
}

/* --- typed getters ------------------------------------------------------- */

static tn_status lookup(const tn_gguf *g, const char *key, const tn__gguf_kv **kv)
{
    int64_t i = tn_gguf_find_key(g, key);
    if (i < 0)
        return tn__err(TN_ERR_NOT_FOUND, "gguf: key '%s' not found", key ? key : "(null)");
    *kv = &g->kv[i];
    return TN_OK;
}

/* Reads an integer value as sign + magnitude-free pair: *neg set when the
 * value is negative, then *s holds it; otherwise *u holds it. */
static bool read_int(const tn_gguf *g, const tn__gguf_kv *kv, bool *neg, int64_t *s, uint64_t *u)
{
    const uint8_t *p = g->base + kv->val_off;
    *neg = false;
    switch (kv->type) {
    case TN_GGUF_UINT8: *u = p[0]; return true;
    case TN_GGUF_UINT16: *u = (uint64_t)p[0] | (uint64_t)p[1] << 8; return true;
    case TN_GGUF_UINT32: *u = tn__gguf_rd_u32(p); return true;
    case TN_GGUF_UINT64: *u = tn__gguf_rd_u64(p); return true;
    case TN_GGUF_INT8: *s = (int8_t)p[0]; break;
    case TN_GGUF_INT16: *s = (int16_t)(uint16_t)((unsigned)p[0] | (unsigned)p[1] << 8); break;
    case TN_GGUF_INT32: *s = (int32_t)tn__gguf_rd_u32(p); break;
    case TN_GGUF_INT64: *s = (int64_t)tn__gguf_rd_u64(p); break;
    default: return false;
    }
    if (*s < 0)
        *neg = true;
    else
        *u = (uint64_t)*s;
    return true;
}

/* Gets an integer that must lie in [lo, hi]. */
static tn_status get_int(const tn_gguf *g, const char *key, int64_t lo, uint64_t hi, const char *want, bool *neg,
                         int64_t *s, uint64_t *u)
{
    const tn__gguf_kv *kv = NULL;
    tn_status st = lookup(g, key, &kv);
    if (st)
        return st;
    if (!read_int(g, kv, neg, s, u))
        return tn__err(TN_ERR_FORMAT, "gguf: key '%s' at offset %zu has type %s, expected an integer", key,
                       kv->val_off, tn_gguf_type_name(kv->type));
    if (*neg ? *s < lo : *u > hi) {
        if (*neg)
            return tn__err(TN_ERR_FORMAT, "gguf: key '%s' at offset %zu: value %" PRId64 " does not fit %s", key,
                           kv->val_off, *s, want);
        return tn__err(TN_ERR_FORMAT, "gguf: key '%s' at offset %zu: value %" PRIu64 " does not fit %s", key,
                       kv->val_off, *u, want);
    }
    return TN_OK;
}

/* See gguf.h: integer getters accept any integer type whose value fits. */
tn_status tn_gguf_get_u32(const tn_gguf *g, const char *key, uint32_t *out)
{
    bool neg = false;
    int64_t s = 0;
    uint64_t u = 0;
    tn_status st = get_int(g, key, 0, UINT32_MAX, "u32", &neg, &s, &u);
    if (!st)
        *out = (uint32_t)u;
    return st;
}

tn_status tn_gguf_get_i32(const tn_gguf *g, const char *key, int32_t *out)
{
    bool neg = false;
    int64_t s = 0;
    uint64_t u = 0;
    tn_status st = get_int(g, key, INT32_MIN, INT32_MAX, "i32", &neg, &s, &u);
    if (!st)
        *out = neg ? (int32_t)s : (int32_t)u;
    return st;
}

tn_status tn_gguf_get_u64(const tn_gguf *g, const char *key, uint64_t *out)
{
    bool neg = false;
    int64_t s = 0;
    uint64_t u = 0;
    tn_status st = get_int(g, key, 0, UINT64_MAX, "u64", &neg, &s, &u);
    if (!st)
        *out = u;
    return st;
}

/* FLOAT32 as is, FLOAT64 rounded to float. */
tn_status tn_gguf_get_f32(const tn_gguf *g, const char *key, float *out)
{
    const tn__gguf_kv *kv = NULL;
    tn_status st = lookup(g, key, &kv);
    if (st)
        return st;
    const uint8_t *p = g->base + kv->val_off;
    if (kv->type == TN_GGUF_FLOAT32) {
        uint32_t b = tn__gguf_rd_u32(p);
        memcpy(out, &b, 4);
    } else if (kv->type == TN_GGUF_FLOAT64) {
        uint64_t b = tn__gguf_rd_u64(p);
        double d;
        memcpy(&d, &b, 8);
        *out = (float)d;
    } else {
        return tn__err(TN_ERR_FORMAT, "gguf: key '%s' at offset %zu has type %s, expected f32 or f64", key,
                       kv->val_off, tn_gguf_type_name(kv->type));
    }
    return TN_OK;
}

tn_status tn_gguf_get_bool(const tn_gguf *g, const char *key, bool *out)
{
    const tn__gguf_kv *kv = NULL;
    tn_status st = lookup(g, key, &kv);
    if (st)
        return st;
    if (kv->type != TN_GGUF_BOOL)
        return tn__err(TN_ERR_FORMAT, "gguf: key '%s' at offset %zu has type %s, expected bool", key, kv->val_off,
                       tn_gguf_type_name(kv->type));
    *out = g->base[kv->val_off] != 0;
    return TN_OK;
}

/* String value: pointer into the file (not NUL-terminated) and length. */
tn_status tn_gguf_get_str(const tn_gguf *g, const char *key, const char **s, size_t *len)
{
    const tn__gguf_kv *kv = NULL;
    tn_status st = lookup(g, key, &kv);
    if (st)
        return st;
    if (kv->type != TN_GGUF_STRING)
        return tn__err(TN_ERR_FORMAT, "gguf: key '%s' at offset %zu has type %s, expected str", key, kv->val_off,
                       tn_gguf_type_name(kv->type));
    *s = (const char *)g->base + kv->data_off;
    *len = (size_t)kv->len;
    return TN_OK;
}

/* Array: element type, count, and packed data for numeric element types
 * (NULL for strings and arrays). */
tn_status tn_gguf_get_arr(const tn_gguf *g, const char *key, tn_gguf_type *elem_type, uint64_t *n,
                          const void **data)
{
    const tn__gguf_kv *kv = NULL;
    tn_status st = lookup(g, key, &kv);
    if (st)
        return st;
    if (kv->type != TN_GGUF_ARRAY)
        return tn__err(TN_ERR_FORMAT, "gguf: key '%s' at offset %zu has type %s, expected arr", key, kv->val_off,
                       tn_gguf_type_name(kv->type));
    *elem_type = kv->elem_type;
    *n = kv->n;
    *data = tn__gguf_scalar_size(kv->elem_type) ? g->base + kv->data_off : NULL;
    return TN_OK;
}

static tn_status arr_elem(const tn_gguf *g, int64_t kv, uint64_t i, tn_gguf_type want, size_t *off)
{
    if (kv < 0 || kv >= g->n_kv)
        return tn__err(TN_ERR_RANGE, "gguf: kv index %" PRId64 " outside 0..%" PRId64, kv, g->n_kv - 1);
    const tn__gguf_kv *e = &g->kv[kv];
    if (e->type != TN_GGUF_ARRAY || e->elem_type != want)
        return tn__err(TN_ERR_FORMAT, "gguf: kv %" PRId64 " ('%s') is not an array of %s", kv, e->key,
                       tn_gguf_type_name(want));
    if (i >= e->n)
        return tn__err(TN_ERR_RANGE, "gguf: kv %" PRId64 " ('%s'): element %" PRIu64 " of %" PRIu64, kv, e->key,
                       i, e->n);
    *off = e->elem_off[i];
    return TN_OK;
}

/* The i-th string of a string array (not NUL-terminated). */
tn_status tn_gguf_arr_str(const tn_gguf *g, int64_t kv, uint64_t i, const char **s, size_t *len)
{
    size_t off = 0;
    tn_status st = arr_elem(g, kv, i, TN_GGUF_STRING, &off);
    if (st)
        return st;
    *len = (size_t)tn__gguf_rd_count(g, off);
    *s = (const char *)g->base + off + tn__gguf_count_size(g);
    return TN_OK;
}

/* The i-th sub-array of an array of arrays. */
tn_status tn_gguf_arr_arr(const tn_gguf *g, int64_t kv, uint64_t i, tn_gguf_type *elem_type, uint64_t *n,
                          const void **data)
{
    size_t off = 0;
    tn_status st = arr_elem(g, kv, i, TN_GGUF_ARRAY, &off);
    if (st)
        return st;
    *elem_type = (tn_gguf_type)tn__gguf_rd_u32(g->base + off);
    *n = tn__gguf_rd_count(g, off + 4);
    *data = tn__gguf_scalar_size(*elem_type) ? g->base + off + 4 + tn__gguf_count_size(g) : NULL;
    return TN_OK;
}

/* ==========================================================================
 * Formatting values for `tern info`: a bounded appender, strings quoted and
 * truncated, arrays as TYPE[COUNT] [first, elements, ...].
 * ======================================================================== */

typedef struct sbuf {
    char *buf;
    size_t cap, len; /* len counts what would have been written */
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++, b->len++)
        if (b->len + 1 < b->cap)
            b->buf[b->len] = s[i];
}

static void sb_printf(sbuf *b, const char *fmt, ...) TN_PRINTF(2, 3);
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

#define FMT_STR_MAX 48   /* bytes of a string shown */
#define FMT_ARR_TOP 8    /* elements of a top-level array shown */
#define FMT_ARR_NESTED 3 /* elements of a nested array shown */

static void fmt_string(sbuf *b, const uint8_t *s, uint64_t len)
{
    size_t n = len > FMT_STR_MAX ? FMT_STR_MAX : (size_t)len;
    while (n < len && n > 0 && (s[n] & 0xC0) == 0x80) /* do not split a UTF-8 sequence */
        n--;
    sb_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == '"' || c == '\\')
            sb_printf(b, "\\%c", c);
        else if (c == '\n')
            sb_put(b, "\\n", 2);
        else if (c == '\t')
            sb_put(b, "\\t", 2);
        else if (c < 0x20 || c == 0x7f)
            sb_printf(b, "\\x%02x", c);
        else
            sb_put(b, (const char *)&c, 1);
    }
    sb_put(b, "\"", 1);
    if (n < len)
        sb_put(b, "...", 3);
}

static void fmt_value(sbuf *b, const tn_gguf *g, size_t off, tn_gguf_type type, int depth)
{
    const uint8_t *p = g->base + off;
    uint32_t u32;
    uint64_t u64;
    float f;
    double d;
    switch (type) {
    case TN_GGUF_UINT8: sb_printf(b, "%u", p[0]); break;
    case TN_GGUF_INT8: sb_printf(b, "%d", (int8_t)p[0]); break;
    case TN_GGUF_UINT16: sb_printf(b, "%u", (unsigned)p[0] | (unsigned)p[1] << 8); break;
    case TN_GGUF_INT16: sb_printf(b, "%d", (int16_t)(uint16_t)((unsigned)p[0] | (unsigned)p[1] << 8)); break;
    case TN_GGUF_UINT32: sb_printf(b, "%" PRIu32, tn__gguf_rd_u32(p)); break;
    case TN_GGUF_INT32: sb_printf(b, "%" PRId32, (int32_t)tn__gguf_rd_u32(p)); break;
    case TN_GGUF_UINT64: sb_printf(b, "%" PRIu64, tn__gguf_rd_u64(p)); break;
    case TN_GGUF_INT64: sb_printf(b, "%" PRId64, (int64_t)tn__gguf_rd_u64(p)); break;
    case TN_GGUF_FLOAT32:
        u32 = tn__gguf_rd_u32(p);
        memcpy(&f, &u32, 4);
        sb_printf(b, "%g", (double)f);
        break;
    case TN_GGUF_FLOAT64:
        u64 = tn__gguf_rd_u64(p);
        memcpy(&d, &u64, 8);
        sb_printf(b, "%g", d);
        break;
    case TN_GGUF_BOOL: sb_printf(b, "%s", p[0] ? "true" : "false"); break;
    case TN_GGUF_STRING: fmt_string(b, p + tn__gguf_count_size(g), tn__gguf_rd_count(g, off)); break;
    case TN_GGUF_ARRAY: {
        tn_gguf_type et = (tn_gguf_type)tn__gguf_rd_u32(p);
        uint64_t n = tn__gguf_rd_count(g, off + 4);
        size_t eoff = off + 4 + tn__gguf_count_size(g);
        uint64_t show = depth == 0 ? FMT_ARR_TOP : FMT_ARR_NESTED;
        sb_printf(b, "%s[%" PRIu64 "] [", tn_gguf_type_name(et), n);
        for (uint64_t i = 0; i < n && i < show; i++) {
            if (i)
                sb_put(b, ", ", 2);
            if (b->len >= b->cap) /* nothing more would show */
                break;
            fmt_value(b, g, eoff, et, depth + 1);
            eoff = tn__gguf_value_end(g, eoff, et);
        }
        if (n > show)
            sb_put(b, ", ...", 5);
        sb_put(b, "]", 1);
        break;
    }
    default: sb_put(b, "?", 1); break;
    }
}

/* Renders entry i's value into buf (cap bytes with the NUL); an output cut
 * short ends in "...". Out-of-range i gives "?". */
char *tn_gguf_kv_format(const tn_gguf *g, int64_t i, char *buf, size_t cap)
{
    if (!buf || cap == 0)
        return buf;
    sbuf b = {buf, cap, 0};
    if (i < 0 || i >= g->n_kv)
        sb_put(&b, "?", 1);
    else
        fmt_value(&b, g, g->kv[i].val_off, g->kv[i].type, 0);
    if (b.len < cap) {
        buf[b.len] = '\0';
    } else {
        buf[cap - 1] = '\0';
        for (size_t k = cap >= 4 ? cap - 4 : 0; k < cap - 1; k++)
            buf[k] = '.';
    }
    return buf;
}
