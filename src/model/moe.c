/*
 * moe.c — the mixture-of-experts FFN: routing, then the routed experts'
 * SwiGLU FFNs computed grouped by expert, plus the shared expert.
 *
 * Key idea: a batch of n tokens with top-k routing makes n*k (token, expert)
 * assignments. Computing them token by token would stream each active
 * expert's weights once per token routed to it; instead the assignments are
 * sorted by expert (a counting sort), each active expert's tokens are
 * gathered into one contiguous block, its FFN runs as one tn_matmul per
 * projection over that block, and the weighted results are scattered back.
 * Each active expert's weights are read once per call; inactive experts are
 * never touched. Experts are addressed through the model's placement map
 * (tn_model.expert_map: logical expert -> physical slot in the stacked
 * tensors), never by raw index.
 */
#include "model/model_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Forward calls the routing statistics window spans. */
#define STATS_WINDOW 64

struct tn__moe {
    const tn_model *m;
    int32_t n_batch_max;
    int32_t ff_max;      /* max(n_ff_exp, n_ff_shexp) */
    float *probs;        /* (n_batch_max, n_expert) router logits, then scores */
    float *choice;       /* (n_expert) one token's selection scores */
    float *gscore;       /* (n_expert_groups) one token's group scores */
    int32_t *sel;        /* (n_batch_max, n_expert_used) chosen logical experts */
    float *wsel;         /* (n_batch_max, n_expert_used) their weights */
    int32_t *cnt;        /* (n_expert) assignments per expert this layer */
    int32_t *off;        /* (n_expert + 1) start of each expert's run in tok/tw */
    int32_t *tok;        /* (n_batch_max * n_expert_used) token of each assignment, grouped by expert */
    float *tw;           /* (n_batch_max * n_expert_used) its routing weight */
    float *xg;           /* (n_batch_max, n_embd) gathered inputs of one expert */
    float *gate;         /* (n_batch_max, ff_max) */
    float *up;           /* (n_batch_max, ff_max) */
    float *yg;           /* (n_batch_max, n_embd) one expert's outputs */
    float *shg;          /* (n_batch_max) shared-expert gate logits */
    void *wdata;         /* tn_matmul scratch */
    tn_moe_stats *stats;
    tn_moe_routed_fn routed; /* expert-parallel hook (tn_forward_set_moe_routed), or NULL: local experts */
    void *routed_ctx;
    tn_forward_observer observe; /* optional (tn_forward_set_observer) */
    void *observe_ud;
    int32_t obs_layer;   /* layer and expert the next ffn() products belong to (observer names) */
    int32_t obs_expert;
};

void tn__moe_set_observer(tn__moe *moe, tn_forward_observer fn, void *ud)
{
    moe->observe = fn;
    moe->observe_ud = ud;
}

/* Reports the input of product `tensor` of layer il to the observer. */
static void observe(const tn__moe *moe, int32_t il, const char *tensor, int32_t expert, const float *x, int32_t n,
                    int64_t cols)
{
    if (moe->observe && n > 0)
        moe->observe(moe->observe_ud, il, tensor, expert, x, n, (int32_t)cols);
}

/* ==========================================================================
 * Lifetime
 * ======================================================================== */

static size_t wsize_max(size_t cur, const tn_weight *w, int32_t n_tokens)
{
    size_t s = tn_weight_expert_wsize(w, n_tokens); /* a 2-D matrix is a stack of one */
    return s > cur ? s : cur;
}

