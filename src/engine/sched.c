/*
 * sched.c — continuous batching with chunked prefill, paged block tables,
 * the prefix cache at admission, and preemption by recompute.
 *
 * THE STEP (HOW IT WORKS)
 *
 * Every call to tn_sched_schedule plans one forward call of at most
 * step_token_budget tokens. A sequence needs the positions
 * [n_computed, n_tokens) computed; it is "decoding" when that is exactly one
 * token (the one it sampled last step), "prefilling" when more (a new
 * prompt, or a preempted sequence recomputing prompt + output).
 *
 *   0. Expire: every sequence whose deadline has passed is detached, its
 *      blocks released, and handed back in st->expired.
 *   1. Decode first: each running decoding sequence, oldest first, gets its
 *      one token (and a new block when it crosses a block boundary). Running
 *      streams therefore never stall behind a long prompt.
 *   2. Running prefills, oldest first, get chunks of what budget is left.
 *   3. Admission: waiting sequences, oldest first (FCFS: the head blocks the
 *      rest, so a big old request is not overtaken forever), join while a
 *      lane and budget remain. At admission the prefix cache is consulted:
 *      the sequence's full blocks are hashed in chain order and every leading
 *      block found is taken (refcount + 1) instead of recomputed — except
 *      that at least the last token is always computed, since its logits
 *      are what the step is for.
 *
 * The last chunk of a prefill, and every decode, has `sample` set: its last
 * token's logits pick the next token. Everything else in the batch only
 * writes K/V.
 *
 * PREEMPTION (recompute)
 *
 * Blocks are allocated as positions are scheduled, never reserved ahead. A
 * running sequence that needs a block when none is free takes one from the
 * NEWEST running sequence that has not been scheduled in this step (the
 * victim): the victim releases all its blocks, forgets n_computed, and goes
 * back to the waiting list at its arrival place — ahead of every newer
 * request — keeping its tokens (prompt and output so far). When readmitted
 * it prefills them again; its released full blocks went to the prefix
 * cache, so often most of that recompute is a cache hit. If the sequence in
 * need is itself the newest unscheduled one, it preempts itself. Prefill
 * chunks first shrink to the blocks that are free, and preempt only when
 * not even one token fits. Admission never preempts: a waiting request
 * only takes free (or evictable cached) blocks.
 *
 * Why this terminates and why a request that fits alone never fails:
 * n_ctx <= the cache, so the oldest running sequence can always get its
 * blocks by preempting every newer one; the oldest request therefore always
 * progresses, and each one, once oldest, completes.
 *
 * EDGE CASES
 *
 * Decodes that the budget cannot cover wait for the next step (older ones
 * first). A sequence preempted in a step is not scheduled again in that
 * step. A prefix hit that cannot be followed by at least one computed token
 * (no free block at all) is undone and admission stops for this step.
 *
 * LIMITATIONS
 *
 * No priorities beyond arrival order; preemption recomputes (no swap to
 * host memory); a running prefill starved of blocks by decoders preempts
 * itself rather than an older decoder.
 */
#include "engine/sched.h"

#include <stdlib.h>
#include <string.h>

struct tn_sched {
    tn_sched_params p;
    tn_blocks *bm;

    tn_sched_seq **running; /* (max_running) sorted by arrival */
    int32_t n_running;
    tn_sched_seq *whead, *wtail; /* waiting, sorted by arrival */
    int32_t n_waiting;
    bool *lane_used;        /* (max_running) */
    uint64_t next_arrival;
    uint64_t step;

    tn_sched_item *items;   /* (max_running) */
    tn_sched_seq **expired; /* (expired_cap) */
    int32_t expired_cap;
    int32_t n_live;

    uint64_t prefix_queries, prefix_hits, n_preemptions;
};

/* ==========================================================================
 * Lifetime
 * ======================================================================== */

