/*
 * load_repack_exps.c — the x16 layout (kern/repack.h) for the stacked
 * expert tensors of MoE layers, expert by expert, and the one way to read
 * an expert out of a stack whatever its layout (tn_weight_expert).
 *
 * Key idea: a stack ffn_{gate,up,down}_exps of the file is n_expert
 * matrices of ne[1] rows laid end to end. Each expert is repacked on its
 * own into its own run of ceil(ne[1] / 16) groups of 16 rows, so an
 * expert's matrix stays one contiguous x16 matrix that tn_matmul takes as
 * it is. The tensor keeps the file's data and type; a table of n_expert
 * (data, dtype) entries, w->exps, says where each expert lives now: an x16
 * copy, or (not repacked) its slice of the file. Every reader of an expert
 * (moe.c's local experts, dist/ep.c's owned experts) goes through
 * tn_weight_expert and sizes its scratch with tn_weight_expert_wsize, so
 * no code does row arithmetic on a stack.
 *
 * Why per expert, and why a table rather than a new type for the whole
 * tensor: an expert-parallel rank computes only the experts it owns, and
 * only their pages of the file should ever be read (docs/ep.md). Such a
 * rank loads with tn_model_opts.defer_experts and repacks just its own
 * experts once dist/ep.c has placed them; the other experts stay in the
 * file's layout, untouched. Should placement move an expert to this rank
 * later, it still computes correctly, from the file's layout.
 *
 * Bits: an x16 product is not bit-identical to the block-format one (the
 * per-block f32 step differs), but it is the same on every ISA and for any
 * batch. Every rank computes its experts from x16 copies exactly when one
 * process does (both repack every expert they compute), so expert
 * parallelism still matches one process to the bit.
 *
 * Memory: one allocation for the wanted experts' copies (n_out padded to
 * 16, ~the size of the originals); the originals' whole pages are dropped
 * from the mapping after each copy (MADV_DONTNEED), as load_repack.c does
 * for the dense matrices. The copies run on a pool of all cores, made for
 * them and freed after (gigabytes of experts: ~15 s of one core for the
 * 8 GiB DeepSeek-V2-lite synth, mostly page faults).
 */
#include "kern/kern.h"
#include "kern/repack.h"
#include "model/model_int.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { N_STACKS = 3 };

tn_matrix tn_weight_expert(const tn_weight *w, int32_t p)
{
    if (w->exps)
        return w->exps[p];
    const size_t per = tn_dtype_row_size(w->type, w->ne[0]) * (size_t)w->ne[1];
    return (tn_matrix){.data = (const char *)w->data + (size_t)p * per, .type = w->type};
}

size_t tn_weight_expert_wsize(const tn_weight *w, int64_t n_tokens)
{
    if (!w->data)
        return 0;
    size_t s = tn_matmul_wsize(w->type, w->ne[0], n_tokens);
    for (int64_t p = 0; w->exps && p < w->ne[2]; p++)
        s = TN_MAX(s, tn_matmul_wsize(w->exps[p].type, w->ne[0], n_tokens));
    return s;
}

static void stacks(tn_layer *ly, tn_weight *out[N_STACKS])
{
    out[0] = &ly->ffn_gate_exps;
    out[1] = &ly->ffn_up_exps;
    out[2] = &ly->ffn_down_exps;
}

static bool eligible(const tn_weight *w, int64_t n_expert)
{
    return w->data && w->ne[2] == n_expert && w->ne[0] % 32 == 0 && w->ne[1] > 0 &&
           tn__x16_dtype_for(w->type) != TN_DTYPE_COUNT;
}

/* Drops the whole pages inside [p, p + n) of the file mapping. */
static void drop_pages(const void *p, size_t n)
{
    const long ps = sysconf(_SC_PAGESIZE);
    if (ps <= 0)
        return;
    const uintptr_t a = ((uintptr_t)p + (uintptr_t)ps - 1) / (uintptr_t)ps * (uintptr_t)ps;
    const uintptr_t b = ((uintptr_t)p + n) / (uintptr_t)ps * (uintptr_t)ps;
    if (b > a)
        (void)madvise((void *)a, b - a, MADV_DONTNEED);
}

/* One expert matrix to copy. */
typedef struct copy_job {
    tn_dtype wt;
    const void *src;
    int64_t n_in, n_out;
    void *dst;
} copy_job;

