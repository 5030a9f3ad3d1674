/*
 * moe_stats.c — routing statistics: tokens per expert per layer over a
 * sliding window of forward calls, for /metrics and the expert-parallel
 * load balancer.
 *
 * Key idea: a ring of per-call count tables plus a running window sum.
 * Starting a call subtracts the oldest table from the sum and clears it, so
 * reading a count is O(1) and a call costs O(n_layer * n_expert) once, not
 * per token. All of it is allocated up front; the forward pass only adds.
 *
 * Counts are of routed (token, expert) assignments actually computed: in the
 * last layer only the tokens whose logits are wanted are computed (forward.c),
 * so a prefill chunk counts there once, not once per token.
 */
#include "model/model_int.h"

#include <stdlib.h>
#include <string.h>

struct tn_moe_stats {
    int32_t n_layer, n_expert;
    int32_t window;     /* calls the window spans */
    int32_t head;       /* ring index of the current call */
    int32_t n_calls;    /* calls in the window so far (<= window) */
    int32_t *ring;      /* (window, n_layer, n_expert) per-call counts */
    int64_t *sum;       /* (n_layer, n_expert) over the window */
    int64_t *total;     /* (n_layer, n_expert) since creation */
};

/* Creates empty statistics; TN_ERR_INVALID for non-positive sizes,
 * TN_ERR_NOMEM on allocation failure (*out NULL then). */
tn_status tn__moe_stats_new(int32_t n_layer, int32_t n_expert, int32_t window, tn_moe_stats **out)
{
    *out = NULL;
    if (n_layer <= 0 || n_expert <= 0 || window <= 0)
        return tn__err(TN_ERR_INVALID, "moe stats: sizes %d x %d x %d must be positive", window, n_layer, n_expert);
    tn_moe_stats *st = calloc(1, sizeof *st);
    if (!st)
        return tn__err(TN_ERR_NOMEM, "moe stats: out of memory");
    size_t per = (size_t)n_layer * (size_t)n_expert;
    st->n_layer = n_layer;
    st->n_expert = n_expert;
    st->window = window;
    st->ring = calloc(per * (size_t)window, sizeof *st->ring);
    st->sum = calloc(per, sizeof *st->sum);
    st->total = calloc(per, sizeof *st->total);
    if (!st->ring || !st->sum || !st->total) {
        tn__moe_stats_free(st);
        return tn__err(TN_ERR_NOMEM, "moe stats: out of memory for %d x %zu counts", window, per);
    }
    st->head = window - 1; /* the first begin_call moves to slot 0 */
    *out = st;
    return TN_OK;
}

void tn__moe_stats_free(tn_moe_stats *st)
{
    if (!st)
        return;
    free(st->ring);
    free(st->sum);
    free(st->total);
    free(st);
}

/* Moves to the next ring slot, dropping the call it held from the sum. */
void tn__moe_stats_begin_call(tn_moe_stats *st)
{
    size_t per = (size_t)st->n_layer * (size_t)st->n_expert;
    st->head = (st->head + 1) % st->window;
    int32_t *slot = st->ring + (size_t)st->head * per;
    for (size_t i = 0; i < per; i++)
        st->sum[i] -= slot[i];
    memset(slot, 0, per * sizeof *slot);
    if (st->n_calls < st->window)
        st->n_calls++;
}

void tn__moe_stats_add(tn_moe_stats *st, int32_t il, int32_t e, int64_t n)
{
    size_t per = (size_t)st->n_layer * (size_t)st->n_expert, i = (size_t)il * (size_t)st->n_expert + (size_t)e;
    st->ring[(size_t)st->head * per + i] += (int32_t)n;
    st->sum[i] += n;
    st->total[i] += n;
}

int32_t tn_moe_stats_window(const tn_moe_stats *st) { return st ? st->window : 0; }

int32_t tn_moe_stats_n_calls(const tn_moe_stats *st) { return st ? st->n_calls : 0; }

static bool in_range(const tn_moe_stats *st, int32_t il, int32_t e)
{
    return st && il >= 0 && il < st->n_layer && e >= 0 && e < st->n_expert;
}

int64_t tn_moe_stats_count(const tn_moe_stats *st, int32_t il, int32_t e)
{
    return in_range(st, il, e) ? st->sum[(size_t)il * (size_t)st->n_expert + (size_t)e] : 0;
}

int64_t tn_moe_stats_total(const tn_moe_stats *st, int32_t il, int32_t e)
{
    return in_range(st, il, e) ? st->total[(size_t)il * (size_t)st->n_expert + (size_t)e] : 0;
}
