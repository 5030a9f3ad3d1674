/*
 * safetensors.c — the safetensors reader and the sharded-checkpoint set
 * (layout and rules in safetensors.h).
 *
 * Key idea: parse the JSON header with jansson, turn every entry into a
 * tn_st_tensor whose byte range has been checked against the data buffer,
 * then sort by offset and require the ranges to tile the buffer exactly:
 * that one pass rejects overlaps and holes together.
 */
#include "format/safetensors.h"
#include "kern/dtype.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* A header larger than this is treated as corrupt (the reference
 * implementation's limit is 100 MB as well). */
#define MAX_HEADER (100u << 20)

struct tn_st_file {
    char *path;
    const uint8_t *base;
    size_t size;
    bool mapped;
    int64_t n;
    tn_st_tensor *t; /* sorted by offset */
    char **names;    /* (n) owned copies */
};

struct tn_st_set {
    int n_files;
    tn_st_file **files;
    int64_t n;
    const tn_st_tensor **t; /* sorted by name */
};

static const struct {
    const char *name;
    size_t size;
} dtypes[TN_ST_DTYPE_COUNT] = {
    [TN_ST_BOOL] = {"BOOL", 1}, [TN_ST_U8] = {"U8", 1},   [TN_ST_I8] = {"I8", 1},
    [TN_ST_I16] = {"I16", 2},   [TN_ST_U16] = {"U16", 2}, [TN_ST_F16] = {"F16", 2},
    [TN_ST_BF16] = {"BF16", 2}, [TN_ST_I32] = {"I32", 4}, [TN_ST_U32] = {"U32", 4},
    [TN_ST_F32] = {"F32", 4},   [TN_ST_F64] = {"F64", 8}, [TN_ST_I64] = {"I64", 8},
    [TN_ST_U64] = {"U64", 8},   [TN_ST_F8_E4M3] = {"F8_E4M3", 1}, [TN_ST_F8_E5M2] = {"F8_E5M2", 1},
};

const char *tn_st_dtype_name(tn_st_dtype t) { return (unsigned)t < TN_ST_DTYPE_COUNT ? dtypes[t].name : "?"; }
size_t tn_st_dtype_size(tn_st_dtype t) { return (unsigned)t < TN_ST_DTYPE_COUNT ? dtypes[t].size : 0; }

/* ==========================================================================
 * One file
 * ======================================================================== */

