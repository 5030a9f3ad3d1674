/*
 * hessian.c — accumulation, the GGUF file and its lookup (see hessian.h).
 *
 * HOW IT WORKS: each entry keeps the upper triangle of Σ x xᵀ in double.
 * A call's rows are first transposed to column-major double (n_cols,
 * n_rows) so that every element is a contiguous dot product over the rows,
 * computed 4 × 4 elements at a time (16 independent sums: the loop is not
 * bound by one addition chain); the save mirrors the triangle and divides
 * by the row count.
 */
#include "compress/hessian.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct hentry {
    char name[160];
    int64_t n;            /* input columns */
    uint64_t rows;        /* tokens accumulated */
    double *s;            /* (n, n) upper triangle of Σ x xᵀ (row i, columns ≥ i) */
    const float *last_x;  /* rows last added and their call: a shared input is counted once */
    int64_t last_call;
    float *out;           /* (n, n) the saved matrix, made by tn_hessian_save */
} hentry;

struct tn_hessian {
    hentry *e;
    int64_t n, cap;
    double *xt;           /* (cap_xt) transposed rows */
    size_t cap_xt;
};

static bool starts_blk(const char *s, const char **rest, int *layer)
{
    int n = 0;
    if (sscanf(s, "blk.%d.%n", layer, &n) != 1 || n == 0)
        return false;
    *rest = s + n;
    return true;
}

bool tn_hessian_name(const char *wname, bool tied, char *out, size_t cap)
{
    size_t len = strlen(wname);
    if (len < 8 || strcmp(wname + len - 7, ".weight") != 0 || strstr(wname, "_exps") || strstr(wname, "ffn_gate_inp"))
        return false;
    if (!strcmp(wname, "token_embd.weight")) {
        if (!tied)
            return false;
        return (size_t)snprintf(out, cap, "output.hessian") < cap;
    }
    const char *rest;
    int layer;
    const char *shared = NULL;
    if (starts_blk(wname, &rest, &layer)) {
        if (!strcmp(rest, "attn_q.weight") || !strcmp(rest, "attn_k.weight") || !strcmp(rest, "attn_v.weight"))
            shared = "attn_qkv";
        else if (!strcmp(rest, "ffn_gate.weight") || !strcmp(rest, "ffn_up.weight"))
            shared = "ffn_gate_up";
        else if (!strcmp(rest, "ffn_gate_shexp.weight") || !strcmp(rest, "ffn_up_shexp.weight"))
            shared = "ffn_gate_up_shexp";
        if (shared)
            return (size_t)snprintf(out, cap, "blk.%d.%s.hessian", layer, shared) < cap;
    }
    return (size_t)snprintf(out, cap, "%.*s.hessian", (int)(len - 7), wname) < cap;
}

tn_status tn_hessian_new(tn_hessian **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? TN_OK : tn__err(TN_ERR_NOMEM, "hessian: out of memory");
}

void tn_hessian_free(tn_hessian *h)
{
    if (!h)
        return;
    for (int64_t i = 0; i < h->n; i++) {
        free(h->e[i].s);
        free(h->e[i].out);
    }
    free(h->e);
    free(h->xt);
    free(h);
}

int64_t tn_hessian_n_entries(const tn_hessian *h) { return h->n; }

static hentry *find_or_add(tn_hessian *h, const char *name, int64_t n)
{
    for (int64_t i = 0; i < h->n; i++)
        if (!strcmp(h->e[i].name, name))
            return &h->e[i];
    if (h->n == h->cap) {
        int64_t cap = h->cap ? 2 * h->cap : 16;
        hentry *e = realloc(h->e, (size_t)cap * sizeof *e);
        if (!e)
            return NULL;
        h->e = e;
        h->cap = cap;
    }
    hentry *e = &h->e[h->n];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->n = n;
    e->last_call = -1;
    e->s = calloc((size_t)n * (size_t)n, sizeof *e->s);
    if (!e->s)
        return NULL;
    h->n++;
    return e;
}

