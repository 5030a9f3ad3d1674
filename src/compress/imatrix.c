/*
 * imatrix.c — importance matrices: accumulation, llama.cpp's legacy .dat
 * file, and the calibration run (see imatrix.h).
 */
#include "compress/imatrix.h"

#include "compress/hessian.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_NAME 4096
#define MAX_COLS (1 << 28)
#define MAX_ENTRIES (1 << 24)

/* An entry is n_group groups of n_cols / n_group columns: one group for a
 * plain matrix, one per expert for a stack of experts, each with its own
 * row count (an expert sees only the tokens routed to it). */
typedef struct entry {
    char *name;
    int64_t n_cols;
    int32_t ncall;
    int32_t n_group;
    int64_t *count; /* (n_group) rows accumulated; loaded: ncall (so sum / count · ncall = the file's value) */
    int64_t last_call; /* expert entries: the call that last counted in ncall */
    double *sum;    /* (n_cols) Σ x_c²; loaded: the file's values */
    float *mean;    /* (n_cols) sum / count of the column's group, made by tn_imatrix_get */
    bool mean_ok;
} entry;

struct tn_imatrix {
    entry *e;
    int64_t n, cap;
    int32_t n_chunks;
    tn_hessian *hessian; /* borrowed: also fed by tn_imatrix_collect, or NULL */
};

tn_status tn_imatrix_new(tn_imatrix **out)
{
    *out = calloc(1, sizeof **out);
    if (!*out)
        return tn__err(TN_ERR_NOMEM, "imatrix: out of memory");
    return TN_OK;
}

void tn_imatrix_free(tn_imatrix *im)
{
    if (!im)
        return;
    for (int64_t i = 0; i < im->n; i++) {
        free(im->e[i].name);
        free(im->e[i].sum);
        free(im->e[i].count);
        free(im->e[i].mean);
    }
    free(im->e);
    free(im);
}

static entry *find(const tn_imatrix *im, const char *name)
{
    for (int64_t i = 0; i < im->n; i++)
        if (!strcmp(im->e[i].name, name))
            return &im->e[i];
    return NULL;
}

/* Appends an entry of n_cols zeros in n_group groups. */
static tn_status add_entry(tn_imatrix *im, const char *name, size_t name_len, int64_t n_cols, int32_t n_group,
                           entry **out)
{
    if (im->n == im->cap) {
        int64_t cap = im->cap ? 2 * im->cap : 64;
        entry *ne = realloc(im->e, (size_t)cap * sizeof *ne);
        if (!ne)
            return tn__err(TN_ERR_NOMEM, "imatrix: out of memory for %" PRId64 " entries", cap);
        im->e = ne;
        im->cap = cap;
    }
    entry *e = &im->e[im->n];
    memset(e, 0, sizeof *e);
    e->name = malloc(name_len + 1);
    e->sum = calloc((size_t)(n_cols ? n_cols : 1), sizeof *e->sum);
    e->count = calloc((size_t)n_group, sizeof *e->count);
    if (!e->name || !e->sum || !e->count) {
        free(e->name);
        free(e->sum);
        free(e->count);
        return tn__err(TN_ERR_NOMEM, "imatrix: out of memory for '%.*s' (%" PRId64 " columns)", (int)name_len, name,
                       n_cols);
    }
    memcpy(e->name, name, name_len);
    e->name[name_len] = 0;
    e->n_cols = n_cols;
    e->n_group = n_group;
    e->last_call = -1;
    im->n++;
    *out = e;
    return TN_OK;
}

/* Adds rows to group g of entry name (n_group groups of n_cols), creating it. */
static tn_status add_rows(tn_imatrix *im, const char *name, int32_t g, int32_t n_group, const float *x,
                          int32_t n_rows, int32_t n_cols, entry **out)
{
    entry *e = find(im, name);
    const int64_t width = (int64_t)n_cols * n_group;
    if (!e) {
        tn_status st = add_entry(im, name, strlen(name), width, n_group, &e);
        if (st != TN_OK)
            return st;
    } else if (e->n_cols != width || e->n_group != n_group) {
        return tn__err(TN_ERR_INVALID, "imatrix: %s has %" PRId64 " columns in %d group(s), a product gave %d x %d",
                       name, e->n_cols, (int)e->n_group, (int)n_group, (int)n_cols);
    }
    double *sum = e->sum + (size_t)g * (size_t)n_cols;
    for (int32_t r = 0; r < n_rows; r++) {
        const float *xr = x + (size_t)r * (size_t)n_cols;
        for (int32_t c = 0; c < n_cols; c++)
            sum[c] += (double)xr[c] * xr[c];
    }
    for (int32_t c = 0; c < n_cols; c++)
        if (!isfinite(sum[c]))
            return tn__err(TN_ERR_INVALID, "imatrix: %s: column %d is not finite", name, (int)(g * n_cols + c));
    e->count[g] += n_rows;
    e->mean_ok = false;
    *out = e;
    return TN_OK;
}