tn_status tn__moe_new(const tn_model *m, int32_t n_batch_max, tn__moe **out)
{
    *out = NULL;
    const tn_hparams *hp = &m->hp;
    if (hp->n_expert == 0)
        return TN_OK;
    tn__moe *moe = calloc(1, sizeof *moe);
    if (!moe)
        return tn__err(TN_ERR_NOMEM, "moe: out of memory");
    moe->m = m;
    moe->n_batch_max = n_batch_max;
    moe->ff_max = TN_MAX(hp->n_ff_exp, hp->n_ff_shexp);
    size_t B = (size_t)n_batch_max, E = (size_t)hp->n_expert, K = (size_t)hp->n_expert_used;
    size_t D = (size_t)hp->n_embd, F = (size_t)moe->ff_max;
    moe->probs = tn_alloc_aligned(B * E * sizeof(float), 64);
    moe->choice = malloc(E * sizeof(float));
    moe->gscore = malloc((size_t)hp->n_expert_groups * sizeof(float));
    moe->sel = malloc(B * K * sizeof(int32_t));
    moe->wsel = malloc(B * K * sizeof(float));
    moe->cnt = malloc(E * sizeof(int32_t));
    moe->off = malloc((E + 1) * sizeof(int32_t));
    moe->tok = malloc(B * K * sizeof(int32_t));
    moe->tw = malloc(B * K * sizeof(float));
    moe->xg = tn_alloc_aligned(B * D * sizeof(float), 64);
    moe->gate = tn_alloc_aligned(B * F * sizeof(float), 64);
    moe->up = tn_alloc_aligned(B * F * sizeof(float), 64);
    moe->yg = tn_alloc_aligned(B * D * sizeof(float), 64);
    moe->shg = malloc(B * sizeof(float));
    size_t ws = 0;
    for (int il = 0; il < hp->n_layer; il++) {
        const tn_layer *ly = &m->layers[il];
        const tn_weight *mats[] = {&ly->ffn_gate_inp,  &ly->ffn_gate_exps,  &ly->ffn_up_exps,
                                   &ly->ffn_down_exps, &ly->ffn_gate_shexp, &ly->ffn_down_shexp,
                                   &ly->ffn_gate_inp_shexp};
        for (size_t i = 0; i < TN_ARRAY_LEN(mats); i++)
            ws = wsize_max(ws, mats[i], n_batch_max);
    }
    moe->wdata = tn_alloc_aligned(TN_MAX(ws, 64), 64);
    tn_status s = tn__moe_stats_new(hp->n_layer, hp->n_expert, STATS_WINDOW, &moe->stats);
    if (s != TN_OK || !moe->probs || !moe->choice || !moe->gscore || !moe->sel || !moe->wsel || !moe->cnt || !moe->off ||
        !moe->tok || !moe->tw || !moe->xg || !moe->gate || !moe->up || !moe->yg || !moe->shg || !moe->wdata) {
        tn__moe_free(moe);
        return tn__err(TN_ERR_NOMEM, "moe: out of memory for a batch of %d tokens", n_batch_max);
    }
    *out = moe;
    return TN_OK;
}

void tn__moe_free(tn__moe *moe)
{
    if (!moe)
        return;
    tn_free_aligned(moe->probs);
    tn_free_aligned(moe->xg);
    tn_free_aligned(moe->gate);
    tn_free_aligned(moe->up);
    tn_free_aligned(moe->yg);
    tn_free_aligned(moe->wdata);
    free(moe->choice);
    free(moe->gscore);
    free(moe->sel);
    free(moe->wsel);
    free(moe->cnt);
    free(moe->off);
    free(moe->tok);
    free(moe->tw);
    free(moe->shg);
    tn__moe_stats_free(moe->stats);
    free(moe);
}

void tn__moe_begin_call(tn__moe *moe) { tn__moe_stats_begin_call(moe->stats); }

const tn_moe_stats *tn__moe_stats(const tn__moe *moe) { return moe ? moe->stats : NULL; }

void tn__moe_set_routed(tn__moe *moe, tn_moe_routed_fn fn, void *ctx)
{
    moe->routed = fn;
    moe->routed_ctx = ctx;
}

tn_status tn__moe_idle(tn__moe *moe, tn_pool *pool, int32_t il_from)
{
    if (!moe || !moe->routed)
        return TN_OK;
    for (int32_t il = TN_MAX(il_from, 0); il < moe->m->hp.n_layer; il++) {
        if (!moe->m->layers[il].ffn_gate_inp.data)
            continue;
        tn_status s = moe->routed(moe->routed_ctx, pool, il, moe->xg, 0, moe->sel, moe->wsel, moe->yg);
        if (s != TN_OK)
            return s;
    }
    return TN_OK;
}

/* ==========================================================================
 * Routing
 * ======================================================================== */

