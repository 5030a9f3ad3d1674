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
 *
 * The forward state's statistics belong to the thread that runs it. Other
 * threads read a snapshot (tn_moe_stats_snapshot_new + tn_moe_stats_copy)
 * that the owner copies under a lock of its own (the engine does this once
 * per step), never the live tables.
 */
#include "model/model_int.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
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

/* ==========================================================================
 * Snapshots and export
 * ======================================================================== */

/* A snapshot is a tn_moe_stats without the ring: the window sums, the totals
 * and n_calls of the moment it was copied. The getters work on it alike. */
tn_status tn_moe_stats_snapshot_new(const tn_moe_stats *like, tn_moe_stats **out)
{
    *out = NULL;
    if (!like)
        return tn__err(TN_ERR_INVALID, "moe stats: no statistics to snapshot (a dense model)");
    tn_moe_stats *st = calloc(1, sizeof *st);
    size_t per = (size_t)like->n_layer * (size_t)like->n_expert;
    if (st) {
        st->sum = calloc(per, sizeof *st->sum);
        st->total = calloc(per, sizeof *st->total);
    }
    if (!st || !st->sum || !st->total) {
        tn_moe_stats_free(st);
        return tn__err(TN_ERR_NOMEM, "moe stats: out of memory for a snapshot of %zu counts", per);
    }
    st->n_layer = like->n_layer;
    st->n_expert = like->n_expert;
    st->window = like->window;
    *out = st;
    return TN_OK;
}

void tn_moe_stats_copy(tn_moe_stats *dst, const tn_moe_stats *src)
{
    size_t per = (size_t)src->n_layer * (size_t)src->n_expert;
    assert(dst->n_layer == src->n_layer && dst->n_expert == src->n_expert);
    memcpy(dst->sum, src->sum, per * sizeof *dst->sum);
    memcpy(dst->total, src->total, per * sizeof *dst->total);
    dst->n_calls = src->n_calls;
    dst->window = src->window;
}

void tn_moe_stats_free(tn_moe_stats *st) { tn__moe_stats_free(st); }

int32_t tn_moe_stats_n_layer(const tn_moe_stats *st) { return st ? st->n_layer : 0; }

int32_t tn_moe_stats_n_expert(const tn_moe_stats *st) { return st ? st->n_expert : 0; }

double tn_moe_stats_imbalance(const tn_moe_stats *st, int32_t il)
{
    if (!in_range(st, il, 0))
        return 0.0;
    const int64_t *c = st->sum + (size_t)il * (size_t)st->n_expert;
    int64_t max = 0, sum = 0;
    for (int32_t e = 0; e < st->n_expert; e++) {
        max = TN_MAX(max, c[e]);
        sum += c[e];
    }
    return sum > 0 ? (double)max * st->n_expert / (double)sum : 0.0;
}

/* A layer with nothing routed over the whole life (a dense layer) is left out
 * of the exports. */
static bool layer_is_moe(const tn_moe_stats *st, int32_t il)
{
    for (int32_t e = 0; e < st->n_expert; e++)
        if (st->total[(size_t)il * (size_t)st->n_expert + (size_t)e] > 0)
            return true;
    return false;
}

static bool ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

/*
 * FILE FORMATS (tn_moe_stats_write)
 *
 * CSV (path ends in .csv): a header line, then one line per (MoE layer,
 * expert):   layer,expert,window_tokens,total_tokens
 *
 * JSON (anything else):
 *   {"window_calls": 64, "calls_in_window": 12, "n_layer": 27, "n_expert": 64,
 *    "layers": [{"layer": 1, "imbalance": 1.8, "window": [..n_expert..],
 *                "total": [..n_expert..]}, ...]}
 * imbalance is max/mean of the window counts (1 = perfectly even).
 *
 * The file is written to PATH.tmp and renamed over PATH, so a reader never
 * sees half a file.
 */
tn_status tn_moe_stats_write(const tn_moe_stats *st, const char *path)
{
    if (!st)
        return tn__err(TN_ERR_INVALID, "moe stats: %s: the model has no MoE layers", path);
    size_t n = strlen(path);
    char *tmp = malloc(n + 5);
    if (!tmp)
        return tn__err(TN_ERR_NOMEM, "moe stats: out of memory");
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp", 5);
    FILE *fp = fopen(tmp, "w");
    if (!fp) {
        tn_status s = tn__err(TN_ERR_IO, "moe stats: cannot write %s: %s", tmp, strerror(errno));
        free(tmp);
        return s;
    }
    const int32_t L = st->n_layer, E = st->n_expert;
    if (ends_with(path, ".csv")) {
        fprintf(fp, "layer,expert,window_tokens,total_tokens\n");
        for (int32_t il = 0; il < L; il++)
            if (layer_is_moe(st, il))
                for (int32_t e = 0; e < E; e++)
                    fprintf(fp, "%d,%d,%lld,%lld\n", il, e, (long long)tn_moe_stats_count(st, il, e),
                            (long long)tn_moe_stats_total(st, il, e));
    } else {
        fprintf(fp, "{\"window_calls\": %d, \"calls_in_window\": %d, \"n_layer\": %d, \"n_expert\": %d, \"layers\": [",
                st->window, st->n_calls, L, E);
        bool first = true;
        for (int32_t il = 0; il < L; il++) {
            if (!layer_is_moe(st, il))
                continue;
            fprintf(fp, "%s\n {\"layer\": %d, \"imbalance\": %.6g, \"window\": [", first ? "" : ",", il,
                    tn_moe_stats_imbalance(st, il));
            for (int32_t e = 0; e < E; e++)
                fprintf(fp, "%s%lld", e ? ", " : "", (long long)tn_moe_stats_count(st, il, e));
            fprintf(fp, "], \"total\": [");
            for (int32_t e = 0; e < E; e++)
                fprintf(fp, "%s%lld", e ? ", " : "", (long long)tn_moe_stats_total(st, il, e));
            fprintf(fp, "]}");
            first = false;
        }
        fprintf(fp, "\n]}\n");
    }
    bool bad = ferror(fp) != 0;
    bad |= fclose(fp) != 0;
    tn_status s = TN_OK;
    if (bad)
        s = tn__err(TN_ERR_IO, "moe stats: writing %s failed", tmp);
    else if (rename(tmp, path) != 0)
        s = tn__err(TN_ERR_IO, "moe stats: cannot rename %s to %s: %s", tmp, path, strerror(errno));
    if (s != TN_OK)
        remove(tmp);
    free(tmp);
    return s;
}
