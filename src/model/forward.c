/*
 * forward.c — the batched forward pass of the dense decoder families.
 *
 * Key idea: one call runs one flattened batch of tokens from any number of
 * sequences; every matrix product runs once for the whole batch (each
 * weight is streamed from memory once per call), and everything that mixes
 * tokens — attention — reads only the KV cache, laid out per sequence in
 * position order. All scratch is allocated by tn_forward_new, sized for
 * n_batch_max tokens; tn_forward_run never allocates.
 *
 * One layer, for the n tokens of the batch (x is the residual stream):
 *
 *     xn = rmsnorm(x) * attn_norm
 *     q, k, v = xn Wqᵀ (+bq), xn Wkᵀ (+bk), xn Wvᵀ (+bv)
 *     q, k = per-head rmsnorm * q_norm / k_norm          (qwen3)
 *     q, k = rope(q, pos), rope(k, pos)
 *     cache[layer][kv_slot] = k, v
 *     x += attention(q, cache) Woᵀ
 *     xn = rmsnorm(x) * ffn_norm
 *     x += (silu(xn Wgateᵀ) * xn Wupᵀ) Wdownᵀ
 *
 * A MoE layer replaces the last line by the routed + shared experts of
 * moe.c; a deepseek2 layer replaces the q/k/v/attention lines by the latent
 * attention of mla.c (both hooked in below, nothing else changes).
 *
 * then logits = (rmsnorm(x) * output_norm) Woutputᵀ for the tokens that
 * want them. In the last layer only those tokens' rows go on past attention
 * (every token's K/V is still written): a prefill chunk pays the last FFN
 * and the output matrix for one row, not for the whole chunk.
 */
#include "model/model_int.h"

#include <stdlib.h>
#include <string.h>

/* Below this many q/k/v elements per layer, the per-token work after the
 * projections (norms, RoPE, cache writes) stays on the caller. */
#define MIN_PARALLEL_QKV (1 << 14)

struct tn_forward {
    const tn_model *m;
    int32_t n_batch_max;
    int32_t q_dim;       /* n_head * head_dim */
    int32_t kv_dim;      /* n_head_kv * head_dim */
    int32_t n_pairs;     /* n_rot / 2 */

    float *x;            /* (n_batch_max, n_embd) residual stream */
    float *xn;           /* (n_batch_max, n_embd) normed input of a matmul */
    float *q;            /* (n_batch_max, q_dim) */
    float *k;            /* (n_batch_max, kv_dim) */
    float *v;            /* (n_batch_max, kv_dim) */
    float *attn;         /* (n_batch_max, q_dim) attention output; also qk-norm scratch */
    float *tmp;          /* (n_batch_max, n_embd) output of Wo and Wdown before the residual add */
    float *gate;         /* (n_batch_max, n_ff) */
    float *up;           /* (n_batch_max, n_ff) */
    float *rope_cos;     /* (n_batch_max, n_pairs) */
    float *rope_sin;     /* (n_batch_max, n_pairs) */
    double *inv_freq;    /* (n_pairs) */
    int32_t *vis_off;    /* (n_batch_max) start of each token's visible cells in kv->order_slot */
    int32_t *vis_n;      /* (n_batch_max) their count */
    int32_t *rows;       /* (n_batch_max) batch indexes of the tokens that want logits */
    void *wdata;         /* tn_matmul scratch, the largest any product of this model needs */
    tn__moe *moe;        /* MoE scratch and routing statistics (moe.c); NULL for a dense model */
    tn__mla *mla;        /* latent attention scratch (mla.c, deepseek2); NULL otherwise */
    tn_forward_observer observe; /* optional (tn_forward_set_observer) */
    void *observe_ud;
};

void tn_forward_set_observer(tn_forward *f, tn_forward_observer fn, void *ud)
{
    f->observe = fn;
    f->observe_ud = ud;
    if (f->moe)
        tn__moe_set_observer(f->moe, fn, ud);
    if (f->mla)
        tn__mla_set_observer(f->mla, fn, ud);
}

#define OBSERVE(il, name, x, n, cols) \
    do { \
        if (f->observe) \
            f->observe(f->observe_ud, il, name, -1, x, n, cols); \
    } while (0)

/* ==========================================================================
 * Lifetime
 * ======================================================================== */

