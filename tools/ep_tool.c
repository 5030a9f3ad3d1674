/*
 * ep_tool.c — see ep_tool.h.
 */
#include "ep_tool.h"

#include "args.h"
#include "kern/repack.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int ep_parse_flag(const char *cmd, const char *a, const char *v, ep_opts *o)
{
    if (!strcmp(a, "--ep")) {
        if (!tn_arg_i32(v, 1, 4096, &o->n_ep)) {
            fprintf(stderr, "%s: bad value '%s' for --ep: want an integer in [1, 4096]\n", cmd, v);
            return 2;
        }
        return 1;
    }
    if (!strcmp(a, "--ep-timeout")) {
        if (!tn_arg_f32(v, 0.001f, 1e6f, &o->timeout_s)) {
            fprintf(stderr, "%s: bad value '%s' for --ep-timeout: want seconds in [0.001, 1e6]\n", cmd, v);
            return 2;
        }
        return 1;
    }
    return 0;
}

void ep_usage(FILE *out)
{
    fprintf(out, "      --ep N                expert parallelism over the N ranks of\n"
                 "                            `mpirun -np N` (MoE models; default: off)\n"
                 "      --ep-timeout S        fail when a rank does not answer an exchange\n"
                 "                            within S seconds (default 60)\n");
}

int ep_join(const char *cmd, const ep_opts *o, tn_model *m, int32_t n_batch_max, ep_ctx *ctx)
{
    if (ep_join_job(cmd, o, ctx) != 0)
        return 1;
    return ctx->comm ? ep_make(cmd, ctx, m, n_batch_max) : 0;
}

int ep_join_job(const char *cmd, const ep_opts *o, ep_ctx *ctx)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->size = 1;
    if (o->n_ep == 0)
        return 0;
    if (tn_comm_mpi_new(&ctx->comm) != TN_OK) {
        fprintf(stderr, "%s: --ep %d: cannot join the MPI job: %s\n", cmd, (int)o->n_ep, tn_last_error());
        return 1;
    }
    ctx->rank = tn_comm_rank(ctx->comm);
    ctx->size = tn_comm_size(ctx->comm);
    if (ctx->size != o->n_ep) {
        fprintf(stderr, "%s: rank %d: --ep %d but the job has %d process%s (run it as mpirun -np %d ...)\n", cmd,
                ctx->rank, (int)o->n_ep, ctx->size, ctx->size == 1 ? "" : "es", (int)o->n_ep);
        return 1;
    }
    if (o->timeout_s > 0 && tn_comm_set_timeout(ctx->comm, o->timeout_s) != TN_OK) {
        fprintf(stderr, "%s: rank %d: %s\n", cmd, ctx->rank, tn_last_error());
        return 1;
    }
    return 0;
}

/* Repacks the experts this rank computes (physical slots of its logical
 * experts) into the x16 layout, when the model was loaded with
 * defer_experts (ep_model_opts); the others are never read. */
static int repack_owned(const char *cmd, ep_ctx *ctx, tn_model *m)
{
    if (m->exps_tab)
        return 0; /* loaded without defer_experts: every expert is repacked already */
    const size_t E = (size_t)m->hp.n_expert, n = (size_t)m->hp.n_layer * E;
    uint8_t *want = calloc(n, 1);
    if (!want) {
        fprintf(stderr, "%s: rank %d: out of memory\n", cmd, ctx->rank);
        return 1;
    }
    for (int32_t il = 0; il < m->hp.n_layer; il++)
        for (int32_t e = 0; e < (int32_t)E; e++)
            if (tn_ep_owner(ctx->ep, il, e) == ctx->rank)
                want[(size_t)il * E + (size_t)m->expert_map[(size_t)il * E + (size_t)e]] = 1;
    tn_status s = tn_model_repack_experts(m, want);
    free(want);
    if (s != TN_OK) {
        fprintf(stderr, "%s: rank %d: %s\n", cmd, ctx->rank, tn_last_error());
        return 1;
    }
    int64_t n_x16 = 0, n_all = 0;
    for (int32_t il = 0; il < m->hp.n_layer; il++) {
        const tn_layer *ly = &m->layers[il];
        const tn_weight *ws[] = {&ly->ffn_gate_exps, &ly->ffn_up_exps, &ly->ffn_down_exps};
        for (size_t k = 0; k < TN_ARRAY_LEN(ws); k++)
            for (int32_t p = 0; ws[k]->data && p < (int32_t)E; p++, n_all++)
                n_x16 += tn__dtype_is_x16(tn_weight_expert(ws[k], p).type);
    }
    tn_log(TN_LOG_INFO, "%s: rank %d/%d: %lld of %lld expert matrices repacked (x16 layout)\n", cmd, ctx->rank,
           ctx->size, (long long)n_x16, (long long)n_all);
    return 0;
}

tn_model_opts ep_model_opts(const ep_opts *o) { return (tn_model_opts){.defer_experts = o->n_ep > 0}; }

int ep_make(const char *cmd, ep_ctx *ctx, tn_model *m, int32_t n_batch_max)
{
    if (m->hp.n_expert == 0) {
        fprintf(stderr, "%s: --ep needs a mixture-of-experts model; %s has no experts\n", cmd, m->hp.arch_name);
        return 1;
    }
    if (tn_ep_new(ctx->comm, m, n_batch_max, NULL, &ctx->ep) != TN_OK) {
        fprintf(stderr, "%s: rank %d: %s\n", cmd, ctx->rank, tn_last_error());
        return 1;
    }
    if (repack_owned(cmd, ctx, m) != 0)
        return 1;
    int32_t lo = -1, hi = -1; /* this rank's experts in the first MoE layer, for the log */
    for (int32_t il = 0; il < m->hp.n_layer && lo < 0; il++)
        if (m->layers[il].ffn_gate_inp.data)
            for (int32_t e = 0; e < m->hp.n_expert; e++)
                if (tn_ep_owner(ctx->ep, il, e) == ctx->rank) {
                    lo = lo < 0 ? e : lo;
                    hi = e;
                }
    tn_log(TN_LOG_INFO, "%s: rank %d/%d: experts %d..%d of %d per MoE layer (contiguous placement)\n", cmd,
           ctx->rank, ctx->size, (int)lo, (int)hi, (int)m->hp.n_expert);
    return 0;
}