/*
 * ROUTING: FROM ROUTER LOGITS TO k EXPERTS AND THEIR WEIGHTS
 *
 * The router is a matrix (n_expert rows); for one token its logits r are
 * turned into scores s, the k experts with the largest scores are chosen,
 * and their weights derived from the scores:
 *
 *   gating   s = softmax(r) over ALL experts       (Mixtral, Qwen-MoE)
 *            s = sigmoid(r) element-wise           (expert_gating_func 2)
 *   bias     c = s + exp_probs_b           (DeepSeek-V3's e_score_correction_bias;
 *                                          c = s without it) — steers the CHOICE only
 *   groups   with n_expert_groups G > 1 (DeepSeek), the experts form G equal
 *            groups; each group scores max(c) over its experts (softmax
 *            gating, DeepSeek-V2's group_limited_greedy) or the sum of its two
 *            largest c (sigmoid gating, DeepSeek-V3's noaux_tc); only the
 *            n_group_used best groups stay eligible
 *   choose   top-k of c over the eligible experts (ties: the lower index wins)
 *   weights  w_j = s[e_j]
 *   norm     w_j /= sum_j w_j       if expert_weights_norm (Mixtral's
 *                                   renormalized top-k softmax; Qwen3-MoE's
 *                                   norm_topk_prob; not Qwen2-MoE)
 *   scale    w_j *= expert_weights_scale    (routed_scaling_factor, 1 unless set)
 *
 * Softmax-then-top-k-then-renormalize equals softmax over the k chosen
 * logits alone, which is how Mixtral's paper writes it.
 *
 * EDGE CASES: k == n_expert is dense routing; equal scores pick the lower
 * index, deterministically. Every reduction here is in expert order on one
 * thread, so a token's routing does not depend on the batch around it.
 */
static void route_token(const tn_hparams *hp, const float *bias, float *r, float *choice, float *gscore,
                        int32_t *sel, float *w)
{
    const int32_t E = hp->n_expert, K = hp->n_expert_used, G = hp->n_expert_groups;
    if (hp->expert_gating == TN_GATING_SIGMOID) {
        for (int32_t e = 0; e < E; e++)
            r[e] = 1.0f / (1.0f + expf(-r[e]));
    } else {
        tn_softmax(r, E);
    }
    for (int32_t e = 0; e < E; e++)
        choice[e] = bias ? r[e] + bias[e] : r[e];
    if (G > 1) {
        const int32_t per = E / G;
        for (int32_t g = 0; g < G; g++) {
            const float *c = choice + (size_t)g * per;
            float a = -INFINITY, b = -INFINITY; /* largest, second largest */
            for (int32_t e = 0; e < per; e++) {
                if (c[e] > a) {
                    b = a;
                    a = c[e];
                } else if (c[e] > b) {
                    b = c[e];
                }
            }
            gscore[g] = hp->expert_gating == TN_GATING_SIGMOID && per >= 2 ? a + b : a;
        }
        /* Keep the n_group_used best groups: mark them by setting their score to +inf. */
        for (int32_t u = 0; u < hp->n_group_used; u++) {
            int32_t best = -1;
            for (int32_t g = 0; g < G; g++)
                if (gscore[g] != INFINITY && (best < 0 || gscore[g] > gscore[best]))
                    best = g;
            if (best < 0)
                break; /* NaN scores: fewer groups stay eligible; top-k still finds K experts */
            gscore[best] = INFINITY;
        }
        for (int32_t g = 0; g < G; g++)
            if (gscore[g] != INFINITY)
                for (int32_t e = 0; e < per; e++)
                    choice[(size_t)g * per + e] = -INFINITY;
    }
    for (int32_t j = 0; j < K; j++) {
        int32_t best = -1;
        for (int32_t e = 0; e < E; e++)
            if (choice[e] != -INFINITY && (best < 0 || choice[e] > choice[best]))
                best = e;
        sel[j] = best;
        w[j] = r[best];
        choice[best] = -INFINITY;
    }
    if (hp->expert_weights_norm) {
        float sum = 0.0f;
        for (int32_t j = 0; j < K; j++)
            sum += w[j];
        for (int32_t j = 0; j < K; j++)
            w[j] /= sum;
    }
    for (int32_t j = 0; j < K; j++)
        w[j] *= hp->expert_weights_scale;
}

/* ==========================================================================
 * The grouped expert FFN
 * ======================================================================== */

/* y ((n, n_embd)) = SwiGLU FFN of x ((n, n_embd)) with matrices gate, up
 * ((ff, n_embd)) and down ((n_embd, ff)) of types wt_*. The observer sees
 * the inputs as layer moe->obs_layer's expert moe->obs_expert (-1: the
 * shared expert). */
