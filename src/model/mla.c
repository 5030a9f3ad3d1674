/*
 * mla.c — multi-head latent attention (DeepSeek-V2/V3, GGUF arch deepseek2),
 * computed in the latent space with the up-projections absorbed.
 *
 * Key idea: the KV cache holds, per token and layer, only the compressed
 * latent c (kv_lora_rank values) and the one RoPE key shared by all heads
 * (n_rot values) — 576 floats at V3's sizes instead of n_head * (192 + 128)
 * = 40960 for the expanded K and V. The per-head keys and values are linear
 * in c, so attention never expands them: the key up-projection is folded
 * into the query and the value up-projection applied after the weighted sum.
 */
#include "model/model_int.h"
#include "kern/attn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/*
 * THE EXPANDED FORM (Hugging Face's DeepseekV2Attention), per token t,
 * head h, with nope = head_dim - n_rot and W_UK[h], W_UV[h] the head's rows
 * of attn_kv_b (nope and head_dim_v rows of kv_lora_rank columns):
 *
 *   q[h]      = (q LoRA: rmsnorm(xn Wq_aᵀ) Wq_bᵀ, else xn Wqᵀ)[h] = [q_nope[h], q_pe[h]]
 *   [c, kpe]  = xn Wkv_aᵀ;  c = rmsnorm(c) * kv_a_norm;  kpe = rope(kpe)
 *   k[h]      = [W_UK[h] c, kpe]        v[h] = W_UV[h] c
 *   o[h]      = sum_j softmax_j(q[h]·k_j[h] * scale) v_j[h]
 *
 * ABSORBED (what runs here): q_nope·(W_UK c_j) = (W_UK[h]ᵀ q_nope[h])·c_j, so
 *
 *   qa[h]     = [W_UK[h]ᵀ q_nope[h], rope(q_pe[h])]     (kv_lora_rank + n_rot)
 *   s_j       = qa[h] · cache_j * scale                 cache_j = [c_j, kpe_j]
 *   lat[h]    = sum_j softmax(s)_j c_j                  (kv_lora_rank)
 *   o[h]      = W_UV[h] lat[h]                          (head_dim_v)
 *
 * which is the same number in exact arithmetic (the golden test compares it
 * with the numpy reference, which runs the expanded form). Per cached token
 * each head does one dot of kv_lora_rank + n_rot and one axpy of
 * kv_lora_rank instead of expanding K and V for every head.
 *
 * Both up-projections run as matrix products with the kernels of every other
 * weight: per head, W_UK[h]ᵀ (ly->wk_b: kv_lora_rank rows of nope) over the
 * chunk's q_nope rows, and W_UV[h] (ly->wv_b) over its latent outputs.
 * load_moe.c prepares them once at load (attn_k_b / attn_v_b of newer files
 * as they are; from attn_kv_b a view for W_UV and a transposed F32/F16 copy
 * for W_UK); nothing is dequantized per call. Prefill uses the same path (no
 * expansion), so prefill and decode agree to the bit: the batch is cut into
 * chunks of tokens only to bound the scratch, and a token's numbers never
 * depend on what else shares its chunk.
 *
 * ROPE: DeepSeek rotates ADJACENT pairs of the n_rot part (HF permutes
 * q_pe/k_pe to halves and applies rotate_half, which is the same thing);
 * the nope part is not rotated. With rope.scaling.type "yarn" the
 * frequencies are YaRN's blend (see yarn_inv_freq) and the softmax scale is
 * multiplied by mscale² = (1 + yarn_log_multiplier * ln(factor))², as in
 * HF's DeepseekV2Attention (the cos/sin are not rescaled: DeepSeek's
 * mscale equals mscale_all_dim).
 *
 * ATTENTION runs kern/attn.h's tiled online softmax per head for blocks of
 * up to TN_ATTN_QBLOCK consecutive tokens of one sequence (tn_attn_block),
 * with K = the cached row [c, kpe] and V = its first kv_lora_rank values
 * (the same memory), so no scores are materialized beyond a tile.
 *
 * LIMITATIONS: the cache is F32; each head reads every visible cache row on
 * its own: the H heads of a token could share one pass over the rows
 * (tn_attn_group takes a group of heads) if the absorption ran for all
 * heads before attention, which needs (chunk, H, kvr + n_rot) of scratch
 * per thread instead of (chunk, kvr + n_rot).
 */