tn_status tn_imatrix_add(tn_imatrix *im, const char *name, const float *x, int32_t n_rows, int32_t n_cols)
{
    entry *e;
    tn_status st = add_rows(im, name, 0, 1, x, n_rows, n_cols, &e);
    if (st == TN_OK)
        e->ncall++;
    return st;
}

tn_status tn_imatrix_add_expert(tn_imatrix *im, const char *name, int32_t expert, int32_t n_expert, int64_t call,
                                const float *x, int32_t n_rows, int32_t n_cols)
{
    if (n_expert < 1 || expert < 0 || expert >= n_expert)
        return tn__err(TN_ERR_INVALID, "imatrix: %s: expert %d of %d", name, (int)expert, (int)n_expert);
    entry *e;
    tn_status st = add_rows(im, name, expert, n_expert, x, n_rows, n_cols, &e);
    if (st == TN_OK && e->last_call != call) {
        e->ncall++;
        e->last_call = call;
    }
    return st;
}

/* Group of column c. */
static int64_t group_of(const entry *e, int64_t c) { return c / (e->n_cols / e->n_group); }

/* The value the file stores for column c: mean · ncall. */
static float stored_value(const entry *e, int64_t c)
{
    const int64_t n = e->count[group_of(e, c)];
    if (n == e->ncall || n == 0)
        return (float)e->sum[c];
    return (float)(e->sum[c] / (double)n * (double)e->ncall);
}

/* An expert that saw no token has no statistics: llama-imatrix leaves such
 * an entry out of the file (it warns "partial data"); so do we. */
static bool complete(const entry *e)
{
    for (int32_t g = 0; g < e->n_group; g++)
        if (e->count[g] == 0 && e->n_group > 1)
            return false;
    return true;
}

static bool put_i32(FILE *f, int32_t v)
{
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)((uint32_t)v >> 24)};
    return fwrite(b, 1, 4, f) == 4;
}

static bool put_f32(FILE *f, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    return put_i32(f, (int32_t)u);
}

tn_status tn_imatrix_save(const tn_imatrix *im, const char *path, const char *dataset)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return tn__err(TN_ERR_IO, "imatrix: cannot create %s: %s", path, strerror(errno));
    int64_t n_out = 0;
    for (int64_t i = 0; i < im->n; i++) {
        if (complete(&im->e[i]))
            n_out++;
        else
            tn_log(TN_LOG_INFO, "imatrix: %s: an expert saw no token; entry left out (as llama-imatrix does)\n",
                   im->e[i].name);
    }
    bool ok = put_i32(f, (int32_t)n_out);
    for (int64_t i = 0; ok && i < im->n; i++) {
        const entry *e = &im->e[i];
        if (!complete(e))
            continue;
        const size_t len = strlen(e->name);
        ok = put_i32(f, (int32_t)len) && fwrite(e->name, 1, len, f) == len && put_i32(f, e->ncall) &&
             put_i32(f, (int32_t)e->n_cols);
        for (int64_t c = 0; ok && c < e->n_cols; c++)
            ok = put_f32(f, stored_value(e, c));
    }
    const size_t dlen = dataset ? strlen(dataset) : 0;
    ok = ok && put_i32(f, im->n_chunks) && put_i32(f, (int32_t)dlen) && (!dlen || fwrite(dataset, 1, dlen, f) == dlen);
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        unlink(path);
        return tn__err(TN_ERR_IO, "imatrix: writing %s failed", path);
    }
    return TN_OK;
}