tn_status tn_hessian_add(tn_hessian *h, const char *wname, int64_t call, const float *x, int32_t n_rows,
                         int32_t n_cols)
{
    char name[160];
    if (n_rows <= 0 || !tn_hessian_name(wname, false, name, sizeof name))
        return TN_OK;
    if (n_cols <= 0 || n_cols > TN_HESSIAN_MAX_COLS)
        return tn__err(TN_ERR_INVALID,
                       "hessian: %s: input of %d columns (the limit is %d: n_in² doubles per input)", wname,
                       (int)n_cols, TN_HESSIAN_MAX_COLS);
    hentry *e = find_or_add(h, name, n_cols);
    if (!e)
        return tn__err(TN_ERR_NOMEM, "hessian: out of memory for %s (%d x %d doubles)", name, (int)n_cols,
                       (int)n_cols);
    if (e->n != n_cols)
        return tn__err(TN_ERR_INVALID, "hessian: %s: input of %d columns, %s had %" PRId64, wname, (int)n_cols, name,
                       e->n);
    if (e->last_x == x && e->last_call == call)
        return TN_OK; /* q/k/v (gate/up) share these rows */
    const size_t need = (size_t)n_rows * (size_t)n_cols;
    if (need > h->cap_xt) {
        double *t = realloc(h->xt, need * sizeof *t);
        if (!t)
            return tn__err(TN_ERR_NOMEM, "hessian: out of memory for %d rows of %d", (int)n_rows, (int)n_cols);
        h->xt = t;
        h->cap_xt = need;
    }
    for (int32_t r = 0; r < n_rows; r++)
        for (int32_t c = 0; c < n_cols; c++) {
            const float v = x[(size_t)r * n_cols + c];
            if (!isfinite(v))
                return tn__err(TN_ERR_INVALID, "hessian: %s: input row %d column %d is not finite", wname, (int)r,
                               (int)c);
            h->xt[(size_t)c * n_rows + r] = v;
        }
    /* upper triangle in 4 × 4 tiles: 16 independent sums per pass over the rows */
    for (int32_t i0 = 0; i0 < n_cols; i0 += 4) {
        const int32_t ni = n_cols - i0 < 4 ? n_cols - i0 : 4;
        for (int32_t j0 = i0; j0 < n_cols; j0 += 4) {
            const int32_t nj = n_cols - j0 < 4 ? n_cols - j0 : 4;
            if (ni == 4 && nj == 4) {
                double acc[4][4] = {{0}};
                const double *xi = h->xt + (size_t)i0 * n_rows, *xj = h->xt + (size_t)j0 * n_rows;
                for (int32_t r = 0; r < n_rows; r++)
                    for (int a = 0; a < 4; a++)
                        for (int b = 0; b < 4; b++)
                            acc[a][b] += xi[(size_t)a * n_rows + r] * xj[(size_t)b * n_rows + r];
                for (int a = 0; a < 4; a++)
                    for (int b = 0; b < 4; b++)
                        if (j0 + b >= i0 + a)
                            e->s[(size_t)(i0 + a) * n_cols + j0 + b] += acc[a][b];
            } else { /* the ragged edge */
                for (int32_t a = 0; a < ni; a++)
                    for (int32_t b = 0; b < nj; b++) {
                        if (j0 + b < i0 + a)
                            continue;
                        const double *xi = h->xt + (size_t)(i0 + a) * n_rows, *xj = h->xt + (size_t)(j0 + b) * n_rows;
                        double acc = 0;
                        for (int32_t r = 0; r < n_rows; r++)
                            acc += xi[r] * xj[r];
                        e->s[(size_t)(i0 + a) * n_cols + j0 + b] += acc;
                    }
            }
        }
    }
    e->rows += (uint64_t)n_rows;
    e->last_x = x;
    e->last_call = call;
    return TN_OK;
}