struct tn__mla {
    const tn_model *m;
    int32_t H, nope, n_rot, kvr, dv, hd; /* heads, nope dims, rope dims, kv_lora_rank, value dim, key dim */
    int32_t chunk;        /* tokens per absorption chunk (<= n_batch_max) */
    int32_t n_thr;        /* threads with scratch below (tn_n_cores(): a pool never has more) */
    float scale;          /* softmax scale incl. YaRN mscale² */
    float *qa;            /* (n_batch_max, q_lora_rank) */
    float *q;             /* (n_batch_max, H * hd) */
    float *kva;           /* (n_batch_max, kvr + n_rot) */
    void *wdata;          /* the projections' matmul scratch */
    /* Per thread, for the head it works on (mla_heads): */
    float *qn;            /* (n_thr, chunk, nope) the head's q_nope rows */
    float *tq;            /* (n_thr, chunk, kvr + n_rot) its absorbed queries [W_UK[h]ᵀ q_nope, q_pe] */
    float *lat;           /* (n_thr, chunk, kvr) its latent outputs */
    float *vo;            /* (n_thr, chunk, dv) its values W_UV[h] lat */
    void *hwdata;         /* (n_thr, hws bytes) matmul scratch */
    size_t hws;
    double *inv_freq;     /* (n_rot / 2) */
    float *cos_t, *sin_t; /* (n_batch_max, n_rot / 2) */
    tn_forward_observer observe; /* optional (tn_forward_set_observer) */
    void *observe_ud;
};

void tn__mla_set_observer(tn__mla *a, tn_forward_observer fn, void *ud)
{
    a->observe = fn;
    a->observe_ud = ud;
}

#define OBSERVE(il, name, x, n, cols) \
    do { \
        if (a->observe && (n) > 0) \
            a->observe(a->observe_ud, il, name, -1, x, n, cols); \
    } while (0)

/* ==========================================================================
 * YaRN
 * ======================================================================== */

/*
 * YARN FREQUENCIES (DeepseekV2YarnRotaryEmbedding)
 *
 * With factor s, base b, d = n_rot and the original context L, pair i's
 * frequency blends the unscaled f_i = b^(-2i/d) ("extrapolation") and the
 * interpolated f_i / s:
 *
 *   dim(r)   = d * ln(L / (2π r)) / (2 ln b)      pairs that turn r times over L
 *   lo, hi   = max(floor(dim(32)), 0), min(ceil(dim(1)), d - 1)
 *   ramp_i   = clamp((i - lo) / (hi - lo), 0, 1)  (hi == lo: hi += 0.001)
 *   inv_f_i  = f_i / s * ramp_i + f_i * (1 - ramp_i)
 *
 * so fast pairs (i < lo, many turns within L) keep their frequency and slow
 * ones (i > hi) are interpolated.
 */
static void yarn_inv_freq(const tn_hparams *hp, double *inv_freq)
{
    const int d = hp->n_rot, half = d / 2;
    const double base = hp->rope_freq_base, s = 1.0 / (double)hp->rope_freq_scale, L = hp->rope_yarn_orig_ctx;
    const double pi = 3.14159265358979323846;
    double lo = floor(d * log(L / (32.0 * 2 * pi)) / (2 * log(base)));
    double hi = ceil(d * log(L / (1.0 * 2 * pi)) / (2 * log(base)));
    lo = TN_MAX(lo, 0.0);
    hi = TN_MIN(hi, (double)(d - 1));
    if (hi == lo)
        hi += 0.001;
    for (int i = 0; i < half; i++) {
        double f = pow(base, -2.0 * i / d);
        double ramp = TN_MIN(TN_MAX((i - lo) / (hi - lo), 0.0), 1.0);
        inv_freq[i] = f / s * ramp + f * (1.0 - ramp);
    }
}

/* ==========================================================================
 * Lifetime
 * ======================================================================== */

#define MLA_CHUNK 64 /* tokens per absorption chunk: bounds tq and lat (V3: 64 x 128 heads x 576 floats) */