int32_t ep_threads(const ep_ctx *ctx, int32_t requested)
{
    if (requested > 0 || !ctx->ep)
        return requested;
    const char *local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    long n = local ? strtol(local, NULL, 10) : ctx->size;
    if (n < 1)
        n = 1;
    return (int32_t)TN_MAX(1, tn_n_cores() / n);
}

int ep_attach(const char *cmd, ep_ctx *ctx, tn_forward *f)
{
    if (!ctx->ep)
        return 0;
    if (tn_ep_attach(ctx->ep, f) != TN_OK) {
        fprintf(stderr, "%s: rank %d: %s\n", cmd, ctx->rank, tn_last_error());
        return 1;
    }
    return 0;
}

int ep_follow(const char *cmd, ep_ctx *ctx, const tn_model *m, int32_t n_threads)
{
    tn_pool *pool = NULL;
    tn_kv_cache *kv = NULL;
    tn_forward *fwd = NULL;
    int rc = 1;
    if (tn_pool_new(ep_threads(ctx, n_threads), &pool) != TN_OK || tn_kv_new(m, 1, 1, &kv) != TN_OK ||
        tn_forward_new(m, 1, &fwd) != TN_OK) {
        fprintf(stderr, "%s: rank %d: %s\n", cmd, ctx->rank, tn_last_error());
        goto out;
    }
    if (ep_attach(cmd, ctx, fwd) != 0)
        goto out;
    tn_batch empty = {0};
    int64_t steps = 0;
    for (;;) {
        int32_t agreed;
        tn_status s = tn_ep_sync(ctx->ep, TN_EP_DONE, &agreed);
        if (s == TN_OK && agreed == TN_EP_DONE)
            break;
        if (s == TN_OK && agreed == TN_EP_STEP) {
            s = tn_forward_run(fwd, kv, pool, &empty, NULL);
            steps++;
        }
        if (s != TN_OK) {
            fprintf(stderr, "%s: rank %d: step %lld failed: %s\n", cmd, ctx->rank, (long long)steps, tn_last_error());
            goto out;
        }
    }
    tn_log(TN_LOG_INFO, "%s: rank %d: %lld steps\n", cmd, ctx->rank, (long long)steps);
    ep_report(cmd, ctx);
    rc = 0;
out:
    tn_forward_free(fwd);
    tn_kv_free(kv);
    tn_pool_free(pool);
    return rc;
}

int ep_round(const char *cmd, ep_ctx *ctx, int32_t state)
{
    if (!ctx->ep)
        return 0;
    int32_t agreed;
    if (tn_ep_sync(ctx->ep, state, &agreed) != TN_OK) {
        fprintf(stderr, "%s: rank %d: %s\n", cmd, ctx->rank, tn_last_error());
        return 1;
    }
    return 0;
}

void ep_report(const char *cmd, const ep_ctx *ctx)
{
    int64_t rss, rss_file;
    tn_ep_resident(&rss, &rss_file);
    if (!ctx->ep) {
        tn_log(TN_LOG_INFO, "%s: resident %.1f MiB (file-backed %.1f MiB)\n", cmd, rss / 1048576.0,
               rss_file / 1048576.0);
        return;
    }
    tn_ep_timing t = tn_ep_get_timing(ctx->ep);
    tn_log(TN_LOG_INFO,
           "%s: rank %d/%d: resident %.1f MiB (file-backed %.1f MiB, peak %.1f MiB); %lld MoE-layer calls: "
           "exchanges %.3f s, experts %.3f s\n",
           cmd, ctx->rank, ctx->size, rss / 1048576.0, rss_file / 1048576.0, tn_ep_resident_peak() / 1048576.0,
           (long long)t.n_calls, t.comm_s, t.compute_s);
}

static const char *link_cmd = "tern";

static tn_status link_allgather(void *ud, const void *send, size_t bytes, void *recv)
{
    ep_ctx *c = ud;
    return tn_comm_allgather(c->comm, send, bytes, recv);
}

static tn_status link_alltoallv(void *ud, const void *send, const size_t *sc, const size_t *sd, void *recv,
                                const size_t *rc, const size_t *rd)
{
    ep_ctx *c = ud;
    return tn_comm_alltoallv(c->comm, send, sc, sd, recv, rc, rd);
}

static void link_fail(void *ud, const char *why)
{
    ep_ctx *c = ud;
    fprintf(stderr, "%s: rank %d: the expert-parallel job lost a rank: %s; exiting\n", link_cmd, c->rank, why);
    fflush(stderr);
    _exit(1);
}

void ep_link(const char *cmd, ep_ctx *ctx, tn_engine_link *l)
{
    link_cmd = cmd;
    *l = (tn_engine_link){
        .rank = ctx->rank,
        .size = ctx->size,
        .ud = ctx,
        .allgather = link_allgather,
        .alltoallv = link_alltoallv,
        .fail = link_fail,
    };
}

void ep_leave(ep_ctx *ctx)
{
    tn_ep_free(ctx->ep);
    tn_comm_free(ctx->comm);
    memset(ctx, 0, sizeof *ctx);
}