static size_t wsize_max(size_t cur, const tn_weight *w, int32_t n_tokens)
{
    size_t s = tn_matmul_wsize(w->type, w->ne[0], n_tokens);
    return s > cur ? s : cur;
}

static float *alloc_f32(size_t rows, size_t cols, bool *ok)
{
    float *p = tn_alloc_aligned(TN_MAX(rows * cols, 1) * sizeof(float), 64);
    if (!p)
        *ok = false;
    return p;
}

/* Allocates the scratch for batches of up to n_batch_max tokens of model m
 * (borrowed: it must outlive the tn_forward). TN_ERR_INVALID for a
 * non-positive or absurd n_batch_max, TN_ERR_NOMEM on allocation failure
 * (*out is NULL then). */
tn_status tn_forward_new(const tn_model *m, int32_t n_batch_max, tn_forward **out)
{
    *out = NULL;
    if (!m)
        return tn__err(TN_ERR_INVALID, "forward: model is NULL");
    if (n_batch_max <= 0 || n_batch_max > (1 << 20))
        return tn__err(TN_ERR_INVALID, "forward: n_batch_max %d out of range [1, %d]", n_batch_max, 1 << 20);
    const tn_hparams *hp = &m->hp;
    tn_forward *f = calloc(1, sizeof *f);
    if (!f)
        return tn__err(TN_ERR_NOMEM, "forward: out of memory");
    f->m = m;
    f->n_batch_max = n_batch_max;
    f->q_dim = hp->n_head * hp->head_dim;
    f->kv_dim = hp->n_head_kv * hp->head_dim;
    if (hp->kv_lora_rank > 0) { /* MLA: attn holds the heads' values; the cache holds latent + RoPE key */
        f->q_dim = hp->n_head * hp->head_dim_v;
        f->kv_dim = hp->kv_lora_rank + hp->n_rot;
    }
    f->n_pairs = hp->n_rot / 2;

    size_t B = (size_t)n_batch_max;
    bool ok = true;
    f->x = alloc_f32(B, (size_t)hp->n_embd, &ok);
    f->xn = alloc_f32(B, (size_t)hp->n_embd, &ok);
    f->q = alloc_f32(B, (size_t)f->q_dim, &ok);
    f->k = alloc_f32(B, (size_t)f->kv_dim, &ok);
    f->v = alloc_f32(B, (size_t)f->kv_dim, &ok);
    f->attn = alloc_f32(B, (size_t)f->q_dim, &ok);
    f->tmp = alloc_f32(B, (size_t)hp->n_embd, &ok);
    f->gate = alloc_f32(B, (size_t)hp->n_ff, &ok);
    f->up = alloc_f32(B, (size_t)hp->n_ff, &ok);
    f->rope_cos = alloc_f32(B, (size_t)f->n_pairs, &ok);
    f->rope_sin = alloc_f32(B, (size_t)f->n_pairs, &ok);
    f->inv_freq = malloc((size_t)f->n_pairs * sizeof(double));
    f->vis_off = malloc(B * sizeof(int32_t));
    f->vis_n = malloc(B * sizeof(int32_t));
    f->rows = malloc(B * sizeof(int32_t));

    size_t ws = wsize_max(0, &m->output, n_batch_max);
    for (int il = 0; il < hp->n_layer; il++) {
        const tn_layer *ly = &m->layers[il];
        const tn_weight *mats[] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->ffn_gate, &ly->ffn_up, &ly->ffn_down};
        for (size_t i = 0; i < TN_ARRAY_LEN(mats); i++)
            ws = wsize_max(ws, mats[i], n_batch_max);
    }
    f->wdata = tn_alloc_aligned(TN_MAX(ws, 64), 64);

    tn_status ms = tn__moe_new(m, n_batch_max, &f->moe);
    if (ms == TN_OK)
        ms = tn__mla_new(m, n_batch_max, &f->mla);
    if (!ok || ms != TN_OK || !f->inv_freq || !f->vis_off || !f->vis_n || !f->rows || !f->wdata) {
        tn_forward_free(f);
        return tn__err(TN_ERR_NOMEM, "forward: out of memory for a batch of %d tokens", n_batch_max);
    }
    tn__rope_inv_freq(hp, m->rope_freqs.data, f->inv_freq);
    *out = f;
    return TN_OK;
}