tn_status tn__mla_new(const tn_model *m, int32_t n_batch_max, tn__mla **out)
{
    *out = NULL;
    const tn_hparams *hp = &m->hp;
    if (hp->kv_lora_rank == 0)
        return TN_OK;
    tn__mla *a = calloc(1, sizeof *a);
    if (!a)
        return tn__err(TN_ERR_NOMEM, "mla: out of memory");
    a->m = m;
    a->H = hp->n_head;
    a->hd = hp->head_dim;
    a->n_rot = hp->n_rot;
    a->nope = hp->head_dim - hp->n_rot;
    a->kvr = hp->kv_lora_rank;
    a->dv = hp->head_dim_v;
    a->chunk = TN_MIN(n_batch_max, MLA_CHUNK);
    a->n_thr = tn_n_cores();
    double mscale = 1.0;
    if (hp->rope_yarn && hp->rope_freq_scale < 1.0f)
        mscale = 1.0 + (double)hp->rope_yarn_log_mul * log(1.0 / (double)hp->rope_freq_scale);
    a->scale = (float)(mscale * mscale / sqrt((double)hp->head_dim));

    size_t B = (size_t)n_batch_max, TC = (size_t)a->n_thr * (size_t)a->chunk, H = (size_t)a->H;
    size_t kvw = (size_t)(a->kvr + a->n_rot), pairs = (size_t)(a->n_rot / 2), kvr = (size_t)a->kvr;
    a->qa = tn_alloc_aligned(B * (size_t)TN_MAX(hp->q_lora_rank, 1) * sizeof(float), 64);
    a->q = tn_alloc_aligned(B * H * (size_t)a->hd * sizeof(float), 64);
    a->kva = tn_alloc_aligned(B * kvw * sizeof(float), 64);
    a->qn = tn_alloc_aligned(TC * (size_t)a->nope * sizeof(float), 64);
    a->tq = tn_alloc_aligned(TC * kvw * sizeof(float), 64);
    a->lat = tn_alloc_aligned(TC * kvr * sizeof(float), 64);
    a->vo = tn_alloc_aligned(TC * (size_t)a->dv * sizeof(float), 64);
    a->inv_freq = malloc(pairs * sizeof(double));
    a->cos_t = malloc(B * pairs * sizeof(float));
    a->sin_t = malloc(B * pairs * sizeof(float));
    size_t ws = 64, hws = 64;
    for (int il = 0; il < hp->n_layer; il++) {
        const tn_layer *ly = &m->layers[il];
        const tn_weight *mats[] = {&ly->wq_a, &ly->wq_b, &ly->wq, &ly->wkv_a};
        for (size_t i = 0; i < TN_ARRAY_LEN(mats); i++)
            if (mats[i]->data)
                ws = TN_MAX(ws, tn_matmul_wsize(mats[i]->type, mats[i]->ne[0], n_batch_max));
        hws = TN_MAX(hws, tn_matmul_wsize(ly->wk_b.type, a->nope, a->chunk));
        hws = TN_MAX(hws, tn_matmul_wsize(ly->wv_b.type, a->kvr, a->chunk));
    }
    a->hws = (hws + 63) / 64 * 64;
    a->wdata = tn_alloc_aligned(ws, 64);
    a->hwdata = tn_alloc_aligned(a->hws * (size_t)a->n_thr, 64);
    if (!a->qa || !a->q || !a->kva || !a->qn || !a->tq || !a->lat || !a->vo || !a->inv_freq || !a->cos_t ||
        !a->sin_t || !a->wdata || !a->hwdata) {
        tn__mla_free(a);
        return tn__err(TN_ERR_NOMEM, "mla: out of memory for a batch of %d tokens", n_batch_max);
    }
    if (hp->rope_yarn)
        yarn_inv_freq(hp, a->inv_freq);
    else
        tn__rope_inv_freq(hp, NULL, a->inv_freq);
    *out = a;
    return TN_OK;
}

void tn__mla_free(tn__mla *a)
{
    if (!a)
        return;
    tn_free_aligned(a->qa);
    tn_free_aligned(a->q);
    tn_free_aligned(a->kva);
    tn_free_aligned(a->qn);
    tn_free_aligned(a->tq);
    tn_free_aligned(a->lat);
    tn_free_aligned(a->vo);
    tn_free_aligned(a->wdata);
    tn_free_aligned(a->hwdata);
    free(a->inv_freq);
    free(a->cos_t);
    free(a->sin_t);
    free(a);
}