static int cmp_offset(const void *a, const void *b)
{
    const tn_st_tensor *x = a, *y = b;
    uintptr_t px = (uintptr_t)x->data, py = (uintptr_t)y->data;
    if (px != py)
        return px < py ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* Reads a JSON integer that must be >= 0. */
static bool json_u64(json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* Parses one header entry into t (data offsets relative to the buffer). */
static tn_status parse_entry(tn_st_file *f, const char *name, json_t *e, const uint8_t *data, uint64_t data_size,
                             tn_st_tensor *t)
{
    const char *p = f->path;
    if (!json_is_object(e))
        return tn__err(TN_ERR_FORMAT, "safetensors: %s: tensor '%s': entry is not an object", p, name);
    const char *dt = json_string_value(json_object_get(e, "dtype"));
    if (!dt)
        return tn__err(TN_ERR_FORMAT, "safetensors: %s: tensor '%s': field 'dtype' missing or not a string", p, name);
    int k = 0;
    while (k < TN_ST_DTYPE_COUNT && strcmp(dtypes[k].name, dt) != 0)
        k++;
    if (k == TN_ST_DTYPE_COUNT)
        return tn__err(TN_ERR_FORMAT, "safetensors: %s: tensor '%s': unknown dtype '%.32s'", p, name, dt);
    t->dtype = (tn_st_dtype)k;

    json_t *shape = json_object_get(e, "shape");
    if (!json_is_array(shape) || json_array_size(shape) > TN_ST_MAX_DIMS)
        return tn__err(TN_ERR_FORMAT, "safetensors: %s: tensor '%s': field 'shape' is not an array of at most %d dims",
                       p, name, TN_ST_MAX_DIMS);
    t->n_dims = (int)json_array_size(shape);
    uint64_t n = 1;
    for (int d = 0; d < t->n_dims; d++) {
        uint64_t v;
        if (!json_u64(json_array_get(shape, (size_t)d), &v) || v > INT64_MAX || !tn_mul_u64(n, v, &n))
            return tn__err(TN_ERR_FORMAT, "safetensors: %s: tensor '%s': shape[%d] is not a non-negative integer or the size overflows",
                           p, name, d);
        t->shape[d] = (int64_t)v;
    }
    t->n_elems = n;
    uint64_t nbytes;
    if (!tn_mul_u64(n, dtypes[k].size, &nbytes))
        return tn__err(TN_ERR_FORMAT, "safetensors: %s: tensor '%s': byte size overflows", p, name);

    json_t *off = json_object_get(e, "data_offsets");
    uint64_t b, en;
    if (!json_is_array(off) || json_array_size(off) != 2 || !json_u64(json_array_get(off, 0), &b) ||
        !json_u64(json_array_get(off, 1), &en))
        return tn__err(TN_ERR_FORMAT, "safetensors: %s: tensor '%s': field 'data_offsets' is not two non-negative integers",
                       p, name);
    if (b > en || en > data_size)
        return tn__err(TN_ERR_FORMAT,
                       "safetensors: %s: tensor '%s': data_offsets [%llu, %llu] outside the data buffer of %llu bytes",
                       p, name, (unsigned long long)b, (unsigned long long)en, (unsigned long long)data_size);
    if (en - b != nbytes)
        return tn__err(TN_ERR_FORMAT,
                       "safetensors: %s: tensor '%s': data_offsets span %llu bytes but shape and dtype %s need %llu", p,
                       name, (unsigned long long)(en - b), dt, (unsigned long long)nbytes);
    t->nbytes = nbytes;
    t->data = data + b;
    t->file = f->path;
    return TN_OK;
}

static tn_status parse(tn_st_file *f)
{
    const char *p = f->path;
    if (f->size < 8)
        return tn__err(TN_ERR_FORMAT, "safetensors: %s: %zu bytes is shorter than the 8-byte header length", p, f->size);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | f->base[i];
    if (hl > MAX_HEADER || hl > f->size - 8)
        return tn__err(TN_ERR_FORMAT, "safetensors: %s: header length %llu does not fit the file of %zu bytes (limit %u)",
                       p, (unsigned long long)hl, f->size, MAX_HEADER);
    json_error_t je;
    json_t *root = json_loadb((const char *)f->base + 8, (size_t)hl, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return tn__err(TN_ERR_FORMAT, "safetensors: %s: header JSON at byte %d: %s", p, je.position + 8, je.text);
    tn_status s = TN_OK;
    if (!json_is_object(root)) {
        s = tn__err(TN_ERR_FORMAT, "safetensors: %s: header is not a JSON object", p);
        goto out;
    }
    size_t n = json_object_size(root);
    f->t = calloc(n ? n : 1, sizeof *f->t);
    f->names = calloc(n ? n : 1, sizeof *f->names);
    if (!f->t || !f->names) {
        s = tn__err(TN_ERR_NOMEM, "safetensors: %s: out of memory for %zu tensors", p, n);
        goto out;
    }
    const uint8_t *data = f->base + 8 + hl;
    uint64_t data_size = f->size - 8 - hl;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(val)) {
                s = tn__err(TN_ERR_FORMAT, "safetensors: %s: '__metadata__' is not an object", p);
                goto out;
            }
            continue;
        }
        tn_st_tensor *t = &f->t[f->n];
        if (!(f->names[f->n] = strdup(key))) {
            s = tn__err(TN_ERR_NOMEM, "safetensors: %s: out of memory", p);
            goto out;
        }
        t->name = f->names[f->n++];
        if ((s = parse_entry(f, t->name, val, data, data_size, t)) != TN_OK)
            goto out;
    }
    /* Sorted by offset, the ranges must tile [0, data_size) exactly. */
    qsort(f->t, (size_t)f->n, sizeof *f->t, cmp_offset);
    uint64_t at = 0;
    for (int64_t i = 0; i < f->n; i++) {
        uint64_t b = (uint64_t)((const uint8_t *)f->t[i].data - data);
        if (b < at) {
            s = tn__err(TN_ERR_FORMAT, "safetensors: %s: tensor '%s' at data offset %llu overlaps '%s' (ends at %llu)", p,
                        f->t[i].name, (unsigned long long)b, f->t[i - 1].name, (unsigned long long)at);
            goto out;
        }
        if (b > at) {
            s = tn__err(TN_ERR_FORMAT, "safetensors: %s: data bytes [%llu, %llu) belong to no tensor (before '%s')", p,
                        (unsigned long long)at, (unsigned long long)b, f->t[i].name);
            goto out;
        }
        at = b + f->t[i].nbytes;
    }
    if (at != data_size)
        s = tn__err(TN_ERR_FORMAT, "safetensors: %s: data bytes [%llu, %llu) at the end belong to no tensor", p,
                    (unsigned long long)at, (unsigned long long)data_size);
out:
    json_decref(root);
    return s;
}