/* Frees the scratch. NULL is a no-op. */
void tn_forward_free(tn_forward *f)
{
    if (!f)
        return;
    float *bufs[] = {f->x, f->xn, f->q, f->k, f->v, f->attn, f->tmp, f->gate, f->up, f->rope_cos, f->rope_sin};
    for (size_t i = 0; i < TN_ARRAY_LEN(bufs); i++)
        tn_free_aligned(bufs[i]);
    free(f->inv_freq);
    free(f->vis_off);
    free(f->vis_n);
    free(f->rows);
    tn_free_aligned(f->wdata);
    tn__moe_free(f->moe);
    tn__mla_free(f->mla);
    free(f);
}

tn_status tn_forward_set_moe_routed(tn_forward *f, tn_moe_routed_fn fn, void *ctx)
{
    if (!f || !f->moe)
        return tn__err(TN_ERR_INVALID, "forward: the model has no experts to route elsewhere");
    tn__moe_set_routed(f->moe, fn, ctx);
    return TN_OK;
}

/* The routing statistics of a MoE model's forward state; NULL if dense. */
const tn_moe_stats *tn_forward_moe_stats(const tn_forward *f) { return f ? tn__moe_stats(f->moe) : NULL; }

/* ==========================================================================
 * Batch validation
 * ======================================================================== */

/* Everything is checked before anything is written; the message names the
 * token and the field. Sets *n_wanted. */
static tn_status check_batch(tn_forward *f, tn_kv_cache *kv, const tn_batch *b, const float *logits,
                             int32_t *n_wanted)
{
    const tn_hparams *hp = &f->m->hp;
    if (!b)
        return tn__err(TN_ERR_INVALID, "batch is NULL");
    if (!kv)
        return tn__err(TN_ERR_INVALID, "batch: kv cache is NULL");
    if (kv->n_layer != hp->n_layer || kv->kv_dim != f->kv_dim || kv->head_dim != hp->head_dim)
        return tn__err(TN_ERR_INVALID, "batch: kv cache (%d layers, %d x %d) was made for another model shape",
                       kv->n_layer, kv->kv_dim / kv->head_dim, kv->head_dim);
    if (b->n_tokens < 0 || b->n_tokens > f->n_batch_max)
        return tn__err(TN_ERR_INVALID, "batch: n_tokens %d out of range [0, n_batch_max %d]", b->n_tokens,
                       f->n_batch_max);
    if (b->n_tokens > 0 && (!b->token || !b->pos || !b->seq_id || !b->kv_slot || !b->want_logits))
        return tn__err(TN_ERR_INVALID, "batch: %s array is NULL",
                       !b->token    ? "token"
                       : !b->pos    ? "pos"
                       : !b->seq_id ? "seq_id"
                       : !b->kv_slot ? "kv_slot"
                                     : "want_logits");
    int32_t n = 0;
    for (int32_t i = 0; i < b->n_tokens; i++) {
        if (b->token[i] < 0 || b->token[i] >= hp->n_vocab)
            return tn__err(TN_ERR_INVALID, "batch token %d: token id %d out of range [0, %d)", i, b->token[i],
                           hp->n_vocab);
        if (b->pos[i] < 0)
            return tn__err(TN_ERR_INVALID, "batch token %d: pos %d is negative", i, b->pos[i]);
        n += b->want_logits[i] ? 1 : 0;
    }
    if (n > 0 && !logits)
        return tn__err(TN_ERR_INVALID, "batch: %d tokens want logits but the logits buffer is NULL", n);
    *n_wanted = n;
    return tn__kv_check_batch(kv, b);
}

/* ==========================================================================
 * The layer
 * ======================================================================== */

/* Adds bias b ((cols) f32) to each of n rows of y ((n, cols)). */
static void add_bias(float *y, const tn_weight *b, int32_t n, int32_t cols)
{
    const float *bias = b->data;
    for (int32_t i = 0; i < n; i++)
        for (int32_t j = 0; j < cols; j++)
            y[(size_t)i * cols + j] += bias[j];
}

/* y += d over n rows of cols. */
static void add_rows(float *y, const float *d, int32_t n, int32_t cols)
{
    size_t total = (size_t)n * cols;
    for (size_t i = 0; i < total; i++)
        y[i] += d[i];
}

/* dst row i = rmsnorm(src row i) * w over n rows of cols. */
static void norm_rows(float *dst, const float *src, const tn_weight *w, int32_t n, int32_t cols, float eps)
{
    for (int32_t i = 0; i < n; i++)
        tn_rmsnorm(dst + (size_t)i * cols, src + (size_t)i * cols, w->data, cols, eps);
}

