/*
 * ep.c — expert-parallel dispatch and combine for one MoE layer (ep.h).
 *
 * Key idea: the layer is three all-to-all-v exchanges around the same
 * grouped expert computation as model/moe.c: counts, then token rows out
 * to the experts' owners, then result rows back to the tokens' ranks,
 * where the weighted sum is taken in the same order as in one process.
 */
#include "dist/ep.h"

#include <stdlib.h>
#include <string.h>

struct tn_ep {
    tn_comm *comm;
    const tn_model *m;
    int32_t n_batch_max;
    int32_t *owner;        /* (n_layer, n_expert) rank computing each logical expert */

    /* Fixed scratch (local tokens). */
    int32_t *cnt_send;     /* (size, n_expert) rows this rank sends to (rank, expert) */
    int32_t *cnt_recv;     /* (size, n_expert) rows this rank receives from (rank, expert) */
    int64_t *soff;         /* (size*n_expert + 1) start of each (rank, expert) run in sendx */
    int64_t *roff;         /* (size*n_expert + 1) start of each (rank, expert) run in recvx */
    int64_t *cur;          /* (size*n_expert) fill cursors */
    int64_t *slot;         /* (n_batch_max, n_expert_used) row of each assignment in sendx / back */
    size_t *sc, *sd, *rc, *rd; /* (size) all-to-all-v byte counts and displacements */
    float *sendx;          /* (n_batch_max*n_expert_used, n_embd) token rows, grouped by (rank, expert) */
    float *back;           /* (n_batch_max*n_expert_used, n_embd) their results, same layout */

    /* Grow-only scratch (rows from every rank). */
    float *recvx, *ret;    /* (recv_cap, n_embd) rows received / their results */
    int64_t recv_cap;
    float *xg, *yg;        /* (grp_cap, n_embd) one expert's rows gathered / its outputs */
    float *gate, *up;      /* (grp_cap, n_ff_exp) */
    int64_t grp_cap;
    void *wdata;           /* tn_matmul scratch */
    size_t wdata_cap;

    int64_t rows_sent, rows_computed;
    tn_ep_timing timing;
};

/* ==========================================================================
 * Lifetime
 * ======================================================================== */

void tn_ep_free(tn_ep *ep)
{
    if (!ep)
        return;
    free(ep->owner);
    free(ep->cnt_send);
    free(ep->cnt_recv);
    free(ep->soff);
    free(ep->roff);
    free(ep->cur);
    free(ep->slot);
    free(ep->sc);
    free(ep->sd);
    free(ep->rc);
    free(ep->rd);
    tn_free_aligned(ep->sendx);
    tn_free_aligned(ep->back);
    tn_free_aligned(ep->recvx);
    tn_free_aligned(ep->ret);
    tn_free_aligned(ep->xg);
    tn_free_aligned(ep->yg);
    tn_free_aligned(ep->gate);
    tn_free_aligned(ep->up);
    tn_free_aligned(ep->wdata);
    free(ep);
}

static tn_status check_owners(const tn_ep *ep, const int32_t *owner, int32_t il)
{
    const int size = tn_comm_size(ep->comm);
    for (int32_t e = 0; e < ep->m->hp.n_expert; e++)
        if (owner[e] < 0 || owner[e] >= size)
            return tn__err(TN_ERR_INVALID, "ep: layer %d expert %d placed on rank %d of %d", il, e, owner[e], size);
    return TN_OK;
}