/* Reads a little-endian i32; false at end of file. */
static bool get_i32(FILE *f, int32_t *v)
{
    unsigned char b[4];
    if (fread(b, 1, 4, f) != 4)
        return false;
    *v = (int32_t)((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24);
    return true;
}

tn_status tn_imatrix_load(const char *path, tn_imatrix **out)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return tn__err(TN_ERR_IO, "imatrix: cannot open %s: %s", path, strerror(errno));
    tn_imatrix *im = NULL;
    tn_status st = tn_imatrix_new(&im);
    char *name = NULL;
    int32_t n = 0;
    if (st != TN_OK)
        goto out;
    if (!get_i32(f, &n) || n < 0 || n > MAX_ENTRIES) {
        st = tn__err(TN_ERR_FORMAT, "imatrix: %s: bad entry count (%d)", path, (int)n);
        goto out;
    }
    name = malloc(MAX_NAME + 1);
    if (!name) {
        st = tn__err(TN_ERR_NOMEM, "imatrix: out of memory");
        goto out;
    }
    for (int32_t i = 0; i < n; i++) {
        int32_t len = 0, ncall = 0, nval = 0;
        if (!get_i32(f, &len) || len < 1 || len > MAX_NAME || fread(name, 1, (size_t)len, f) != (size_t)len) {
            st = tn__err(TN_ERR_FORMAT, "imatrix: %s: entry %d: bad or truncated name (length %d)", path, (int)i,
                         (int)len);
            goto out;
        }
        name[len] = 0;
        if (!get_i32(f, &ncall) || ncall < 0 || !get_i32(f, &nval) || nval < 0 || nval > MAX_COLS) {
            st = tn__err(TN_ERR_FORMAT, "imatrix: %s: entry %d (%s): bad or truncated ncall/nval (%d, %d)", path,
                         (int)i, name, (int)ncall, (int)nval);
            goto out;
        }
        if (find(im, name)) {
            st = tn__err(TN_ERR_FORMAT, "imatrix: %s: entry %d: '%s' appears twice", path, (int)i, name);
            goto out;
        }
        entry *e;
        if ((st = add_entry(im, name, (size_t)len, nval, 1, &e)) != TN_OK)
            goto out;
        e->ncall = ncall;
        e->count[0] = ncall;
        for (int32_t c = 0; c < nval; c++) {
            int32_t u;
            float v;
            if (!get_i32(f, &u)) {
                st = tn__err(TN_ERR_FORMAT, "imatrix: %s: entry %d (%s): truncated after %d of %d values", path,
                             (int)i, name, (int)c, (int)nval);
                goto out;
            }
            memcpy(&v, &u, 4);
            if (!isfinite(v) || v < 0) {
                st = tn__err(TN_ERR_FORMAT, "imatrix: %s: entry %d (%s): value %d is %g (want finite, >= 0)", path,
                             (int)i, name, (int)c, (double)v);
                goto out;
            }
            e->sum[c] = v;
        }
    }
    int32_t chunks = 0; /* optional trailer */
    if (get_i32(f, &chunks) && chunks >= 0)
        im->n_chunks = chunks;

out:
    free(name);
    fclose(f);
    if (st != TN_OK) {
        tn_imatrix_free(im);
        return st;
    }
    *out = im;
    return TN_OK;
}

int64_t tn_imatrix_n_entries(const tn_imatrix *im) { return im->n; }

const char *tn_imatrix_entry(const tn_imatrix *im, int64_t i, int64_t *n_cols, int32_t *ncall)
{
    if (i < 0 || i >= im->n)
        return NULL;
    if (n_cols)
        *n_cols = im->e[i].n_cols;
    if (ncall)
        *ncall = im->e[i].ncall;
    return im->e[i].name;
}

const float *tn_imatrix_get(tn_imatrix *im, const char *name, int64_t *n_cols)
{
    entry *e = find(im, name);
    *n_cols = e ? e->n_cols : 0;
    if (!e)
        return NULL;
    if (!e->mean_ok) {
        free(e->mean);
        e->mean = malloc((size_t)(e->n_cols ? e->n_cols : 1) * sizeof *e->mean);
        if (!e->mean)
            return NULL;
        for (int64_t c = 0; c < e->n_cols; c++) {
            const int64_t n = e->count[group_of(e, c)];
            e->mean[c] = n > 0 ? (float)(e->sum[c] / (double)n) : (float)e->sum[c];
        }
        e->mean_ok = true;
    }
    return e->mean;
}

int32_t tn_imatrix_n_chunks(const tn_imatrix *im) { return im->n_chunks; }

/* --- the calibration run ---------------------------------------------------------- */

typedef struct observer {
    tn_imatrix *im;
    tn_status st;
    int32_t n_expert;
    int64_t call; /* forward calls so far: an expert entry counts one call per window, as llama-imatrix */
} observer;

