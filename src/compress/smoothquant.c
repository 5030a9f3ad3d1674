/*
 * smoothquant.c — calibration of the migration scales and the W8A8 writer
 * (the essay is in smoothquant.h).
 *
 * HOW IT WORKS
 *
 * 1. Calibration: the text is tokenized and run window by window through
 *    the forward pass with an observer on the inputs of attn_q (= the
 *    output of attn_norm, shared by q/k/v) and ffn_gate (= ffn_norm's, for
 *    gate/up); per layer and input channel the observer keeps max |x|.
 * 2. Scales: per layer, max |W_j| over the columns of the matrices that
 *    read the same input, then s_j = max|X_j|^α / max|W_j|^(1-α).
 * 3. Writing: every tensor of IN is copied, except the seven matrices of
 *    each layer (W8A8, columns times s where a norm precedes) and the two
 *    norm weights (divided by s). Tensors are produced at write time, one
 *    at a time, so memory holds one dequantized row, not the model.
 */
#include "compress/smoothquant.h"
#include "kern/hadamard.h"
#include "kern/w8a8.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==========================================================================
 * Calibration
 * ======================================================================== */

typedef struct calib {
    int32_t n_embd, n_ff, q_dim;
    float *amax_attn; /* (n_layer, n_embd) input of q/k/v */
    float *amax_ffn;  /* (n_layer, n_embd) input of gate/up */
    float *amax_down; /* (n_layer, n_ff) input of ffn_down */
    float *amax_o;    /* (n_layer, q_dim) input of attn_output */
} calib;

static void observe(void *ud, int32_t layer, const char *tensor, int32_t expert, const float *x, int32_t n_rows,
                    int32_t n_cols)
{
    calib *c = ud;
    float *dst = NULL;
    (void)expert; /* dense models only: every name below is a plain matrix */
    if (layer >= 0 && n_cols == c->n_embd && !strcmp(tensor, "attn_q"))
        dst = c->amax_attn + (size_t)layer * c->n_embd;
    else if (layer >= 0 && n_cols == c->n_embd && !strcmp(tensor, "ffn_gate"))
        dst = c->amax_ffn + (size_t)layer * c->n_embd;
    else if (layer >= 0 && n_cols == c->n_ff && !strcmp(tensor, "ffn_down"))
        dst = c->amax_down + (size_t)layer * c->n_ff;
    else if (layer >= 0 && n_cols == c->q_dim && !strcmp(tensor, "attn_output"))
        dst = c->amax_o + (size_t)layer * c->q_dim;
    if (!dst)
        return;
    for (int32_t i = 0; i < n_rows; i++)
        for (int32_t j = 0; j < n_cols; j++)
            dst[j] = fmaxf(dst[j], fabsf(x[(size_t)i * n_cols + j]));
}