tn_status tn_ep_new(tn_comm *comm, const tn_model *m, int32_t n_batch_max, const int32_t *owner, tn_ep **out)
{
    *out = NULL;
    const tn_hparams *hp = &m->hp;
    if (hp->n_expert <= 0 || hp->n_expert_used <= 0)
        return tn__err(TN_ERR_INVALID, "ep: the model has no experts");
    if (n_batch_max <= 0)
        return tn__err(TN_ERR_INVALID, "ep: batch size %d", n_batch_max);
    tn_ep *ep = calloc(1, sizeof *ep);
    if (!ep)
        return tn__err(TN_ERR_NOMEM, "ep: out of memory");
    ep->comm = comm;
    ep->m = m;
    ep->n_batch_max = n_batch_max;
    const size_t S = (size_t)tn_comm_size(comm), E = (size_t)hp->n_expert, L = (size_t)hp->n_layer;
    const size_t A = (size_t)n_batch_max * (size_t)hp->n_expert_used, D = (size_t)hp->n_embd;
    ep->owner = malloc(L * E * sizeof(int32_t));
    ep->cnt_send = malloc(S * E * sizeof(int32_t));
    ep->cnt_recv = malloc(S * E * sizeof(int32_t));
    ep->soff = malloc((S * E + 1) * sizeof(int64_t));
    ep->roff = malloc((S * E + 1) * sizeof(int64_t));
    ep->cur = malloc(S * E * sizeof(int64_t));
    ep->slot = malloc(A * sizeof(int64_t));
    ep->sc = malloc(S * sizeof(size_t));
    ep->sd = malloc(S * sizeof(size_t));
    ep->rc = malloc(S * sizeof(size_t));
    ep->rd = malloc(S * sizeof(size_t));
    ep->sendx = tn_alloc_aligned(A * D * sizeof(float), 64);
    ep->back = tn_alloc_aligned(A * D * sizeof(float), 64);
    if (!ep->owner || !ep->cnt_send || !ep->cnt_recv || !ep->soff || !ep->roff || !ep->cur || !ep->slot || !ep->sc ||
        !ep->sd || !ep->rc || !ep->rd || !ep->sendx || !ep->back) {
        tn_ep_free(ep);
        return tn__err(TN_ERR_NOMEM, "ep: out of memory for a batch of %d tokens", n_batch_max);
    }
    for (size_t il = 0; il < L; il++) {
        for (size_t e = 0; e < E; e++)
            ep->owner[il * E + e] = owner ? owner[il * E + e] : (int32_t)(e * S / E);
        tn_status s = check_owners(ep, ep->owner + il * E, (int32_t)il);
        if (s != TN_OK) {
            tn_ep_free(ep);
            return s;
        }
    }
    *out = ep;
    return TN_OK;
}

int32_t tn_ep_owner(const tn_ep *ep, int32_t il, int32_t e)
{
    return ep->owner[(size_t)il * (size_t)ep->m->hp.n_expert + (size_t)e];
}

tn_status tn_ep_set_owners(tn_ep *ep, int32_t il, const int32_t *owner)
{
    if (il < 0 || il >= ep->m->hp.n_layer)
        return tn__err(TN_ERR_INVALID, "ep: layer %d of %d", il, ep->m->hp.n_layer);
    tn_status s = check_owners(ep, owner, il);
    if (s != TN_OK)
        return s;
    memcpy(ep->owner + (size_t)il * (size_t)ep->m->hp.n_expert, owner, (size_t)ep->m->hp.n_expert * sizeof(int32_t));
    return TN_OK;
}

int64_t tn_ep_rows_sent(const tn_ep *ep) { return ep->rows_sent; }
int64_t tn_ep_rows_computed(const tn_ep *ep) { return ep->rows_computed; }
tn_ep_timing tn_ep_get_timing(const tn_ep *ep) { return ep->timing; }
void tn_ep_reset_timing(tn_ep *ep) { memset(&ep->timing, 0, sizeof ep->timing); }
tn_comm *tn_ep_comm(const tn_ep *ep) { return ep->comm; }

/* Grow-only aligned scratch: *p holds at least need bytes afterwards (its
 * contents are lost when it grows). */
static bool grow(void *pp, size_t *cap, size_t need)
{
    void **p = pp;
    if (need <= *cap && *p)
        return true;
    tn_free_aligned(*p);
    *p = tn_alloc_aligned(TN_MAX(need, 64), 64);
    *cap = *p ? need : 0;
    return *p != NULL;
}