static tn_status file_new(const char *label, tn_st_file **out)
{
    tn_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(label))) {
        free(f);
        return tn__err(TN_ERR_NOMEM, "safetensors: out of memory");
    }
    *out = f;
    return TN_OK;
}

tn_status tn_st_open_mem(const void *data, size_t size, const char *label, tn_st_file **out)
{
    *out = NULL;
    tn_st_file *f = NULL;
    tn_status s = file_new(label ? label : "<memory>", &f);
    if (s != TN_OK)
        return s;
    f->base = data;
    f->size = size;
    if ((s = parse(f)) != TN_OK) {
        tn_st_close(f);
        return s;
    }
    *out = f;
    return TN_OK;
}

tn_status tn_st_open(const char *path, tn_st_file **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tn__err(TN_ERR_IO, "safetensors: cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return tn__err(TN_ERR_IO, "safetensors: %s is not a regular file", path);
    }
    tn_st_file *f = NULL;
    tn_status s = file_new(path, &f);
    if (s != TN_OK) {
        close(fd);
        return s;
    }
    f->size = (size_t)st.st_size;
    if (f->size > 0) {
        void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            close(fd);
            s = tn__err(TN_ERR_IO, "safetensors: cannot map %s: %s", path, strerror(errno));
            tn_st_close(f);
            return s;
        }
        f->base = m;
        f->mapped = true;
    } else {
        f->base = (const uint8_t *)"";
    }
    close(fd);
    if ((s = parse(f)) != TN_OK) {
        tn_st_close(f);
        return s;
    }
    *out = f;
    return TN_OK;
}

void tn_st_close(tn_st_file *f)
{
    if (!f)
        return;
    if (f->mapped)
        munmap((void *)f->base, f->size);
    for (int64_t i = 0; i < f->n; i++)
        free(f->names[i]);
    free(f->names);
    free(f->t);
    free(f->path);
    free(f);
}

int64_t tn_st_n_tensors(const tn_st_file *f) { return f->n; }
const tn_st_tensor *tn_st_tensor_at(const tn_st_file *f, int64_t i) { return i >= 0 && i < f->n ? &f->t[i] : NULL; }

const tn_st_tensor *tn_st_find(const tn_st_file *f, const char *name)
{
    for (int64_t i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name))
            return &f->t[i];
    return NULL;
}

/* ==========================================================================
 * Sets (a checkpoint directory)
 * ======================================================================== */

static int cmp_name(const void *a, const void *b)
{
    return strcmp((*(const tn_st_tensor *const *)a)->name, (*(const tn_st_tensor *const *)b)->name);
}

static tn_status set_add(tn_st_set *s, const char *path)
{
    tn_st_file **nf = realloc(s->files, (size_t)(s->n_files + 1) * sizeof *nf);
    if (!nf)
        return tn__err(TN_ERR_NOMEM, "safetensors: out of memory");
    s->files = nf;
    tn_status st = tn_st_open(path, &s->files[s->n_files]);
    if (st != TN_OK)
        return st;
    s->n_files++;
    return TN_OK;
}

/* Opens the shards named by the index file and checks it against them. */
static tn_status set_open_index(tn_st_set *s, const char *dir, const char *index)
{
    json_error_t je;
    json_t *root = json_load_file(index, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return tn__err(TN_ERR_FORMAT, "safetensors: %s:%d:%d: %s", index, je.line, je.column, je.text);
    tn_status st = TN_OK;
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        st = tn__err(TN_ERR_FORMAT, "safetensors: %s: field 'weight_map' missing or not an object", index);
        goto out;
    }
    const char *key;
    json_t *val;
    /* Open each distinct shard once, in order of first mention. */
    json_object_foreach(wm, key, val) {
        const char *shard = json_string_value(val);
        if (!shard || !shard[0] || strchr(shard, '/') || !strcmp(shard, "..")) {
            st = tn__err(TN_ERR_FORMAT, "safetensors: %s: weight_map['%s'] is not a file name in the directory", index,
                         key);
            goto out;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, shard);
        bool seen = false;
        for (int i = 0; i < s->n_files && !seen; i++)
            seen = !strcmp(s->files[i]->path, path);
        if (!seen && (st = set_add(s, path)) != TN_OK)
            goto out;
    }
    /* Every mapped tensor is in its shard; every shard tensor is mapped to its shard. */
    json_object_foreach(wm, key, val) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, json_string_value(val));
        for (int i = 0; i < s->n_files; i++)
            if (!strcmp(s->files[i]->path, path) && !tn_st_find(s->files[i], key)) {
                st = tn__err(TN_ERR_FORMAT, "safetensors: %s: weight_map puts tensor '%s' in %s, which lacks it", index,
                             key, path);
                goto out;
            }
    }
    for (int i = 0; i < s->n_files; i++)
        for (int64_t j = 0; j < s->files[i]->n; j++) {
            const char *name = s->files[i]->t[j].name;
            const char *shard = json_string_value(json_object_get(wm, name));
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, shard ? shard : "");
            if (!shard || strcmp(path, s->files[i]->path) != 0) {
                st = tn__err(TN_ERR_FORMAT, "safetensors: %s: tensor '%s' of %s is not in weight_map for that file",
                             index, name, s->files[i]->path);
                goto out;
            }
        }