static void observe(void *ud, int32_t layer, const char *tensor, int32_t expert, const float *x, int32_t n_rows,
                    int32_t n_cols)
{
    observer *ob = ud;
    if (ob->st != TN_OK || n_rows == 0)
        return;
    char name[128];
    if (layer < 0)
        snprintf(name, sizeof name, "%s.weight", tensor);
    else
        snprintf(name, sizeof name, "blk.%d.%s.weight", (int)layer, tensor);
    if (expert >= 0)
        ob->st = tn_imatrix_add_expert(ob->im, name, expert, ob->n_expert, ob->call, x, n_rows, n_cols);
    else
        ob->st = tn_imatrix_add(ob->im, name, x, n_rows, n_cols);
    if (ob->st == TN_OK && expert < 0 && ob->im->hessian)
        ob->st = tn_hessian_add(ob->im->hessian, name, ob->call, x, n_rows, n_cols);
}

void tn_imatrix_set_hessian(tn_imatrix *im, tn_hessian *h) { im->hessian = h; }

tn_status tn_imatrix_collect(tn_imatrix *im, const tn_model *m, const tn_vocab *v, tn_pool *pool, const char *text,
                             size_t len, int32_t n_ctx, int32_t n_chunks, tn_imatrix_progress_fn progress,
                             void *progress_ud)
{
    if (n_ctx < 2)
        return tn__err(TN_ERR_INVALID, "imatrix: window of %d tokens is too short", (int)n_ctx);
    tn_status st = TN_OK;
    int32_t *tokens = NULL, *pos = NULL, *seq = NULL;
    bool *want = NULL;
    float *logits = NULL;
    tn_kv_cache *kv = NULL;
    tn_forward *fwd = NULL;
    size_t cap = len + 2, n = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        free(tokens);
        tokens = malloc(cap * sizeof *tokens);
        if (!tokens) {
            st = tn__err(TN_ERR_NOMEM, "imatrix: out of memory for %zu tokens", cap);
            goto out;
        }
        st = tn_tokenize(v, text, len, tn_vocab_add_bos(v), false, tokens, cap, &n);
        if (st == TN_OK)
            break;
        if (st != TN_ERR_FULL || attempt == 1) {
            tn__err_prefix(st, "imatrix: tokenizing the text");
            goto out;
        }
        cap = n;
    }
    int32_t avail = (int32_t)TN_MIN(n / (size_t)n_ctx, (size_t)INT32_MAX);
    if (avail < 1) {
        st = tn__err(TN_ERR_INVALID, "imatrix: the text has %zu tokens, fewer than one window of %d", n, (int)n_ctx);
        goto out;
    }
    if (n_chunks <= 0 || n_chunks > avail)
        n_chunks = avail;
    const int32_t n_vocab = m->hp.n_vocab;
    pos = malloc((size_t)n_ctx * sizeof *pos);
    seq = calloc((size_t)n_ctx, sizeof *seq);
    want = malloc((size_t)n_ctx * sizeof *want);
    logits = malloc((size_t)n_ctx * (size_t)n_vocab * sizeof *logits);
    if (!pos || !seq || !want || !logits) {
        st = tn__err(TN_ERR_NOMEM, "imatrix: out of memory for a window of %d", (int)n_ctx);
        goto out;
    }
    for (int32_t i = 0; i < n_ctx; i++) {
        pos[i] = i;
        want[i] = true;
    }
    if ((st = tn_kv_new(m, n_ctx, 1, &kv)) != TN_OK || (st = tn_forward_new(m, n_ctx, &fwd)) != TN_OK)
        goto out;
    observer ob = {im, TN_OK, m->hp.n_expert, 0};
    tn_forward_set_observer(fwd, observe, &ob);
    const int32_t bos = tn_vocab_bos(v);
    for (int32_t c = 0; c < n_chunks; c++) {
        int32_t *win = tokens + (size_t)c * (size_t)n_ctx;
        if (tn_vocab_add_bos(v) && bos >= 0)
            win[0] = bos;
        tn_kv_clear(kv);
        ob.call = c;
        tn_batch b = {.n_tokens = n_ctx, .token = win, .pos = pos, .seq_id = seq, .kv_slot = pos, .want_logits = want};
        if ((st = tn_forward_run(fwd, kv, pool, &b, logits)) != TN_OK) {
            tn__err_prefix(st, "imatrix: window %d", (int)c);
            goto out;
        }
        if ((st = ob.st) != TN_OK)
            goto out;
        im->n_chunks++;
        if (progress)
            progress(progress_ud, c + 1, n_chunks);
    }
out:
    free(tokens);
    free(pos);
    free(seq);
    free(want);
    free(logits);
    tn_forward_free(fwd);
    tn_kv_free(kv);
    return st;
}