static tn_status calibrate(const tn_model *m, tn_pool *pool, const tn_w8a8_opts *o, calib *c, int32_t *n_done)
{
    tn_vocab *v = NULL;
    tn_kv_cache *kv = NULL;
    tn_forward *fwd = NULL;
    int32_t *tokens = NULL, *pos = NULL, *seq = NULL;
    bool *want = NULL;
    float *logits = NULL;
    tn_status st = tn_vocab_from_gguf(m->gguf, &v);
    if (st != TN_OK)
        return tn__err_prefix(st, "w8a8: the model's vocabulary");
    const int32_t n_ctx = o->n_ctx > 0 ? o->n_ctx : TN_MIN(256, m->hp.n_ctx_train);
    size_t cap = o->calib_len + 16, n = 0;
    tokens = malloc(cap * sizeof *tokens);
    if (!tokens) {
        st = tn__err(TN_ERR_NOMEM, "w8a8: out of memory for %zu tokens", cap);
        goto out;
    }
    if ((st = tn_tokenize(v, o->calib_text, o->calib_len, tn_vocab_add_bos(v), false, tokens, cap, &n)) != TN_OK) {
        tn__err_prefix(st, "w8a8: tokenizing the calibration text");
        goto out;
    }
    int32_t n_chunks = (int32_t)TN_MIN(n / (size_t)n_ctx, (size_t)64);
    if (o->n_chunks > 0)
        n_chunks = TN_MIN(n_chunks, o->n_chunks);
    if (n_chunks < 1) {
        st = tn__err(TN_ERR_INVALID, "w8a8: the calibration text has %zu tokens, fewer than one window of %d", n,
                     (int)n_ctx);
        goto out;
    }
    pos = malloc((size_t)n_ctx * sizeof *pos);
    seq = calloc((size_t)n_ctx, sizeof *seq);
    want = malloc((size_t)n_ctx * sizeof *want);
    logits = malloc((size_t)n_ctx * (size_t)m->hp.n_vocab * sizeof *logits);
    if (!pos || !seq || !want || !logits) {
        st = tn__err(TN_ERR_NOMEM, "w8a8: out of memory for a window of %d", (int)n_ctx);
        goto out;
    }
    for (int32_t i = 0; i < n_ctx; i++) {
        pos[i] = i;
        want[i] = true; /* every row reaches the last layer's FFN */
    }
    if ((st = tn_kv_new(m, n_ctx, 1, &kv)) != TN_OK || (st = tn_forward_new(m, n_ctx, &fwd)) != TN_OK)
        goto out;
    tn_forward_set_observer(fwd, observe, c);
    const int32_t bos = tn_vocab_bos(v);
    for (int32_t k = 0; k < n_chunks; k++) {
        int32_t *win = tokens + (size_t)k * (size_t)n_ctx;
        if (tn_vocab_add_bos(v) && bos >= 0)
            win[0] = bos;
        tn_kv_clear(kv);
        tn_batch b = {.n_tokens = n_ctx, .token = win, .pos = pos, .seq_id = seq, .kv_slot = pos, .want_logits = want};
        if ((st = tn_forward_run(fwd, kv, pool, &b, logits)) != TN_OK) {
            tn__err_prefix(st, "w8a8: calibration window %d", (int)k);
            goto out;
        }
    }
    *n_done = n_chunks;
out:
    tn_forward_free(fwd);
    tn_kv_free(kv);
    free(tokens);
    free(pos);
    free(seq);
    free(want);
    free(logits);
    tn_vocab_free(v);
    return st;
}

void tn_smoothquant_scales(const float *amax, const float *wmax, int64_t n, float alpha, float *s)
{
    for (int64_t j = 0; j < n; j++) {
        if (!(amax[j] > 0.0f) || !(wmax[j] > 0.0f)) {
            s[j] = 1.0f;
            continue;
        }
        double v = pow((double)amax[j], alpha) / pow((double)wmax[j], 1.0 - alpha);
        s[j] = (float)(v < 1e-5 ? 1e-5 : v > 1e5 ? 1e5 : v);
    }
}

/* wmax[j] = max(wmax[j], max_r |W[r][j]|) over the rows of w. */
static tn_status column_max(const tn_weight *w, float *row, float *wmax)
{
    const int64_t n_in = w->ne[0];
    for (int64_t r = 0; r < w->ne[1]; r++) {
        tn_get_row(w->data, w->type, n_in, r, row); /* also the loader's x16 layout */
        for (int64_t j = 0; j < n_in; j++)
            wmax[j] = fmaxf(wmax[j], fabsf(row[j]));
    }
    return TN_OK;
}

/*
 * THE FOUR MIGRATIONS OF A LAYER
 *
 *   input of       s over          s goes into              1/s goes into
 *   q, k, v        n_embd          their columns            attn_norm weight
 *   gate, up       n_embd          their columns            ffn_norm weight
 *   ffn_down       n_ff            its columns              ffn_up's rows (silu(g) * u is linear in u)
 *   attn_output    n_head_kv*hd    its columns, per query   attn_v's rows (attention output is
 *                                  head of each KV head     linear in V; GQA: one s per KV channel,
 *                                                           from the max over the group's heads)
 *
 * The last two change only rows of matrices quantized per row, so they cost
 * those matrices nothing; they are skipped when a bias sits in between
 * (qwen2's attn_v bias).
 */
typedef struct layer_scales {
    float *s_attn;   /* (n_embd) */
    float *s_ffn;    /* (n_embd) */
    float *s_down;   /* (n_ff) columns of ffn_down */
    float *inv_up;   /* (n_ff) rows of ffn_up */
    float *s_o;      /* (q_dim) columns of attn_output */
    float *inv_v;    /* (kv_dim) rows of attn_v */
} layer_scales;

/* ==========================================================================
 * Writing
 * ======================================================================== */

typedef enum kind { COPY, W8A8, NORM } kind;

typedef struct fill_ctx {
    const tn_gguf_tensor *t;
    const float *col;  /* (n_in) column factors, or NULL */
    const float *row;  /* (n_out) row factors, or NULL (norms: divide by col) */
    bool rotate;       /* written as W8A8_HAD: each scaled row r becomes H·r (= (W·H)'s row) */
} fill_ctx;