/* ==========================================================================
 * Attention in the latent space
 * ======================================================================== */

typedef struct mla_job {
    tn__mla *a;
    tn_kv_cache *kv;
    int32_t layer, t0, n;           /* tokens t0 ..+ n of the batch */
    const int32_t *vis_off, *vis_n; /* the batch's */
    float *out;                     /* (batch, H * dv) */
} mla_job;

/* Head h's rows of W_UK[h]ᵀ / W_UV[h] (see tn_layer). */
static const void *head_mat(const tn_weight *w, int64_t n_in, int32_t h)
{
    return (const char *)w->data + tn_dtype_row_size(w->type, n_in) * (size_t)w->ne[1] * (size_t)h;
}

/* Whole heads at a time, dealt round-robin (one fork/join per chunk and
 * layer, not one per head and product): thread t takes heads t, t + nth,
 * ... and for each runs, on its own scratch rows, the absorption of the
 * chunk's queries (tn_matmul without the pool), every token's attention
 * over its visible latents, and W_UV. The products' numbers do not depend
 * on the thread that computes them (kern.h). */
static void mla_heads(void *ctx, int ith, int nth)
{
    const mla_job *j = ctx;
    tn__mla *a = j->a;
    tn_kv_cache *kv = j->kv;
    const int nw = TN_MIN(nth, TN_MIN(kv->n_score_rows, a->n_thr));
    if (ith >= nw)
        return;
    const tn_layer *ly = &a->m->layers[j->layer];
    const int32_t H = a->H, kvr = a->kvr, kvw = kvr + a->n_rot, nope = a->nope, dv = a->dv, hd = a->hd, n = j->n;
    const size_t C = (size_t)a->chunk;
    float *sc = kv->scores + (size_t)ith * kv->score_row;       /* attention scratch */
    float *qn = a->qn + (size_t)ith * C * nope;                 /* (n, nope) */
    float *tq = a->tq + (size_t)ith * C * kvw;                  /* (n, kvr + n_rot) */
    float *lat = a->lat + (size_t)ith * C * kvr;                /* (n, kvr) */
    float *vo = a->vo + (size_t)ith * C * dv;                   /* (n, dv) */
    void *wd = (char *)a->hwdata + (size_t)ith * a->hws;
    const float *cl = kv->k + (size_t)j->layer * kv->n_slots * (size_t)kv->kv_dim; /* (n_slots, kvr + n_rot) */
    /* K = the whole cached row [c, kpe], V = its first kvr values c */
    const tn_attn_kv rows = {.type = TN_DTYPE_F32, .k = cl, .v = cl, .stride = (size_t)kvw, .hd_k = kvw, .hd_v = kvr};
    for (int32_t h = ith; h < H; h += nw) {
        for (int32_t i = 0; i < n; i++)
            memcpy(qn + (size_t)i * nope, a->q + ((size_t)(j->t0 + i) * H + h) * hd, (size_t)nope * sizeof(float));
        /* lat serves as the (n, kvr) product; then each row moves into tq */
        tn_matmul(NULL, head_mat(&ly->wk_b, nope, h), ly->wk_b.type, nope, kvr, qn, n, lat, wd);
        for (int32_t i = 0; i < n; i++) {
            float *t = tq + (size_t)i * kvw;
            memcpy(t, lat + (size_t)i * kvr, (size_t)kvr * sizeof(float));
            memcpy(t + kvr, a->q + ((size_t)(j->t0 + i) * H + h) * hd + nope, (size_t)a->n_rot * sizeof(float));
        }
        for (int32_t i = 0, e; i < n; i = e) { /* blocks of one sequence's consecutive tokens share the tiles */
            const int32_t off = j->vis_off[j->t0 + i];
            int64_t nv[TN_ATTN_QBLOCK];
            for (e = i; e < n && e - i < TN_ATTN_QBLOCK && j->vis_off[j->t0 + e] == off; e++)
                nv[e - i] = j->vis_n[j->t0 + e];
            tn_attn_block(&rows, kv->order_slot + off, nv, e - i, tq + (size_t)i * kvw, (size_t)kvw, (size_t)kvw, 1,
                          a->scale, lat + (size_t)i * kvr, (size_t)kvr, (size_t)kvr, sc);
        }
        tn_matmul(NULL, head_mat(&ly->wv_b, kvr, h), ly->wv_b.type, kvr, dv, lat, n, vo, wd);
        for (int32_t i = 0; i < n; i++)
            memcpy(j->out + ((size_t)(j->t0 + i) * H + h) * dv, vo + (size_t)i * dv, (size_t)dv * sizeof(float));
    }
}