/* After the projections: optional per-head q/k norm, RoPE, and the K/V
 * rows into the cache at the tokens' slots. Per token; dealt over threads. */
typedef struct qkv_job {
    const tn_forward *f;
    tn_kv_cache *kv;
    const tn_layer *ly;
    int32_t layer;
    const tn_batch *b;
} qkv_job;

static void qkv_run(void *ctx, int ith, int nth)
{
    const qkv_job *j = ctx;
    const tn_forward *f = j->f;
    const tn_hparams *hp = &f->m->hp;
    tn_kv_cache *kv = j->kv;
    const int hd = hp->head_dim;
    for (int32_t i = ith; i < j->b->n_tokens; i += nth) {
        float *q = f->q + (size_t)i * f->q_dim;    /* (n_head, head_dim) */
        float *kc = f->k + (size_t)i * f->kv_dim; /* (n_head_kv, head_dim), normed and roped in place */
        if (j->ly->q_norm.data) {
            /* Normalize out of place (into this token's attn row, free until
             * attention runs), then copy back; k goes straight to the cache. */
            float *t = f->attn + (size_t)i * f->q_dim;
            for (int h = 0; h < hp->n_head; h++)
                tn_rmsnorm(t + (size_t)h * hd, q + (size_t)h * hd, j->ly->q_norm.data, hd, hp->norm_eps);
            memcpy(q, t, (size_t)f->q_dim * sizeof(float));
            for (int h = 0; h < hp->n_head_kv; h++)
                tn_rmsnorm(kc + (size_t)h * hd, kc + (size_t)h * hd, j->ly->k_norm.data, hd, hp->norm_eps);
        }
        const float *cs = f->rope_cos + (size_t)i * f->n_pairs, *sn = f->rope_sin + (size_t)i * f->n_pairs;
        tn__rope_apply(q, hp->n_head, hd, hp->n_rot, hp->rope_type, cs, sn);
        tn__rope_apply(kc, hp->n_head_kv, hd, hp->n_rot, hp->rope_type, cs, sn);
        tn__kv_store(kv, j->layer, j->b->kv_slot[i], kc, f->v + (size_t)i * f->kv_dim); /* kv.c */
    }
}

/* Moves rows rows[0..n) of buf ((*, cols)) to rows 0..n; rows[] ascending. */
static void compact_rows(float *buf, const int32_t *rows, int32_t n, int32_t cols)
{
    for (int32_t r = 0; r < n; r++)
        if (rows[r] != r)
            memmove(buf + (size_t)r * cols, buf + (size_t)rows[r] * cols, (size_t)cols * sizeof(float));
}

/* ==========================================================================
 * Entry point
 * ======================================================================== */

/* See model.h. Validates the whole batch first (nothing is written on
 * error), records the tokens in the cache, then runs the layers. Call from
 * the thread that owns f, kv and pool. */