typedef struct copy_all {
    const copy_job *jobs;
    size_t n;
    bool mapped;
} copy_all;

/* Thread ith of nth copies a contiguous share of the jobs (so each thread
 * streams through its own stretch of the file), then drops the originals'
 * pages. The copies do not depend on which thread makes them. */
static void copy_share(void *ctx, int ith, int nth)
{
    const copy_all *c = ctx;
    const size_t a = c->n * (size_t)ith / (size_t)nth, b = c->n * (size_t)(ith + 1) / (size_t)nth;
    for (size_t i = a; i < b; i++) {
        const copy_job *j = &c->jobs[i];
        tn__x16_repack(j->wt, j->src, j->n_in, j->n_out, j->dst);
        if (c->mapped)
            drop_pages(j->src, tn_dtype_row_size(j->wt, j->n_in) * (size_t)j->n_out);
    }
}

tn_status tn_model_repack_experts(tn_model *m, const uint8_t *want)
{
    if (m->exps_tab)
        return tn__err(TN_ERR_INVALID, "model: the experts were already repacked (tn_model_repack_experts runs once)");
    const char *env = getenv("TERN_REPACK");
    const int64_t E = m->hp.n_expert;
    if ((env && !strcmp(env, "0")) || E <= 0)
        return TN_OK;
    size_t total = 0;
    for (int il = 0; il < m->hp.n_layer; il++) {
        tn_weight *ws[N_STACKS];
        stacks(&m->layers[il], ws);
        for (int k = 0; k < N_STACKS; k++) {
            if (!eligible(ws[k], E))
                continue;
            const size_t per = tn__x16_matrix_bytes(tn__x16_dtype_for(ws[k]->type), ws[k]->ne[0], ws[k]->ne[1]);
            for (int64_t p = 0; p < E; p++)
                if (!want || want[(size_t)il * (size_t)E + (size_t)p])
                    total += per;
        }
    }
    if (total == 0)
        return TN_OK;
    const size_t n_tab = (size_t)m->hp.n_layer * N_STACKS * (size_t)E;
    tn_matrix *tab = malloc(n_tab * sizeof *tab);
    copy_job *jobs = malloc(n_tab * sizeof *jobs);
    char *buf = tn_alloc_huge(total);
    if (!tab || !jobs || !buf) {
        free(tab);
        free(jobs);
        tn_free_aligned(buf);
        return tn__err(TN_ERR_NOMEM, "model: out of memory for %zu bytes of repacked experts", total);
    }
    size_t off = 0, n_jobs = 0;
    for (int il = 0; il < m->hp.n_layer; il++) {
        tn_weight *ws[N_STACKS];
        stacks(&m->layers[il], ws);
        for (int k = 0; k < N_STACKS; k++) {
            tn_weight *w = ws[k];
            if (!eligible(w, E))
                continue;
            tn_matrix *t = tab + ((size_t)il * N_STACKS + (size_t)k) * (size_t)E;
            const tn_dtype xt = tn__x16_dtype_for(w->type);
            const size_t per = tn__x16_matrix_bytes(xt, w->ne[0], w->ne[1]);
            for (int64_t p = 0; p < E; p++) {
                t[p] = tn_weight_expert(w, (int32_t)p); /* w->exps is still NULL: the file's slice */
                if (want && !want[(size_t)il * (size_t)E + (size_t)p])
                    continue;
                jobs[n_jobs++] = (copy_job){.wt = w->type, .src = t[p].data, .n_in = w->ne[0], .n_out = w->ne[1],
                                            .dst = buf + off};
                t[p] = (tn_matrix){.data = buf + off, .type = xt};
                off += per;
            }
            w->exps = t;
        }
    }
    /* A pool of all cores for the copies only (none: this thread does them). */
    tn_pool *pool = NULL;
    if (tn_pool_new(0, &pool) != TN_OK)
        pool = NULL;
    copy_all c = {.jobs = jobs, .n = n_jobs, .mapped = tn_gguf_is_mapped(m->gguf)};
    tn_pool_run(pool, copy_share, &c);
    tn_pool_free(pool);
    free(jobs);
    m->exps_tab = tab;
    m->exps_repacked = buf;
    return TN_OK;
}