void tn__mla_attention(tn__mla *a, tn_pool *pool, tn_kv_cache *kv, int32_t il, const tn_batch *b,
                       const float *xn, int32_t n, const int32_t *vis_off, const int32_t *vis_n, float *out)
{
    const tn_model *m = a->m;
    const tn_hparams *hp = &m->hp;
    const tn_layer *ly = &m->layers[il];
    const int32_t D = hp->n_embd, kvr = a->kvr, kvw = kvr + a->n_rot, qd = a->H * a->hd, pairs = a->n_rot / 2;

    /* Queries: q LoRA (down, norm, up) or one projection. */
    if (ly->wq_a.data) {
        const int32_t r = hp->q_lora_rank;
        OBSERVE(il, "attn_q_a", xn, n, D);
        tn_matmul(pool, ly->wq_a.data, ly->wq_a.type, D, r, xn, n, a->qa, a->wdata);
        for (int32_t i = 0; i < n; i++)
            tn_rmsnorm(a->qa + (size_t)i * r, a->qa + (size_t)i * r, ly->q_a_norm.data, r, hp->norm_eps);
        OBSERVE(il, "attn_q_b", a->qa, n, r);
        tn_matmul(pool, ly->wq_b.data, ly->wq_b.type, r, qd, a->qa, n, a->q, a->wdata);
    } else {
        OBSERVE(il, "attn_q", xn, n, D);
        tn_matmul(pool, ly->wq.data, ly->wq.type, D, qd, xn, n, a->q, a->wdata);
    }
    OBSERVE(il, "attn_kv_a_mqa", xn, n, D);
    tn_matmul(pool, ly->wkv_a.data, ly->wkv_a.type, D, kvw, xn, n, a->kva, a->wdata);

    /* Per token: rope the queries' q_pe parts, and cache [norm(c), rope(kpe)]. */
    tn__rope_tables(a->inv_freq, pairs, b->pos, n, a->cos_t, a->sin_t);
    float *cl = kv->k + (size_t)il * kv->n_slots * (size_t)kv->kv_dim;
    for (int32_t i = 0; i < n; i++) {
        const float *cs = a->cos_t + (size_t)i * pairs, *sn = a->sin_t + (size_t)i * pairs;
        tn__rope_apply(a->q + (size_t)i * qd + a->nope, a->H, a->hd, a->n_rot, TN_ROPE_NORM, cs, sn);
        const float *src = a->kva + (size_t)i * kvw;
        float *row = cl + (size_t)b->kv_slot[i] * kvw; /* (kvr + n_rot) */
        tn_rmsnorm(row, src, ly->kv_a_norm.data, kvr, hp->norm_eps);
        memcpy(row + kvr, src + kvr, (size_t)a->n_rot * sizeof(float));
        tn__rope_apply(row + kvr, 1, a->n_rot, a->n_rot, TN_ROPE_NORM, cs, sn);
    }
    if (a->observe) { /* attn_kv_b's input in the unabsorbed product: the normalized latents (kva is free now) */
        for (int32_t i = 0; i < n; i++)
            memcpy(a->kva + (size_t)i * kvr, cl + (size_t)b->kv_slot[i] * kvw, (size_t)kvr * sizeof(float));
        OBSERVE(il, "attn_kv_b", a->kva, n, kvr);
    }

    for (int32_t t0 = 0; t0 < n; t0 += a->chunk) {
        mla_job j = {.a = a, .kv = kv, .layer = il, .t0 = t0, .n = TN_MIN(a->chunk, n - t0), .vis_off = vis_off,
                     .vis_n = vis_n, .out = out};
        tn_pool_run(pool, mla_heads, &j);
    }
}