/* Contract in sched.h. */
tn_status tn_sched_new(const tn_sched_params *p, tn_sched **out)
{
    *out = NULL;
    if (p->max_running <= 0 || p->step_token_budget <= 0 || p->n_ctx <= 0 || p->block_size <= 0 ||
        p->n_blocks <= 0)
        return tn__err(TN_ERR_INVALID, "sched: max_running %d, step_token_budget %d, n_ctx %d, blocks %d x %d "
                                       "must all be positive",
                       p->max_running, p->step_token_budget, p->n_ctx, p->n_blocks, p->block_size);
    if ((int64_t)p->n_ctx > (int64_t)p->n_blocks * p->block_size)
        return tn__err(TN_ERR_INVALID, "sched: n_ctx %d exceeds the KV cache (%d blocks of %d tokens)", p->n_ctx,
                       p->n_blocks, p->block_size);
    tn_sched *s = calloc(1, sizeof *s);
    if (!s)
        return tn__err(TN_ERR_NOMEM, "sched: out of memory");
    s->p = *p;
    tn_status st = tn_blocks_new(p->n_blocks, p->block_size, &s->bm);
    if (st != TN_OK) {
        free(s);
        return st;
    }
    s->running = calloc((size_t)p->max_running, sizeof *s->running);
    s->lane_used = calloc((size_t)p->max_running, sizeof *s->lane_used);
    s->items = calloc((size_t)p->max_running, sizeof *s->items);
    if (!s->running || !s->lane_used || !s->items) {
        tn_sched_free(s);
        return tn__err(TN_ERR_NOMEM, "sched: out of memory");
    }
    *out = s;
    return TN_OK;
}

static void seq_free_mem(tn_sched_seq *q)
{
    free(q->tokens);
    free(q->table);
    free(q->block_hash);
    free(q->slots);
    free(q);
}

/* Contract in sched.h. */
void tn_sched_free(tn_sched *s)
{
    if (!s)
        return;
    for (int32_t i = 0; i < s->n_running; i++)
        seq_free_mem(s->running[i]);
    for (tn_sched_seq *q = s->whead; q;) {
        tn_sched_seq *n = q->wnext;
        seq_free_mem(q);
        q = n;
    }
    tn_blocks_free(s->bm);
    free(s->running);
    free(s->lane_used);
    free(s->items);
    free(s->expired);
    free(s);
}

/* Contract in sched.h. */
tn_status tn_sched_add(tn_sched *s, uint64_t id, const int32_t *prompt, int32_t n_prompt, int32_t max_new,
                       double deadline, void *user, tn_sched_seq **out)
{
    *out = NULL;
    if (n_prompt < 1 || max_new < 0 || (int64_t)n_prompt + max_new > s->p.n_ctx)
        return tn__err(TN_ERR_INVALID, "sched: prompt of %d tokens + %d new exceeds the context of %d (or is empty)",
                       n_prompt, max_new, s->p.n_ctx);
    if (s->n_live + 1 > s->expired_cap) {
        int32_t cap = TN_MAX(16, 2 * s->expired_cap);
        tn_sched_seq **e = realloc(s->expired, (size_t)cap * sizeof *e);
        if (!e)
            return tn__err(TN_ERR_NOMEM, "sched: out of memory");
        s->expired = e;
        s->expired_cap = cap;
    }
    const int32_t bs = s->p.block_size;
    tn_sched_seq *q = calloc(1, sizeof *q);
    if (!q)
        return tn__err(TN_ERR_NOMEM, "sched: out of memory");
    q->cap = TN_MAX(n_prompt + max_new, 1);
    q->max_blocks = (q->cap + bs - 1) / bs;
    q->tokens = malloc((size_t)q->cap * sizeof(int32_t));
    q->table = malloc((size_t)q->max_blocks * sizeof(int32_t));
    q->block_hash = malloc((size_t)q->max_blocks * sizeof(uint64_t));
    q->slots = malloc((size_t)q->max_blocks * bs * sizeof(int32_t));
    if (!q->tokens || !q->table || !q->block_hash || !q->slots) {
        int32_t cap = q->cap;
        seq_free_mem(q);
        return tn__err(TN_ERR_NOMEM, "sched: out of memory for a sequence of %d tokens", cap);
    }
    memcpy(q->tokens, prompt, (size_t)n_prompt * sizeof(int32_t));
    q->id = id;
    q->user = user;
    q->n_prompt = q->n_tokens = n_prompt;
    q->lane = -1;
    q->arrival = s->next_arrival++;
    q->deadline = deadline;
    q->state = TN_SEQ_WAITING;
    /* Newest arrival: append. */
    q->wprev = s->wtail;
    if (s->wtail)
        s->wtail->wnext = q;
    else
        s->whead = q;
    s->wtail = q;
    s->n_waiting++;
    s->n_live++;
    *out = q;
    return TN_OK;
}