static void ffn(tn__moe *moe, tn_pool *pool, const void *gate, tn_dtype gt, const void *up, tn_dtype ut,
                const void *down, tn_dtype dt, int64_t ff, const float *x, int32_t n, float *y)
{
    const int64_t D = moe->m->hp.n_embd;
    const int32_t il = moe->obs_layer, e = moe->obs_expert;
    observe(moe, il, e >= 0 ? "ffn_gate_exps" : "ffn_gate_shexp", e, x, n, D);
    observe(moe, il, e >= 0 ? "ffn_up_exps" : "ffn_up_shexp", e, x, n, D);
    tn_matmul(pool, gate, gt, D, ff, x, n, moe->gate, moe->wdata);
    tn_matmul(pool, up, ut, D, ff, x, n, moe->up, moe->wdata);
    tn_swiglu(moe->gate, moe->up, (int64_t)n * ff);
    observe(moe, il, e >= 0 ? "ffn_down_exps" : "ffn_down_shexp", e, moe->gate, n, ff);
    tn_matmul(pool, down, dt, ff, D, moe->gate, n, y, moe->wdata);
}

static void routed_local(tn__moe *moe, tn_pool *pool, int32_t il, const float *xn, int32_t n, float *out);
static void shared_expert(tn__moe *moe, tn_pool *pool, int32_t il, const float *xn, int32_t n, float *out);

/*
 * GROUPING BY EXPERT
 *
 * After routing, token i holds k (expert, weight) pairs. A counting sort
 * over the n*k pairs (count per expert, prefix sums, then a fill in token
 * order) lists, for each expert, the tokens routed to it in increasing batch
 * order. Then, for each expert in increasing logical index with at least one
 * token:
 *
 *     xg  = xn[tokens of e]                      gather   (c, n_embd)
 *     yg  = (silu(xg Wg[p]ᵀ) * xg Wu[p]ᵀ) Wd[p]ᵀ   p = expert_map[e]
 *     out[token] += w * yg[row]                   scatter
 *
 * so every token's output is the sum of its experts' contributions in
 * increasing expert order, whatever else is in the batch (and matmul rows do
 * not depend on the batch size, kern.h): prefill, decode and any chunking
 * agree to the bit. The shared expert, when present, runs over all n tokens
 * and is added last, scaled by sigmoid(xn · ffn_gate_inp_shexp) when the
 * model has that gate (qwen2moe).
 *
 * EXPERT PARALLELISM: with a routed hook set (tn_forward_set_moe_routed),
 * routing and the shared expert stay here, on the token's own rank, and the
 * hook computes the routed sum (dist/ep.c sends each assignment to the rank
 * holding its expert). It adds in the same order from zero, so the bits
 * equal the local path. The hook is collective: every rank must call it for
 * every MoE layer of every step, also with no tokens (tn__moe_idle).
 */
tn_status tn__moe_ffn(tn__moe *moe, tn_pool *pool, int32_t il, const float *xn, int32_t n, float *out)
{
    const tn_model *m = moe->m;
    const tn_hparams *hp = &m->hp;
    const tn_layer *ly = &m->layers[il];
    const int32_t E = hp->n_expert, K = hp->n_expert_used, D = hp->n_embd;

    /* Router logits and per-token routing. */
    observe(moe, il, "ffn_gate_inp", -1, xn, n, D);
    tn_matmul(pool, ly->ffn_gate_inp.data, ly->ffn_gate_inp.type, D, E, xn, n, moe->probs, moe->wdata);
    for (int32_t i = 0; i < n; i++)
        route_token(hp, ly->exp_probs_b.data, moe->probs + (size_t)i * E, moe->choice, moe->gscore,
                    moe->sel + (size_t)i * K, moe->wsel + (size_t)i * K);

    /* Counting sort of the n*K assignments by expert. */
    memset(moe->cnt, 0, (size_t)E * sizeof(int32_t));
    for (int64_t a = 0; a < (int64_t)n * K; a++)
        moe->cnt[moe->sel[a]]++;
    moe->off[0] = 0;
    for (int32_t e = 0; e < E; e++)
        moe->off[e + 1] = moe->off[e] + moe->cnt[e];
    for (int32_t e = 0; e < E; e++)
        moe->cnt[e] = 0; /* reused as fill cursors */
    for (int32_t i = 0; i < n; i++)
        for (int32_t j = 0; j < K; j++) {
            int32_t e = moe->sel[(size_t)i * K + j], at = moe->off[e] + moe->cnt[e]++;
            moe->tok[at] = i;
            moe->tw[at] = moe->wsel[(size_t)i * K + j];
        }

    if (moe->routed) {
        /* Expert parallelism: the routed experts run wherever the hook puts
         * them (dist/ep.c), summed in the same order as below. */
        for (int32_t e = 0; e < E; e++)
            if (moe->cnt[e] > 0)
                tn__moe_stats_add(moe->stats, il, e, moe->cnt[e]);
        tn_status s = moe->routed(moe->routed_ctx, pool, il, xn, n, moe->sel, moe->wsel, out);
        if (s != TN_OK)
            return s;
    } else {
        routed_local(moe, pool, il, xn, n, out);
    }
    shared_expert(moe, pool, il, xn, n, out);
    return TN_OK;
}