tn_status tn_hessian_save(const tn_hessian *hc, const char *path, const char *dataset, int32_t chunks)
{
    tn_hessian *h = (tn_hessian *)hc; /* the F32 copies are cached in the entries */
    tn_gguf_writer *w = NULL;
    tn_status st = tn_gguf_writer_new(&w);
    if (st != TN_OK)
        return st;
    if ((st = tn_gguf_set_str(w, "general.type", "hessian")) != TN_OK ||
        (st = tn_gguf_set_u32(w, "hessian.version", 1)) != TN_OK ||
        (dataset && (st = tn_gguf_set_str(w, "hessian.dataset", dataset)) != TN_OK) ||
        (st = tn_gguf_set_i32(w, "hessian.chunks", chunks)) != TN_OK)
        goto out;
    for (int64_t k = 0; k < h->n; k++) {
        hentry *e = &h->e[k];
        const int64_t n = e->n;
        free(e->out);
        e->out = malloc((size_t)n * (size_t)n * sizeof *e->out);
        if (!e->out) {
            st = tn__err(TN_ERR_NOMEM, "hessian: out of memory writing %s", e->name);
            goto out;
        }
        const double inv = e->rows ? 1.0 / (double)e->rows : 0.0;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = i; j < n; j++) {
                const float v = (float)(e->s[i * n + j] * inv);
                e->out[i * n + j] = v;
                e->out[j * n + i] = v;
            }
        char key[200];
        snprintf(key, sizeof key, "%s.n_tokens", e->name);
        const int64_t ne[2] = {n, n};
        if ((st = tn_gguf_set_u64(w, key, e->rows)) != TN_OK ||
            (st = tn_gguf_add_tensor(w, e->name, TN_DTYPE_F32, 2, ne, e->out)) != TN_OK)
            goto out;
    }
    st = tn_gguf_writer_write(w, path);
    if (st != TN_OK)
        tn__err_prefix(st, "hessian: writing %s", path);
out:
    tn_gguf_writer_free(w);
    return st;
}

tn_status tn_hessian_check_file(const tn_gguf *g, const char *path)
{
    const char *s;
    size_t len;
    if (tn_gguf_get_str(g, "general.type", &s, &len) != TN_OK || len != 7 || memcmp(s, "hessian", 7) != 0) {
        tn__err_clear();
        return tn__err(TN_ERR_FORMAT, "hessian: %s is not a hessian file (general.type is not \"hessian\"; make one "
                       "with tern imatrix --hessian)", path);
    }
    return TN_OK;
}

tn_status tn_hessian_lookup(const tn_gguf *g, const char *path, const char *wname, bool tied, int64_t n_in,
                            const float **H)
{
    *H = NULL;
    char name[160];
    if (!tn_hessian_name(wname, tied, name, sizeof name))
        return TN_OK;
    const tn_gguf_tensor *t = tn_gguf_find_tensor(g, name);
    if (!t) {
        tn__err_clear();
        return tn__err(TN_ERR_FORMAT, "hessian: %s has no tensor %s for weight %s (made for another model?)", path,
                       name, wname);
    }
    if (t->type != TN_DTYPE_F32 || t->ne[0] != n_in || t->ne[1] != n_in || t->ne[2] != 1 || t->ne[3] != 1)
        return tn__err(TN_ERR_FORMAT,
                       "hessian: %s: tensor %s is %s [%" PRId64 ", %" PRId64 ", %" PRId64 "], weight %s wants F32 [%" PRId64
                       ", %" PRId64 "]",
                       path, name, tn_dtype_traits_of(t->type)->name, t->ne[0], t->ne[1], t->ne[2], wname, n_in, n_in);
    const float *h = t->data;
    for (int64_t i = 0; i < n_in * n_in; i++)
        if (!isfinite(h[i]))
            return tn__err(TN_ERR_FORMAT, "hessian: %s: tensor %s element (%" PRId64 ", %" PRId64 ") is not finite",
                           path, name, i / n_in, i % n_in);
    for (int64_t i = 0; i < n_in; i++)
        if (h[i * n_in + i] < 0)
            return tn__err(TN_ERR_FORMAT, "hessian: %s: tensor %s diagonal %" PRId64 " is negative", path, name, i);
    *H = h;
    return TN_OK;
}