/* ==========================================================================
 * Lists and blocks
 * ======================================================================== */

static void waiting_remove(tn_sched *s, tn_sched_seq *q)
{
    if (q->wprev)
        q->wprev->wnext = q->wnext;
    else
        s->whead = q->wnext;
    if (q->wnext)
        q->wnext->wprev = q->wprev;
    else
        s->wtail = q->wprev;
    q->wprev = q->wnext = NULL;
    s->n_waiting--;
}

/* Inserts q at its arrival place (preempted sequences go ahead of newer ones). */
static void waiting_insert(tn_sched *s, tn_sched_seq *q)
{
    tn_sched_seq *after = s->wtail;
    while (after && after->arrival > q->arrival)
        after = after->wprev;
    q->wprev = after;
    q->wnext = after ? after->wnext : s->whead;
    if (q->wnext)
        q->wnext->wprev = q;
    else
        s->wtail = q;
    if (after)
        after->wnext = q;
    else
        s->whead = q;
    s->n_waiting++;
}

static void running_remove(tn_sched *s, tn_sched_seq *q)
{
    int32_t i = 0;
    while (s->running[i] != q)
        i++;
    memmove(s->running + i, s->running + i + 1, (size_t)(s->n_running - i - 1) * sizeof *s->running);
    s->n_running--;
    s->lane_used[q->lane] = false;
    q->lane = -1;
}

static void running_insert(tn_sched *s, tn_sched_seq *q)
{
    int32_t i = s->n_running;
    while (i > 0 && s->running[i - 1]->arrival > q->arrival) {
        s->running[i] = s->running[i - 1];
        i--;
    }
    s->running[i] = q;
    s->n_running++;
    int32_t lane = 0;
    while (s->lane_used[lane])
        lane++;
    s->lane_used[lane] = true;
    q->lane = lane;
}

/* Releases q's blocks, last first (see the eviction essay in blocks.c). */
static void release_blocks(tn_sched *s, tn_sched_seq *q)
{
    for (int32_t k = q->n_blocks - 1; k >= 0; k--)
        tn_blocks_unref(s->bm, q->table[k]);
    q->n_blocks = 0;
    q->n_computed = 0;
    q->n_registered = 0;
}

static void append_block(tn_sched *s, tn_sched_seq *q, int32_t b)
{
    const int32_t bs = s->p.block_size;
    int32_t k = q->n_blocks++;
    q->table[k] = b;
    for (int32_t j = 0; j < bs; j++)
        q->slots[(size_t)k * bs + j] = b * bs + j;
}

/* Blocks q lacks to hold positions below `end`. */
static int32_t blocks_needed(const tn_sched *s, const tn_sched_seq *q, int32_t end)
{
    int32_t want = (end + s->p.block_size - 1) / s->p.block_size;
    return TN_MAX(want - q->n_blocks, 0);
}

/* Largest chunk <= want that the free blocks cover; allocates its blocks. */
static int32_t fit_and_alloc(tn_sched *s, tn_sched_seq *q, int32_t want)
{
    int32_t free_b = tn_blocks_n_free(s->bm);
    int32_t need = blocks_needed(s, q, q->n_computed + want);
    if (need > free_b) {
        want = (q->n_blocks + free_b) * s->p.block_size - q->n_computed;
        if (want < 0)
            want = 0;
        need = free_b;
    }
    for (int32_t k = 0; k < need && want > 0; k++)
        append_block(s, q, tn_blocks_alloc(s->bm));
    return want;
}

/* Contract in the essay: back to waiting, blocks released, tokens kept. */
static void preempt(tn_sched *s, tn_sched_seq *q, tn_sched_step *st)
{
    running_remove(s, q);
    release_blocks(s, q);
    q->state = TN_SEQ_WAITING;
    q->n_preempted++;
    q->step_mark = s->step; /* not readmitted in this step */
    waiting_insert(s, q);
    s->n_preemptions++;
    st->n_preempted++;
}

/* The newest running sequence not yet scheduled in this step (q itself
 * qualifies); NULL if none. */