/* out = the routed experts' weighted sum, computed here, expert by expert
 * (the assignments grouped by tn__moe_ffn). */
static void routed_local(tn__moe *moe, tn_pool *pool, int32_t il, const float *xn, int32_t n, float *out)
{
    const tn_model *m = moe->m;
    const tn_hparams *hp = &m->hp;
    const tn_layer *ly = &m->layers[il];
    const int32_t E = hp->n_expert, D = hp->n_embd;
    const int32_t *map = m->expert_map + (size_t)il * (size_t)E;
    memset(out, 0, (size_t)n * D * sizeof(float));
    for (int32_t e = 0; e < E; e++) {
        const int32_t c = moe->cnt[e], o = moe->off[e];
        if (c == 0)
            continue;
        tn__moe_stats_add(moe->stats, il, e, c);
        for (int32_t r = 0; r < c; r++)
            memcpy(moe->xg + (size_t)r * D, xn + (size_t)moe->tok[o + r] * D, (size_t)D * sizeof(float));
        const int32_t p = map[e];
        moe->obs_layer = il;
        moe->obs_expert = e;
        const tn_matrix g = tn_weight_expert(&ly->ffn_gate_exps, p), u = tn_weight_expert(&ly->ffn_up_exps, p),
                        d = tn_weight_expert(&ly->ffn_down_exps, p);
        ffn(moe, pool, g.data, g.type, u.data, u.type, d.data, d.type, hp->n_ff_exp, moe->xg, c, moe->yg);
        for (int32_t r = 0; r < c; r++)
            tn_axpy_f32(out + (size_t)moe->tok[o + r] * D, moe->tw[o + r], moe->yg + (size_t)r * D, D);
    }
}

/* out += the shared expert (when the layer has one), computed locally on
 * every rank: it needs no communication. */
static void shared_expert(tn__moe *moe, tn_pool *pool, int32_t il, const float *xn, int32_t n, float *out)
{
    const tn_layer *ly = &moe->m->layers[il];
    const int32_t D = moe->m->hp.n_embd;
    if (ly->ffn_gate_shexp.data) {
        moe->obs_layer = il;
        moe->obs_expert = -1;
        ffn(moe, pool, ly->ffn_gate_shexp.data, ly->ffn_gate_shexp.type, ly->ffn_up_shexp.data,
            ly->ffn_up_shexp.type, ly->ffn_down_shexp.data, ly->ffn_down_shexp.type, moe->m->hp.n_ff_shexp, xn, n,
            moe->yg);
        if (ly->ffn_gate_inp_shexp.data) {
            observe(moe, il, "ffn_gate_inp_shexp", -1, xn, n, D);
            tn_matmul(pool, ly->ffn_gate_inp_shexp.data, ly->ffn_gate_inp_shexp.type, D, 1, xn, n, moe->shg,
                      moe->wdata);
        }
        for (int32_t i = 0; i < n; i++) {
            float g = ly->ffn_gate_inp_shexp.data ? 1.0f / (1.0f + expf(-moe->shg[i])) : 1.0f;
            tn_axpy_f32(out + (size_t)i * D, g, moe->yg + (size_t)i * D, D);
        }
    }
}