/* Makes room for c rows per expert group and r received rows. */
static tn_status reserve(tn_ep *ep, int64_t r, int64_t c)
{
    const tn_hparams *hp = &ep->m->hp;
    const size_t D = (size_t)hp->n_embd, F = (size_t)hp->n_ff_exp;
    if (r > ep->recv_cap) {
        size_t a = 0, b = 0;
        if (!grow(&ep->recvx, &a, (size_t)r * D * sizeof(float)) || !grow(&ep->ret, &b, (size_t)r * D * sizeof(float)))
            return tn__err(TN_ERR_NOMEM, "ep: out of memory for %lld received rows", (long long)r);
        ep->recv_cap = r;
    }
    if (c > ep->grp_cap) {
        size_t a = 0, b = 0, g = 0, u = 0;
        if (!grow(&ep->xg, &a, (size_t)c * D * sizeof(float)) || !grow(&ep->yg, &b, (size_t)c * D * sizeof(float)) ||
            !grow(&ep->gate, &g, (size_t)c * F * sizeof(float)) || !grow(&ep->up, &u, (size_t)c * F * sizeof(float)))
            return tn__err(TN_ERR_NOMEM, "ep: out of memory for an expert group of %lld rows", (long long)c);
        ep->grp_cap = c;
        const tn_layer *ly = &ep->m->layers[0];
        size_t ws = 0;
        for (int32_t il = 0; il < hp->n_layer; il++) {
            ly = &ep->m->layers[il];
            const tn_weight *mats[] = {&ly->ffn_gate_exps, &ly->ffn_up_exps, &ly->ffn_down_exps};
            for (size_t i = 0; i < TN_ARRAY_LEN(mats); i++)
                ws = TN_MAX(ws, tn_weight_expert_wsize(mats[i], c));
        }
        if (!grow(&ep->wdata, &ep->wdata_cap, ws))
            return tn__err(TN_ERR_NOMEM, "ep: out of memory for matmul scratch");
    }
    return TN_OK;
}

/* ==========================================================================
 * The layer
 * ======================================================================== */

/*
 * DISPATCH AND COMBINE
 *
 * Every (token, expert) assignment of this rank becomes one row, sent to
 * the expert's owner. Rows are laid out grouped by destination rank, then
 * by expert, then in token order (a counting sort on rank * n_expert +
 * expert), so that one message per peer carries them and the receiver can
 * find each expert's run from counts alone:
 *
 *   1. counts   cnt_send[d][e] rows for expert e go to rank d; an
 *               all-to-all-v of n_expert int32 per peer gives cnt_recv[s][e]
 *   2. dispatch the rows, one all-to-all-v; received rows are grouped by
 *               source rank, then expert (the sender's order)
 *   3. compute  for each expert in increasing index, its rows from every
 *               source are gathered into one block, its SwiGLU FFN runs as
 *               one matmul per projection, results go back to the rows'
 *               places in `ret`
 *   4. combine  `ret` travels back with the counts swapped, landing in
 *               `back` in exactly the layout `sendx` had; token i's output
 *               is sum_j w[i][j] * back[slot(i, j)] with j visited in
 *               increasing expert index, from zero
 *
 * Why the bits match one process: a matmul row depends only on its input
 * row and the weights (kern.h), not on which other rows share the block;
 * and model/moe.c also adds a token's contributions in increasing expert
 * index starting from zero with the same axpy. Placement, rank count and
 * which rank a token lives on therefore change nothing.
 *
 * EDGE CASES: n == 0 still runs the three exchanges (peers need this
 * rank's zero counts). Rows received for an expert this rank does not own
 * (ranks disagreeing about placement) are still computed correctly: every
 * rank maps every expert. Counts travel as int32: a rank never sends more
 * than n_batch_max * n_expert_used rows.
 */