static tn_sched_seq *pick_victim(tn_sched *s)
{
    for (int32_t i = s->n_running - 1; i >= 0; i--)
        if (s->running[i]->step_mark != s->step)
            return s->running[i];
    return NULL;
}

/* Chain hashes of q's full blocks up to block n (exclusive). */
static void ensure_hashes(tn_sched *s, tn_sched_seq *q, int32_t n)
{
    const int32_t bs = s->p.block_size;
    for (int32_t k = q->n_hashes; k < n; k++) {
        uint64_t parent = k > 0 ? q->block_hash[k - 1] : 0;
        q->block_hash[k] = tn_blocks_hash(parent, q->tokens + (size_t)k * bs, bs);
    }
    if (n > q->n_hashes)
        q->n_hashes = n;
}

/* Takes the leading cached blocks of waiting q (which holds none); returns
 * how many tokens they cover. */
static int32_t prefix_lookup(tn_sched *s, tn_sched_seq *q)
{
    const int32_t bs = s->p.block_size;
    s->prefix_queries += (uint64_t)q->n_tokens;
    if (!s->p.prefix_cache || q->no_prefix_lookup)
        return 0;
    int32_t max_hit = (q->n_tokens - 1) / bs; /* the last token is always computed */
    ensure_hashes(s, q, max_hit);
    int32_t k = 0;
    for (; k < max_hit; k++) {
        int32_t b = tn_blocks_lookup(s->bm, q->block_hash[k], q->tokens + (size_t)k * bs);
        if (b < 0)
            break;
        tn_blocks_ref(s->bm, b);
        append_block(s, q, b);
    }
    q->n_computed = k * bs;
    q->n_registered = k;
    s->prefix_hits += (uint64_t)q->n_computed;
    return q->n_computed;
}

static void add_item(tn_sched *s, tn_sched_step *st, tn_sched_seq *q, int32_t n)
{
    tn_sched_item *it = &st->items[st->n_items++];
    it->seq = q;
    it->pos0 = q->n_computed;
    it->n = n;
    it->sample = q->n_computed + n == q->n_tokens;
    st->n_tokens += n;
    q->step_mark = s->step;
}

/* ==========================================================================
 * The step
 * ======================================================================== */

/* Contract in sched.h; the policy is the essay at the top of this file. */
void tn_sched_schedule(tn_sched *s, double now, tn_sched_step *st)
{
    s->step++;
    st->items = s->items;
    st->n_items = 0;
    st->n_tokens = 0;
    st->expired = s->expired;
    st->n_expired = 0;
    st->n_preempted = 0;

    /* 0. Deadlines. */
    for (int32_t i = s->n_running - 1; i >= 0; i--) {
        tn_sched_seq *q = s->running[i];
        if (q->deadline > 0 && now >= q->deadline) {
            running_remove(s, q);
            release_blocks(s, q);
            q->state = TN_SEQ_DONE;
            st->expired[st->n_expired++] = q;
        }
    }
    for (tn_sched_seq *q = s->whead; q;) {
        tn_sched_seq *n = q->wnext;
        if (q->deadline > 0 && now >= q->deadline) {
            waiting_remove(s, q);
            q->state = TN_SEQ_DONE;
            st->expired[st->n_expired++] = q;
        }
        q = n;
    }

    int32_t budget = s->p.step_token_budget;

    /* 1. Decodes, oldest first. Victims are always newer than i, or i itself. */
    for (int32_t i = 0; i < s->n_running && budget > 0;) {
        tn_sched_seq *q = s->running[i];
        if (q->n_tokens - q->n_computed != 1) {
            i++;
            continue;
        }
        bool self_preempted = false;
        while (fit_and_alloc(s, q, 1) == 0) {
            tn_sched_seq *v = pick_victim(s);
            preempt(s, v, st);
            if (v == q) {
                self_preempted = true;
                break;
            }
        }
        if (self_preempted)
            continue; /* running[i] is now the next one */
        add_item(s, st, q, 1);
        budget--;
        i++;
    }

    /* 2. Running prefills, oldest first. */
    for (int32_t i = 0; i < s->n_running && budget > 0;) {
        tn_sched_seq *q = s->running[i];
        if (q->step_mark == s->step || q->n_tokens - q->n_computed <= 1) {
            i++;
            continue;
        }
        int32_t want = TN_MIN(q->n_tokens - q->n_computed, budget), got;
        bool self_preempted = false;
        while ((got = fit_and_alloc(s, q, want)) == 0) {
            tn_sched_seq *v = pick_victim(s);
            preempt(s, v, st);
            if (v == q) {
                self_preempted = true;
                break;
            }
        }
        if (self_preempted)
            continue;
        add_item(s, st, q, got);
        budget -= got;
        i++;
    }

    /* 3. Admissions, FCFS. Sequences preempted in this step wait a step. */
    while (s->whead && budget > 0 && s->n_running < s->p.max_running) {
        tn_sched_seq *q = s->whead;
        if (q->step_mark == s->step)
            break;
        prefix_lookup(s, q);
        int32_t want = TN_MIN(q->n_tokens - q->n_computed, budget);
        int32_t got = fit_and_alloc(s, q, want);
        if (got == 0) {
            s->prefix_queries -= (uint64_t)q->n_tokens; /* not admitted: the lookup does not count */
            s->prefix_hits -= (uint64_t)q->n_computed;
            release_blocks(s, q);
            break;
        }
        if (!q->admitted)
            q->n_cached = q->n_computed;
        q->admitted = true;
        waiting_remove(s, q);
        q->state = TN_SEQ_RUNNING;
        running_insert(s, q);
        add_item(s, st, q, got);
        budget -= got;
    }
}