static tn_status fill_w8a8(void *ctx, void *dst, size_t nbytes)
{
    const fill_ctx *f = ctx;
    const int64_t n_in = f->t->ne[0], n_out = f->t->ne[1];
    const size_t rs = tn_dtype_row_size(f->t->type, n_in);
    if (nbytes != TN_W8A8_ROW(n_in) * (size_t)n_out)
        return tn__err(TN_ERR_INVALID, "w8a8: %s: %zu bytes asked", f->t->name, nbytes);
    float *row = malloc((size_t)n_in * sizeof *row);
    if (!row)
        return tn__err(TN_ERR_NOMEM, "w8a8: out of memory");
    tn_status st = TN_OK;
    for (int64_t r = 0; r < n_out && st == TN_OK; r++) {
        st = tn_dequantize_row(f->t->type, (const char *)f->t->data + rs * (size_t)r, row, n_in);
        const float rf = f->row ? f->row[r] : 1.0f;
        for (int64_t j = 0; j < n_in; j++)
            row[j] = row[j] * (f->col ? f->col[j] : 1.0f) * rf;
        if (f->rotate)
            tn_hadamard(row, n_in);
        tn_w8a8_quantize_row(row, (char *)dst + TN_W8A8_ROW(n_in) * (size_t)r, n_in);
    }
    free(row);
    return st;
}

static tn_status fill_norm(void *ctx, void *dst, size_t nbytes)
{
    const fill_ctx *f = ctx;
    const float *g = f->t->data;
    float *o = dst;
    for (int64_t j = 0; j < f->t->ne[0]; j++)
        o[j] = g[j] / f->col[j];
    (void)nbytes;
    return TN_OK;
}

/* Which tensor of layer *il `name` is, and the factors it takes from ls. */
static bool in_list(const char *list, const char *name)
{
    const size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, name, n))
            return true;
        p = e ? e + 1 : NULL;
    }
    return false;
}