tn_status tn_ep_moe_ffn(tn_ep *ep, tn_pool *pool, int32_t il, const float *xn, int32_t n, const int32_t *sel,
                        const float *w, float *out)
{
    const tn_model *m = ep->m;
    const tn_hparams *hp = &m->hp;
    const int32_t E = hp->n_expert, K = hp->n_expert_used, D = hp->n_embd, F = hp->n_ff_exp;
    const int S = tn_comm_size(ep->comm), me = tn_comm_rank(ep->comm);
    const size_t row = (size_t)D * sizeof(float);
    if (il < 0 || il >= hp->n_layer || !m->layers[il].ffn_gate_exps.data)
        return tn__err(TN_ERR_INVALID, "ep: layer %d is not a MoE layer", il);
    if (n < 0 || n > ep->n_batch_max)
        return tn__err(TN_ERR_INVALID, "ep: %d tokens for a batch of at most %d", n, ep->n_batch_max);
    for (int64_t a = 0; a < (int64_t)n * K; a++)
        if (sel[a] < 0 || sel[a] >= E)
            return tn__err(TN_ERR_INVALID, "ep: token %lld routed to expert %d of %d", (long long)(a / K), sel[a], E);
    const int32_t *owner = ep->owner + (size_t)il * (size_t)E;
    const int32_t *map = m->expert_map + (size_t)il * (size_t)E;
    const tn_layer *ly = &m->layers[il];
    tn_status s;
    double t0 = tn_time_s(), tc = 0.0, t1;
    ep->timing.n_calls++;

    /* 1. Counts. */
    memset(ep->cnt_send, 0, (size_t)S * (size_t)E * sizeof(int32_t));
    for (int64_t a = 0; a < (int64_t)n * K; a++)
        ep->cnt_send[(size_t)owner[sel[a]] * E + sel[a]]++;
    for (int d = 0; d < S; d++) {
        ep->sc[d] = ep->rc[d] = (size_t)E * sizeof(int32_t);
        ep->sd[d] = ep->rd[d] = (size_t)d * E * sizeof(int32_t);
    }
    t1 = tn_time_s();
    s = tn_comm_alltoallv(ep->comm, ep->cnt_send, ep->sc, ep->sd, ep->cnt_recv, ep->rc, ep->rd);
    tc += tn_time_s() - t1;
    if (s != TN_OK)
        return tn__err_prefix(s, "ep: layer %d counts", il);

    /* Send layout (rank, expert, token) and the rows. */
    const size_t SE = (size_t)S * E;
    ep->soff[0] = ep->roff[0] = 0;
    int64_t biggest = 0;
    for (size_t k = 0; k < SE; k++) {
        if (ep->cnt_recv[k] < 0)
            return tn__err(TN_ERR_IO, "ep: layer %d: rank %zu announced %d rows", il, k / E, ep->cnt_recv[k]);
        ep->soff[k + 1] = ep->soff[k] + ep->cnt_send[k];
        ep->roff[k + 1] = ep->roff[k] + ep->cnt_recv[k];
        ep->cur[k] = 0;
    }
    for (int32_t e = 0; e < E; e++) {
        int64_t c = 0;
        for (int r = 0; r < S; r++)
            c += ep->cnt_recv[(size_t)r * E + e];
        biggest = TN_MAX(biggest, c);
    }
    if ((s = reserve(ep, TN_MAX(ep->roff[SE], 1), TN_MAX(biggest, 1))) != TN_OK)
        return s;
    for (int32_t i = 0; i < n; i++)
        for (int32_t j = 0; j < K; j++) {
            const int32_t e = sel[(size_t)i * K + j];
            const size_t k = (size_t)owner[e] * E + e;
            const int64_t at = ep->soff[k] + ep->cur[k]++;
            ep->slot[(size_t)i * K + j] = at;
            memcpy(ep->sendx + (size_t)at * D, xn + (size_t)i * D, row);
        }

    /* 2. Dispatch. */
    for (int r = 0; r < S; r++) {
        ep->sc[r] = (size_t)(ep->soff[(size_t)(r + 1) * E] - ep->soff[(size_t)r * E]) * row;
        ep->sd[r] = (size_t)ep->soff[(size_t)r * E] * row;
        ep->rc[r] = (size_t)(ep->roff[(size_t)(r + 1) * E] - ep->roff[(size_t)r * E]) * row;
        ep->rd[r] = (size_t)ep->roff[(size_t)r * E] * row;
    }
    t1 = tn_time_s();
    s = tn_comm_alltoallv(ep->comm, ep->sendx, ep->sc, ep->sd, ep->recvx, ep->rc, ep->rd);
    tc += tn_time_s() - t1;
    if (s != TN_OK)
        return tn__err_prefix(s, "ep: layer %d dispatch", il);
    ep->rows_sent = (int64_t)n * K - (ep->soff[(size_t)(me + 1) * E] - ep->soff[(size_t)me * E]);

    /* 3. Compute, expert by expert. */
    ep->rows_computed = 0;
    for (int32_t e = 0; e < E; e++) {
        int64_t c = 0;
        for (int r = 0; r < S; r++) {
            const size_t k = (size_t)r * E + e;
            memcpy(ep->xg + (size_t)c * D, ep->recvx + (size_t)ep->roff[k] * D, (size_t)ep->cnt_recv[k] * row);
            c += ep->cnt_recv[k];
        }
        if (c == 0)
            continue;
        const int32_t p = map[e];
        const tn_matrix g = tn_weight_expert(&ly->ffn_gate_exps, p), u = tn_weight_expert(&ly->ffn_up_exps, p),
                        d = tn_weight_expert(&ly->ffn_down_exps, p);
        tn_matmul(pool, g.data, g.type, D, F, ep->xg, c, ep->gate, ep->wdata);
        tn_matmul(pool, u.data, u.type, D, F, ep->xg, c, ep->up, ep->wdata);
        tn_swiglu(ep->gate, ep->up, c * F);
        tn_matmul(pool, d.data, d.type, F, D, ep->gate, c, ep->yg, ep->wdata);
        c = 0;
        for (int r = 0; r < S; r++) {
            const size_t k = (size_t)r * E + e;
            memcpy(ep->ret + (size_t)ep->roff[k] * D, ep->yg + (size_t)c * D, (size_t)ep->cnt_recv[k] * row);
            c += ep->cnt_recv[k];
        }
        ep->rows_computed += c;
    }

    /* 4. Combine: results back along the reverse paths, then the weighted sum. */
    t1 = tn_time_s();
    s = tn_comm_alltoallv(ep->comm, ep->ret, ep->rc, ep->rd, ep->back, ep->sc, ep->sd);
    tc += tn_time_s() - t1;
    if (s != TN_OK)
        return tn__err_prefix(s, "ep: layer %d combine", il);
    if (n > 0)
        memset(out, 0, (size_t)n * row);
    for (int32_t i = 0; i < n; i++) {
        const int32_t *se = sel + (size_t)i * K;
        int32_t last = -1;
        for (int32_t t = 0; t < K; t++) { /* the next larger expert of the token: K is small */
            int32_t jb = -1;
            for (int32_t j = 0; j < K; j++)
                if (se[j] > last && (jb < 0 || se[j] < se[jb]))
                    jb = j;
            if (jb < 0)
                break; /* duplicate experts: each counted once */
            last = se[jb];
            tn_axpy_f32(out + (size_t)i * D, w[(size_t)i * K + jb], ep->back + (size_t)ep->slot[(size_t)i * K + jb] * D,
                        D);
        }
    }
    ep->timing.comm_s += tc;
    ep->timing.compute_s += tn_time_s() - t0 - tc;
    return TN_OK;
}