/* Contract in sched.h. */
void tn_sched_commit(tn_sched *s, const tn_sched_step *st)
{
    const int32_t bs = s->p.block_size;
    for (int32_t i = 0; i < st->n_items; i++) {
        tn_sched_seq *q = st->items[i].seq;
        q->n_computed = st->items[i].pos0 + st->items[i].n;
        if (!s->p.prefix_cache)
            continue;
        int32_t full = q->n_computed / bs;
        if (full <= q->n_registered)
            continue;
        ensure_hashes(s, q, full);
        for (int32_t k = q->n_registered; k < full; k++)
            tn_blocks_set_hash(s->bm, q->table[k], q->block_hash[k], q->tokens + (size_t)k * bs);
        q->n_registered = full;
    }
}

/* Contract in sched.h. */
bool tn_sched_append(tn_sched *s, tn_sched_seq *q, int32_t token)
{
    if (q->n_tokens >= q->cap)
        return false;
    q->tokens[q->n_tokens++] = token;
    return true;
}

/* Contract in sched.h. */
void tn_sched_finish(tn_sched *s, tn_sched_seq *q)
{
    if (q->state == TN_SEQ_RUNNING) {
        running_remove(s, q);
        release_blocks(s, q);
    } else if (q->state == TN_SEQ_WAITING) {
        waiting_remove(s, q);
    }
    s->n_live--;
    seq_free_mem(q);
}

/* Contract in sched.h. */
tn_sched_seq *tn_sched_find(tn_sched *s, uint64_t id)
{
    for (int32_t i = 0; i < s->n_running; i++)
        if (s->running[i]->id == id)
            return s->running[i];
    for (tn_sched_seq *q = s->whead; q; q = q->wnext)
        if (q->id == id)
            return q;
    return NULL;
}

/* Contract in sched.h. */
tn_sched_seq *tn_sched_any(const tn_sched *s) { return s->n_running > 0 ? s->running[0] : s->whead; }

/* Contract in sched.h. */
void tn_sched_get_stats(const tn_sched *s, tn_sched_stats *out)
{
    out->n_running = s->n_running;
    out->n_waiting = s->n_waiting;
    out->blocks_total = tn_blocks_n_blocks(s->bm);
    out->blocks_used = tn_blocks_n_blocks(s->bm) - tn_blocks_n_free(s->bm);
    out->prefix_queries = s->prefix_queries;
    out->prefix_hits = s->prefix_hits;
    out->n_preemptions = s->n_preemptions;
}

const tn_blocks *tn_sched_blocks(const tn_sched *s) { return s->bm; }

tn_sched_seq *const *tn_sched_running(const tn_sched *s, int32_t *n)
{
    *n = s->n_running;
    return s->running;
}