tn_status tn_forward_run(tn_forward *f, tn_kv_cache *kv, tn_pool *pool, const tn_batch *b, float *logits)
{
    if (!f)
        return tn__err(TN_ERR_INVALID, "forward: tn_forward is NULL");
    int32_t n_wanted = 0;
    tn_status s = check_batch(f, kv, b, logits, &n_wanted);
    if (s != TN_OK)
        return s;
    const int32_t n_tokens = b->n_tokens;
    if (n_tokens == 0)
        return tn__moe_idle(f->moe, pool, 0); /* expert parallelism: an empty step still exchanges */

    const tn_model *m = f->m;
    const tn_hparams *hp = &m->hp;
    const int32_t n_embd = hp->n_embd, n_ff = hp->n_ff;

    tn__kv_apply_batch(kv, b, f->vis_off, f->vis_n);
    if (f->moe)
        tn__moe_begin_call(f->moe);
    int64_t n_visible = 0; /* cell visits per layer and head */
    for (int32_t i = 0; i < n_tokens; i++)
        n_visible += f->vis_n[i];
    tn__rope_tables(f->inv_freq, f->n_pairs, b->pos, n_tokens, f->rope_cos, f->rope_sin);
    for (int32_t i = 0, r = 0; i < n_tokens; i++)
        if (b->want_logits[i])
            f->rows[r++] = i;
    for (int32_t i = 0; i < n_tokens; i++)
        tn_get_row(m->tok_embd.data, m->tok_embd.type, n_embd, b->token[i], f->x + (size_t)i * n_embd);

    int32_t n = n_tokens; /* rows still carried in x: all, until the last layer's attention */
    for (int32_t il = 0; il < hp->n_layer; il++) {
        const tn_layer *ly = &m->layers[il];

        /* Attention block. */
        norm_rows(f->xn, f->x, &ly->attn_norm, n, n_embd, hp->norm_eps);
        if (f->mla) {
            tn__mla_attention(f->mla, pool, kv, il, b, f->xn, n, f->vis_off, f->vis_n, f->attn); /* mla.c */
        } else {
            OBSERVE(il, "attn_q", f->xn, n, n_embd);
            OBSERVE(il, "attn_k", f->xn, n, n_embd);
            OBSERVE(il, "attn_v", f->xn, n, n_embd);
            tn_matmul(pool, ly->wq.data, ly->wq.type, n_embd, f->q_dim, f->xn, n, f->q, f->wdata);
            tn_matmul(pool, ly->wk.data, ly->wk.type, n_embd, f->kv_dim, f->xn, n, f->k, f->wdata);
            tn_matmul(pool, ly->wv.data, ly->wv.type, n_embd, f->kv_dim, f->xn, n, f->v, f->wdata);
            if (ly->bq.data) {
                add_bias(f->q, &ly->bq, n, f->q_dim);
                add_bias(f->k, &ly->bk, n, f->kv_dim);
                add_bias(f->v, &ly->bv, n, f->kv_dim);
            }
            qkv_job qj = {.f = f, .kv = kv, .ly = ly, .layer = il, .b = b};
            if ((int64_t)n * (f->q_dim + 2 * f->kv_dim) < MIN_PARALLEL_QKV)
                qkv_run(&qj, 0, 1);
            else
                tn_pool_run(pool, qkv_run, &qj);
            tn__attention(pool, kv, il, hp, n, f->q, f->vis_off, f->vis_n, n_visible, f->attn);
        }

        if (il == hp->n_layer - 1 && n_wanted < n) {
            /* Only the rows that want logits matter from here on. */
            compact_rows(f->attn, f->rows, n_wanted, f->q_dim);
            compact_rows(f->x, f->rows, n_wanted, n_embd);
            n = n_wanted;
            if (n == 0)
                return tn__moe_idle(f->moe, pool, il);
        }
        OBSERVE(il, "attn_output", f->attn, n, f->q_dim);
        tn_matmul(pool, ly->wo.data, ly->wo.type, f->q_dim, n_embd, f->attn, n, f->tmp, f->wdata);
        add_rows(f->x, f->tmp, n, n_embd);

        /* Feed-forward block. */
        norm_rows(f->xn, f->x, &ly->ffn_norm, n, n_embd, hp->norm_eps);
        if (ly->ffn_gate_inp.data) {
            if ((s = tn__moe_ffn(f->moe, pool, il, f->xn, n, f->tmp)) != TN_OK) /* routed + shared experts (moe.c) */
                return s;
        } else {
            OBSERVE(il, "ffn_gate", f->xn, n, n_embd);
            OBSERVE(il, "ffn_up", f->xn, n, n_embd);
            tn_matmul(pool, ly->ffn_gate.data, ly->ffn_gate.type, n_embd, n_ff, f->xn, n, f->gate, f->wdata);
            tn_matmul(pool, ly->ffn_up.data, ly->ffn_up.type, n_embd, n_ff, f->xn, n, f->up, f->wdata);
            tn_swiglu(f->gate, f->up, (int64_t)n * n_ff);
            OBSERVE(il, "ffn_down", f->gate, n, n_ff);
            tn_matmul(pool, ly->ffn_down.data, ly->ffn_down.type, n_ff, n_embd, f->gate, n, f->tmp, f->wdata);
        }
        add_rows(f->x, f->tmp, n, n_embd);
    }

    if (n_wanted == 0)
        return TN_OK;
    /* x now holds exactly the wanted rows, in batch order. */
    norm_rows(f->xn, f->x, &m->output_norm, n_wanted, n_embd, hp->norm_eps);
    OBSERVE(-1, "output", f->xn, n_wanted, n_embd);
    tn_matmul(pool, m->output.data, m->output.type, n_embd, hp->n_vocab, f->xn, n_wanted, logits, f->wdata);
    return TN_OK;
}