static kind classify(const tn_gguf_tensor *t, int64_t n_layer, const layer_scales *ls, const char *keep,
                     const char *rotate, fill_ctx *fc)
{
    char suffix[64];
    int len = 0, il = -1;
    if (sscanf(t->name, "blk.%d.%63[a-z_].weight%n", &il, suffix, &len) != 2 || t->name[len] != '\0' || il < 0 ||
        il >= n_layer)
        return COPY;
    const layer_scales *l = ls ? &ls[il] : NULL;
    const bool matrix = t->n_dims == 2 && t->ne[2] == 1;
    if (!strcmp(suffix, "attn_norm") || !strcmp(suffix, "ffn_norm")) {
        fc->col = !l ? NULL : suffix[0] == 'a' ? l->s_attn : l->s_ffn;
        return fc->col && t->type == TN_DTYPE_F32 ? NORM : COPY;
    }
    static const char *const mats[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    for (size_t i = 0; i < TN_ARRAY_LEN(mats); i++) {
        if (strcmp(suffix, mats[i]) || !matrix)
            continue;
        if (in_list(keep, mats[i]))
            return COPY; /* its factors were reset to 1 (tn_quantize_w8a8) */
        if (l) {
            fc->col = i < 3 ? l->s_attn : i == 3 ? l->s_o : i < 6 ? l->s_ffn : l->s_down;
            fc->row = i == 2 ? l->inv_v : i == 5 ? l->inv_up : NULL;
        }
        fc->rotate = in_list(rotate, mats[i]) && tn_hadamard_block(t->ne[0]) >= TN_W8A8_MIN_ROTATION;
        return W8A8;
    }
    return COPY;
}

/* The migration scales of every layer into ls (arrays in buf). */
static tn_status layer_scales_compute(const tn_model *m, const calib *c, float alpha, layer_scales *ls, float *buf,
                                      tn_w8a8_result *r)
{
    const tn_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, F = hp->n_ff, hd = hp->head_dim, Q = (int64_t)hp->n_head * hd;
    const int64_t KV = (int64_t)hp->n_head_kv * hd, group = hp->n_head / hp->n_head_kv;
    const int64_t width = TN_MAX(TN_MAX(E, F), Q);
    float *row = malloc((size_t)width * sizeof(float)), *wmax = malloc((size_t)width * sizeof(float));
    float *a = malloc((size_t)width * sizeof(float)), *w = malloc((size_t)width * sizeof(float));
    tn_status st = TN_OK;
    if (!row || !wmax || !a || !w) {
        st = tn__err(TN_ERR_NOMEM, "w8a8: out of memory");
        goto out;
    }
    r->min_s = INFINITY;
    r->max_s = 0;
    for (int64_t il = 0; il < hp->n_layer; il++) {
        const tn_layer *ly = &m->layers[il];
        layer_scales *l = &ls[il];
        l->s_attn = buf;
        l->s_ffn = l->s_attn + E;
        l->s_down = l->s_ffn + E;
        l->inv_up = l->s_down + F;
        l->s_o = l->inv_up + F;
        l->inv_v = l->s_o + Q;
        buf = l->inv_v + KV;
        /* q/k/v and gate/up: columns of the matrices sharing the input. */
        const tn_weight *groups[2][3] = {{&ly->wq, &ly->wk, &ly->wv}, {&ly->ffn_gate, &ly->ffn_up, NULL}};
        for (int g = 0; g < 2; g++) {
            memset(wmax, 0, (size_t)E * sizeof(float));
            for (int k = 0; k < 3; k++)
                if (groups[g][k] && (st = column_max(groups[g][k], row, wmax)) != TN_OK)
                    goto out;
            tn_smoothquant_scales((g ? c->amax_ffn : c->amax_attn) + il * E, wmax, E, alpha, g ? l->s_ffn : l->s_attn);
        }
        /* ffn_down, through ffn_up's rows. */
        memset(wmax, 0, (size_t)F * sizeof(float));
        if ((st = column_max(&ly->ffn_down, row, wmax)) != TN_OK)
            goto out;
        tn_smoothquant_scales(c->amax_down + il * F, wmax, F, alpha, l->s_down);
        for (int64_t j = 0; j < F; j++)
            l->inv_up[j] = 1.0f / l->s_down[j];
        /* attn_output, through attn_v's rows: one scale per KV channel. */
        memset(wmax, 0, (size_t)Q * sizeof(float));
        if ((st = column_max(&ly->wo, row, wmax)) != TN_OK)
            goto out;
        for (int64_t ch = 0; ch < KV; ch++) {
            const int64_t hk = ch / hd, d = ch % hd;
            a[ch] = w[ch] = 0.0f;
            for (int64_t h = hk * group; h < (hk + 1) * group; h++) {
                a[ch] = fmaxf(a[ch], c->amax_o[il * Q + h * hd + d]);
                w[ch] = fmaxf(w[ch], wmax[h * hd + d]);
            }
        }
        tn_smoothquant_scales(a, w, KV, alpha, l->inv_v);
        if (ly->bv.data) /* a bias between V and the output: leave them */
            for (int64_t ch = 0; ch < KV; ch++)
                l->inv_v[ch] = 1.0f;
        for (int64_t q = 0; q < Q; q++)
            l->s_o[q] = l->inv_v[((q / hd) / group) * hd + q % hd];
        for (int64_t ch = 0; ch < KV; ch++)
            l->inv_v[ch] = 1.0f / l->inv_v[ch];
        const float *all[] = {l->s_attn, l->s_ffn, l->s_down, l->s_o};
        const int64_t n_all[] = {E, E, F, Q};
        for (int k = 0; k < 4; k++)
            for (int64_t j = 0; j < n_all[k]; j++) {
                r->min_s = fmin(r->min_s, all[k][j]);
                r->max_s = fmax(r->max_s, all[k][j]);
            }
    }
out:
    free(row);
    free(wmax);
    free(a);
    free(w);
    return st;
}

tn_status tn_quantize_w8a8(const tn_w8a8_opts *o, tn_w8a8_result *r)
{
    memset(r, 0, sizeof *r);
    const float alpha = o->alpha > 0.0f ? o->alpha : 0.5f;
    if (!(alpha >= 0.0f && alpha <= 1.0f))
        return tn__err(TN_ERR_INVALID, "w8a8: alpha %g is not in [0, 1]", (double)alpha);
    tn_model *m = NULL;
    tn_pool *pool = NULL;
    tn_gguf_writer *w = NULL;
    calib c = {0};
    layer_scales *ls = NULL;
    float *buf = NULL;
    fill_ctx *fc = NULL;
    tn_status st = tn_model_load(o->in_path, &m);
    if (st != TN_OK)
        return st;
    const tn_hparams *hp = &m->hp;
    if (hp->n_expert > 0 || hp->kv_lora_rank > 0) {
        st = tn__err(TN_ERR_UNSUPPORTED, "w8a8: %s is a %s model; only dense llama/qwen2/qwen3 models are supported",
                     o->in_path, hp->arch_name);
        goto out;
    }
    const int64_t E = hp->n_embd, L = hp->n_layer, F = hp->n_ff, Q = (int64_t)hp->n_head * hp->head_dim;
    const int64_t KV = (int64_t)hp->n_head_kv * hp->head_dim;
    c.n_embd = hp->n_embd;
    c.n_ff = hp->n_ff;
    c.q_dim = (int32_t)Q;
    c.amax_attn = calloc((size_t)(L * E), sizeof(float));
    c.amax_ffn = calloc((size_t)(L * E), sizeof(float));
    c.amax_down = calloc((size_t)(L * F), sizeof(float));
    c.amax_o = calloc((size_t)(L * Q), sizeof(float));
    const int64_t n_t = tn_gguf_n_tensors(m->gguf);
    fc = calloc((size_t)n_t, sizeof *fc);
    if (!c.amax_attn || !c.amax_ffn || !c.amax_down || !c.amax_o || !fc) {
        st = tn__err(TN_ERR_NOMEM, "w8a8: out of memory");
        goto out;
    }
    if ((st = tn_pool_new(o->n_threads, &pool)) != TN_OK)
        goto out;
    if (o->calib_text) {
        ls = calloc((size_t)L, sizeof *ls);
        buf = malloc((size_t)(L * (2 * E + 2 * F + Q + KV)) * sizeof(float));
        if (!ls || !buf) {
            st = tn__err(TN_ERR_NOMEM, "w8a8: out of memory");
            goto out;
        }
        if ((st = calibrate(m, pool, o, &c, &r->n_chunks)) != TN_OK ||
            (st = layer_scales_compute(m, &c, alpha, ls, buf, r)) != TN_OK)
            goto out;
        /* A kept matrix's input must not move: no factors on either side. */
        for (int64_t il = 0; il < L; il++) {
            for (int64_t j = 0; j < F && in_list(o->keep, "ffn_down"); j++)
                ls[il].s_down[j] = ls[il].inv_up[j] = 1.0f;
            for (int64_t j = 0; j < Q && in_list(o->keep, "attn_output"); j++)
                ls[il].s_o[j] = 1.0f;
            for (int64_t j = 0; j < KV && in_list(o->keep, "attn_output"); j++)
                ls[il].inv_v[j] = 1.0f;
        }
    }

    if ((st = tn_gguf_writer_new(&w)) != TN_OK)
        goto out;
    for (int64_t i = 0; i < tn_gguf_n_kv(m->gguf); i++)
        if ((st = tn_gguf_set_from(w, m->gguf, i)) != TN_OK)
            goto out;
    if ((st = tn_gguf_set_f32(w, "tern.w8a8.alpha", o->calib_text ? alpha : 0.0f)) != TN_OK ||
        (st = tn_gguf_set_u32(w, "tern.w8a8.calib_chunks", (uint32_t)r->n_chunks)) != TN_OK)
        goto out;
    for (int64_t i = 0; i < n_t; i++) {
        const tn_gguf_tensor *t = tn_gguf_tensor_at(m->gguf, i);
        fc[i].t = t;
        kind k = classify(t, L, ls, o->keep, o->rotate, &fc[i]);
        r->bytes_in += t->nbytes;
        if (k == W8A8) {
            int64_t ne[2] = {t->ne[0] + 4, t->ne[1]};
            st = tn_gguf_add_tensor_fn(w, t->name, fc[i].rotate ? TN_DTYPE_W8A8_HAD : TN_DTYPE_W8A8, 2, ne,
                                       fill_w8a8, &fc[i]);
            r->n_w8a8++;
            r->n_rotated += fc[i].rotate;
            r->bytes_out += (uint64_t)ne[0] * (uint64_t)ne[1];
        } else if (k == NORM) {
            st = tn_gguf_add_tensor_fn(w, t->name, TN_DTYPE_F32, t->n_dims, t->ne, fill_norm, &fc[i]);
            r->bytes_out += t->nbytes;
        } else {
            st = tn_gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data);
            r->bytes_out += t->nbytes;
        }
        if (st != TN_OK)
            goto out;
    }
    st = tn_gguf_writer_write(w, o->out_path);
out:
    tn_gguf_writer_free(w);
    tn_pool_free(pool);
    free(c.amax_attn);
    free(c.amax_ffn);
    free(c.amax_down);
    free(c.amax_o);
    free(ls);
    free(buf);
    free(fc);
    tn_model_free(m);
    return st;
}