out:
    json_decref(root);
    return st;
}

tn_status tn_st_set_open(const char *dir, tn_st_set **out)
{
    *out = NULL;
    tn_st_set *s = calloc(1, sizeof *s);
    if (!s)
        return tn__err(TN_ERR_NOMEM, "safetensors: out of memory");
    char index[4096], single[4096];
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
    snprintf(single, sizeof single, "%s/model.safetensors", dir);
    tn_status st;
    if (access(index, F_OK) == 0)
        st = set_open_index(s, dir, index);
    else if (access(single, F_OK) == 0)
        st = set_add(s, single);
    else
        st = tn__err(TN_ERR_IO, "safetensors: %s has neither model.safetensors nor model.safetensors.index.json", dir);
    if (st != TN_OK)
        goto err;
    for (int i = 0; i < s->n_files; i++)
        s->n += s->files[i]->n;
    s->t = malloc((size_t)(s->n ? s->n : 1) * sizeof *s->t);
    if (!s->t) {
        st = tn__err(TN_ERR_NOMEM, "safetensors: out of memory");
        goto err;
    }
    int64_t k = 0;
    for (int i = 0; i < s->n_files; i++)
        for (int64_t j = 0; j < s->files[i]->n; j++)
            s->t[k++] = &s->files[i]->t[j];
    qsort(s->t, (size_t)s->n, sizeof *s->t, cmp_name);
    for (int64_t i = 1; i < s->n; i++)
        if (!strcmp(s->t[i]->name, s->t[i - 1]->name)) {
            st = tn__err(TN_ERR_FORMAT, "safetensors: tensor '%s' is in both %s and %s", s->t[i]->name,
                         s->t[i - 1]->file, s->t[i]->file);
            goto err;
        }
    *out = s;
    return TN_OK;
err:
    tn_st_set_free(s);
    return st;
}

void tn_st_set_free(tn_st_set *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n_files; i++)
        tn_st_close(s->files[i]);
    free(s->files);
    free(s->t);
    free(s);
}

int64_t tn_st_set_n_tensors(const tn_st_set *s) { return s->n; }
const tn_st_tensor *tn_st_set_tensor_at(const tn_st_set *s, int64_t i) { return i >= 0 && i < s->n ? s->t[i] : NULL; }

const tn_st_tensor *tn_st_set_find(const tn_st_set *s, const char *name)
{
    int64_t lo = 0, hi = s->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->t[mid]->name, name);
        if (c == 0)
            return s->t[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ==========================================================================
 * Element access
 * ======================================================================== */

tn_status tn_st_read_f32(const tn_st_tensor *t, uint64_t i0, uint64_t n, float *dst)
{
    if (i0 > t->n_elems || n > t->n_elems - i0)
        return tn__err(TN_ERR_RANGE, "safetensors: %s: tensor '%s': elements [%llu, +%llu) out of %llu", t->file,
                       t->name, (unsigned long long)i0, (unsigned long long)n, (unsigned long long)t->n_elems);
    const uint8_t *p = (const uint8_t *)t->data + i0 * tn_st_dtype_size(t->dtype);
    switch (t->dtype) {
    case TN_ST_F32:
        memcpy(dst, p, n * 4);
        return TN_OK;
    case TN_ST_F16:
        for (uint64_t i = 0; i < n; i++)
            dst[i] = tn_fp16_to_fp32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        return TN_OK;
    case TN_ST_BF16:
        for (uint64_t i = 0; i < n; i++)
            dst[i] = tn_bf16_to_fp32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        return TN_OK;
    case TN_ST_F64:
        for (uint64_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        return TN_OK;
    default:
        return tn__err(TN_ERR_UNSUPPORTED, "safetensors: %s: tensor '%s' has dtype %s; weights must be F32, F16, BF16 or F64",
                       t->file, t->name, tn_st_dtype_name(t->dtype));
    }
}
