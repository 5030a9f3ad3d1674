/*
 * engine.c — the engine thread: requests in through a locked inbox, one
 * scheduler step and one batched forward call per iteration, tokens out
 * through callbacks.
 *
 * Key idea: everything that touches the model, the KV cache, the scheduler
 * and the samplers happens on the one engine thread; other threads only
 * append to the inbox or the cancel list (under e->mu) and read a stats
 * snapshot the engine thread publishes (also under e->mu). Callbacks are
 * called with no lock held, so a callback may call tn_engine_cancel or
 * tn_engine_get_stats.
 *
 * One iteration of the loop:
 *
 *     take the inbox and the cancel list            (locked)
 *     new requests -> tn_sched_add                  (prompt copied again, as tokens of the sequence)
 *     cancels -> tn_sched_finish + CANCELLED event  (blocks freed before the event)
 *     tn_sched_schedule(now)                        (expired ones -> CANCELLED "timeout")
 *     data-parallel group: one round (engine_dp.c)  (requests, cancels, events between the ranks;
 *                                                    STEP: forward even without items)
 *     for each item: tn_kv_seq_set_slots(lane, seq->slots, pos0 + n), batch rows
 *     tn_forward_run                                (one call for the whole step)
 *     tn_sched_commit; per sampled item: sample, stop checks, event, maybe finish
 *     publish stats                                 (locked)
 *
 * The step's buffers (batch rows, logits) are sized at tn_engine_new for
 * step_token_budget tokens and max_running logits rows, so the loop itself
 * allocates only when a request arrives (its sequence) and frees when it
 * ends.
 */
#include "engine/engine.h"

#include "engine/engine_int.h"

#include "base/pool.h"
#include "engine/sched.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct request {
    uint64_t id;
    tn_engine_cb cb;
    void *user;
    tn_sampler *sampler;
    int32_t *prompt;        /* (n_prompt) until handed to the scheduler */
    int32_t n_prompt;
    int32_t max_new;        /* max_tokens clipped to the context */
    int32_t *stop;          /* (n_stop) */
    int32_t n_stop;
    bool ignore_eos;
    int32_t top_logprobs;   /* -1: none */
    bool prompt_lp;         /* send prompt-token logprobs */
    int32_t next_plp;       /* next prompt position whose logprob is due (1 .. n_prompt) */
    double deadline;        /* absolute tn_time_s(); 0: none */
    int32_t n_generated;
    tn_sched_seq *seq;      /* once added */
    struct request *next;   /* inbox */
} request;

struct tn_engine {
    tn_engine_params p;     /* defaults resolved */
    int32_t n_vocab;
    tn_pool *pool;
    tn_kv_cache *kv;
    tn_forward *fwd;
    tn_sched *sched;

    /* Step buffers: (step_token_budget) rows, (logits_rows, n_vocab) logits.
     * logits_rows is max_running until the first request with prompt
     * logprobs arrives, then max_running + step_token_budget (every prompt
     * position of a step may want its row). */
    int32_t *b_tok, *b_pos, *b_seq, *b_slot;
    bool *b_want;
    float *logits;
    int32_t logits_rows;
    int32_t *row_item;      /* (max_running + step_token_budget) item index of each logits row */
    int32_t *row_pos;       /* (same) its position; the item's last one for a sampling row */

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* engine thread waits for work */
    pthread_cond_t idle_cv; /* tn_engine_wait_idle waits for idleness */

    /* Shared under mu. */
    request *in_head, *in_tail;
    int32_t n_inbox;
    uint64_t *cancels;      /* (cancel_cap) */
    int32_t n_cancels, cancel_cap;
    bool stop, draining;
    uint64_t next_id;
    tn_engine_stats pub;    /* published snapshot (n_waiting excludes the inbox) */
    tn_moe_stats *moe_pub;  /* routing statistics copied at each publish; NULL for a dense model */
    int32_t pub_live;       /* sequences in the scheduler */

    /* Engine thread only. */
    uint64_t *cancels_local;
    int32_t cancels_local_cap;
    uint64_t n_steps, n_empty_steps, prompt_tokens, generated_tokens;
    double forward_s, host_s; /* see tn_engine_stats */
    double last_fwd_end;      /* tn_time_s() when the last forward call with tokens returned; 0: the
                                 engine waited for work since (the next gap is idleness, not host time) */
    int32_t n_live;
    double moe_written_at;  /* when moe_stats_path was last written */

    /* Data-parallel group (engine_dp.c); NULL: one process. */
    tn__dp *dp;
    bool dp_wake;           /* under mu: rank 0 has requests or cancels for other ranks */
};

/* ==========================================================================
 * Requests and events
 * ======================================================================== */

static void request_free(request *r)
{
    if (!r)
        return;
    tn_sampler_free(r->sampler);
    free(r->prompt);
    free(r->stop);
    free(r);
}

static void event_init(tn_engine_event *ev, const request *r)
{
    memset(ev, 0, sizeof *ev);
    ev->id = r->id;
    ev->token = -1;
    ev->n_prompt = r->n_prompt;
    ev->n_cached = r->seq ? r->seq->n_cached : 0;
    ev->n_generated = r->n_generated;
}

static void emit(const request *r, const tn_engine_event *ev)
{
    if (r->cb)
        r->cb(r->user, ev);
}

static void publish(tn_engine *e, bool settled);

/* Sends r's final event without a token, removes its sequence and frees it.
 * The stats are published first, so the callback sees the blocks freed. */
static void finish_request(tn_engine *e, request *r, tn_finish why, const char *msg)
{
    tn_engine_event ev;
    event_init(&ev, r);
    ev.finish = why;
    ev.error = msg;
    if (r->seq) {
        tn_sched_finish(e->sched, r->seq);
        r->seq = NULL;
        e->n_live--;
        publish(e, false);
    }
    emit(r, &ev);
    request_free(r);
}

/* Log-softmax of row (n floats): logprob of tok and the top n_top tokens. */
static void fill_logprobs(const float *row, int32_t n, int32_t tok, int32_t n_top, tn_engine_event *ev)
{
    float mx = row[0];
    for (int32_t i = 1; i < n; i++)
        mx = row[i] > mx ? row[i] : mx;
    double sum = 0;
    for (int32_t i = 0; i < n; i++)
        sum += exp((double)(row[i] - mx));
    float lse = mx + (float)log(sum);
    ev->logprob = row[tok] - lse;
    n_top = TN_MIN(n_top, TN_MIN(n, TN_MAX_TOP_LOGPROBS));
    int32_t k = 0;
    for (int32_t i = 0; i < n; i++) {
        if (k == n_top && (n_top == 0 || row[i] <= row[ev->top_token[k - 1]]))
            continue;
        int32_t j = k < n_top ? k++ : k - 1;
        while (j > 0 && row[ev->top_token[j - 1]] < row[i]) {
            ev->top_token[j] = ev->top_token[j - 1];
            j--;
        }
        ev->top_token[j] = i;
    }
    ev->n_top = k;
    for (int32_t j = 0; j < k; j++)
        ev->top_logprob[j] = row[ev->top_token[j]] - lse;
}

/* ==========================================================================
 * The engine thread
 * ======================================================================== */

/* Copies the counters into the snapshot other threads read. settled: the
 * iteration's events have all been delivered, so idleness may be announced
 * (tn_engine_wait_idle must not return before the last final event). */
static void publish(tn_engine *e, bool settled)
{
    tn_sched_stats ss;
    tn_sched_get_stats(e->sched, &ss);
    pthread_mutex_lock(&e->mu);
    e->pub.n_running = ss.n_running;
    e->pub.n_waiting = ss.n_waiting;
    e->pub.kv_blocks_total = ss.blocks_total;
    e->pub.kv_blocks_used = ss.blocks_used;
    e->pub.prefix_queries = ss.prefix_queries;
    e->pub.prefix_hits = ss.prefix_hits;
    e->pub.n_preemptions = ss.n_preemptions;
    e->pub.prompt_tokens = e->prompt_tokens;
    e->pub.generated_tokens = e->generated_tokens;
    e->pub.n_steps = e->n_steps;
    e->pub.n_empty_steps = e->n_empty_steps;
    e->pub.forward_s = e->forward_s;
    e->pub.host_s = e->host_s;
    tn_pool_counters(e->pool, &e->pub.pool_jobs, &e->pub.pool_sleeps);
    if (e->moe_pub)
        tn_moe_stats_copy(e->moe_pub, tn_forward_moe_stats(e->fwd));
    if (settled) {
        e->pub_live = e->n_live;
        if (e->n_live == 0 && e->n_inbox == 0 && (!e->dp || tn__dp_remote_live(e->dp) == 0))
            pthread_cond_broadcast(&e->idle_cv);
    }
    pthread_mutex_unlock(&e->mu);
}

/* Hands a request from the inbox to the scheduler (or finishes it at once:
 * zero tokens to generate, or the scheduler refused it). */
static void admit(tn_engine *e, request *r, bool stopping)
{
    if (stopping) {
        finish_request(e, r, TN_FINISH_CANCELLED, "engine shutting down");
        return;
    }
    if (r->max_new == 0 && !r->prompt_lp) {
        finish_request(e, r, TN_FINISH_LENGTH, NULL);
        return;
    }
    if (r->prompt_lp && e->logits_rows < e->p.max_running + e->p.step_token_budget) {
        size_t rows = (size_t)e->p.max_running + (size_t)e->p.step_token_budget;
        float *l = realloc(e->logits, rows * (size_t)e->n_vocab * sizeof(float));
        if (!l) {
            finish_request(e, r, TN_FINISH_ERROR, "engine: out of memory for prompt-logprob rows");
            return;
        }
        e->logits = l;
        e->logits_rows = (int32_t)rows;
    }
    tn_sched_seq *q;
    if (tn_sched_add(e->sched, r->id, r->prompt, r->n_prompt, r->max_new, r->deadline, r, &q) != TN_OK) {
        finish_request(e, r, TN_FINISH_ERROR, tn_last_error());
        return;
    }
    q->no_prefix_lookup = r->prompt_lp && r->next_plp < r->n_prompt;
    r->seq = q;
    e->n_live++;
    e->prompt_tokens += (uint64_t)r->n_prompt;
    free(r->prompt);
    r->prompt = NULL;
}

/* Samples the next token of item it from its logits row; emits it and
 * finishes the request when a stop condition holds. */
static void sample_item(tn_engine *e, const tn_sched_item *it, const float *row)
{
    tn_sched_seq *q = it->seq;
    request *r = q->user;
    if (r->n_generated >= r->max_new) { /* max_tokens 0 with prompt logprobs: the prompt was all */
        finish_request(e, r, TN_FINISH_LENGTH, NULL);
        return;
    }
    int32_t tok = tn_sampler_sample(r->sampler, row);
    tn_sampler_accept(r->sampler, tok);
    tn_sched_append(e->sched, q, tok);
    r->n_generated++;
    e->generated_tokens++;

    tn_engine_event ev;
    event_init(&ev, r);
    ev.token = tok;
    if (r->top_logprobs >= 0)
        fill_logprobs(row, e->n_vocab, tok, r->top_logprobs, &ev);
    tn_finish why = TN_FINISH_NONE;
    if (!r->ignore_eos && e->p.vocab && tn_vocab_is_eog(e->p.vocab, tok))
        why = TN_FINISH_STOP;
    for (int32_t i = 0; i < r->n_stop && why == TN_FINISH_NONE; i++)
        if (r->stop[i] == tok)
            why = TN_FINISH_STOP;
    if (why == TN_FINISH_NONE && (r->n_generated >= r->max_new || q->n_tokens >= q->cap))
        why = TN_FINISH_LENGTH;
    ev.finish = why;
    if (why != TN_FINISH_NONE) {
        tn_sched_finish(e->sched, q);
        r->seq = NULL;
        e->n_live--;
        publish(e, false);
    }
    emit(r, &ev);
    if (why != TN_FINISH_NONE)
        request_free(r);
}

/* Sends the logprob of prompt token pos + 1, read from the logits row of
 * position pos. Once all are out, the sequence may use the prefix cache
 * again (if it is preempted and recomputed). */
static void prompt_logprob(tn_engine *e, request *r, int32_t pos, const float *row)
{
    tn_engine_event ev;
    event_init(&ev, r);
    ev.prompt_pos = pos + 1;
    ev.token = r->seq->tokens[pos + 1];
    fill_logprobs(row, e->n_vocab, ev.token, r->top_logprobs, &ev);
    r->next_plp = pos + 2;
    if (r->next_plp >= r->n_prompt)
        r->seq->no_prefix_lookup = false;
    emit(r, &ev);
}

/* A forward call without tokens: another rank of the data-parallel group
 * steps, and the collective exchanges inside the forward pass need every
 * rank. An error here is the group's (a lost rank): the link's fail ends
 * the process with it. */
static void run_empty_step(tn_engine *e)
{
    tn_batch b = {0};
    if (tn_forward_run(e->fwd, e->kv, e->pool, &b, NULL) != TN_OK)
        tn__dp_fail(e->dp, tn_last_error());
    e->n_empty_steps++;
}

/* Runs one planned step: batch, forward, commit, sampling. With no items
 * (a data-parallel step of other ranks) the forward call is empty. */
static void run_step(tn_engine *e, const tn_sched_step *st)
{
    int32_t n = 0, n_rows = 0;
    for (int32_t i = 0; i < st->n_items; i++) {
        const tn_sched_item *it = &st->items[i];
        tn_sched_seq *q = it->seq;
        tn_status s = tn_kv_seq_set_slots(e->kv, q->lane, q->slots, it->pos0 + it->n);
        if (s != TN_OK) {
            /* Only allocation can fail here; fail the request, keep the rest.
             * In a data-parallel group the other ranks step now: so do we. */
            finish_request(e, q->user, TN_FINISH_ERROR, tn_last_error());
            if (e->dp)
                run_empty_step(e);
            return;
        }
        const request *r = q->user;
        for (int32_t k = 0; k < it->n; k++, n++) {
            int32_t p = it->pos0 + k;
            bool plp = r->prompt_lp && p + 1 < q->n_prompt && p + 1 >= r->next_plp;
            e->b_tok[n] = q->tokens[p];
            e->b_pos[n] = p;
            e->b_seq[n] = q->lane;
            e->b_slot[n] = q->slots[p];
            e->b_want[n] = (it->sample && k == it->n - 1) || plp;
            if (e->b_want[n]) {
                e->row_item[n_rows] = i;
                e->row_pos[n_rows++] = p;
            }
        }
    }
    tn_batch b = {
        .n_tokens = n,
        .token = e->b_tok,
        .pos = e->b_pos,
        .seq_id = e->b_seq,
        .kv_slot = e->b_slot,
        .want_logits = e->b_want,
    };
    const double t0 = tn_time_s();
    tn_status s = tn_forward_run(e->fwd, e->kv, e->pool, &b, e->logits);
    if (n > 0) {
        const double t1 = tn_time_s();
        if (e->last_fwd_end > 0)
            e->host_s += t0 - e->last_fwd_end;
        e->forward_s += t1 - t0;
        e->last_fwd_end = t1;
        e->n_steps++;
    } else {
        e->n_empty_steps++;
    }
    if (s != TN_OK && e->dp)
        tn__dp_fail(e->dp, tn_last_error()); /* the group is out of step: a lost rank */
    if (s != TN_OK) {
        /* A malformed batch is a bug of ours; fail what was in it. */
        const char *msg = tn_last_error();
        for (int32_t i = 0; i < st->n_items; i++)
            finish_request(e, st->items[i].seq->user, TN_FINISH_ERROR, msg);
        return;
    }
    tn_sched_commit(e->sched, st);
    for (int32_t r = 0; r < n_rows; r++) {
        const tn_sched_item *it = &st->items[e->row_item[r]];
        const float *row = e->logits + (size_t)r * e->n_vocab;
        request *rq = it->seq->user;
        int32_t p = e->row_pos[r];
        if (rq->prompt_lp && p + 1 < it->seq->n_prompt && p + 1 >= rq->next_plp)
            prompt_logprob(e, rq, p, row);
        if (it->sample && p == it->pos0 + it->n - 1)
            sample_item(e, it, row);
    }
}

/* Writes the routing statistics to moe_stats_path (engine thread: it owns
 * the live tables). A failure is logged, not fatal. */
static void write_moe_stats(tn_engine *e)
{
    e->moe_written_at = tn_time_s();
    if (tn_moe_stats_write(tn_forward_moe_stats(e->fwd), e->p.moe_stats_path) != TN_OK)
        tn_log(TN_LOG_ERROR, "engine: %s\n", tn_last_error());
}

static void *engine_main(void *arg)
{
    tn_engine *e = arg;
    /* poll: make the next round at once. Ranks > 0 of a data-parallel
     * group never wait here: they wait inside the round for rank 0, which
     * paces the group (if they slept, rank 0's first round would wait for
     * them). */
    bool poll = e->dp && tn__dp_rank(e->dp) > 0;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stop && !e->in_head && e->n_cancels == 0 && e->n_live == 0 && !e->dp_wake && !poll) {
            e->last_fwd_end = 0; /* idle: the next gap is not host work */
            if (!e->dp) {
                pthread_cond_wait(&e->cv, &e->mu);
                continue;
            }
            /* Data-parallel: nothing anywhere; rank 0 makes a round at
             * least every hook_idle_s (the others wait in it). */
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            double t = (double)until.tv_sec + until.tv_nsec * 1e-9 + e->p.hook_idle_s;
            until.tv_sec = (time_t)t;
            until.tv_nsec = (long)((t - (double)until.tv_sec) * 1e9);
            if (pthread_cond_timedwait(&e->cv, &e->mu, &until) != 0)
                break;
        }
        e->dp_wake = false;
        request *in = e->in_head;
        e->in_head = e->in_tail = NULL;
        e->pub.n_waiting += e->n_inbox; /* they wait in the scheduler now */
        e->pub_live += e->n_inbox;      /* not idle until their events are out */
        e->n_inbox = 0;
        /* Swap the cancel list with our local one (no allocation here). */
        uint64_t *c = e->cancels;
        int32_t n_c = e->n_cancels, cap = e->cancel_cap;
        e->cancels = e->cancels_local;
        e->cancel_cap = e->cancels_local_cap;
        e->n_cancels = 0;
        e->cancels_local = c;
        e->cancels_local_cap = cap;
        bool stopping = e->stop;
        pthread_mutex_unlock(&e->mu);

        while (in) {
            request *r = in;
            in = in->next;
            r->next = NULL;
            admit(e, r, stopping);
        }
        for (int32_t i = 0; i < n_c; i++) {
            tn_sched_seq *q = tn_sched_find(e->sched, e->cancels_local[i]);
            if (q)
                finish_request(e, q->user, TN_FINISH_CANCELLED, "cancelled");
        }
        if (stopping) {
            tn_sched_seq *q;
            while ((q = tn_sched_any(e->sched)) != NULL)
                finish_request(e, q->user, TN_FINISH_CANCELLED, "engine shutting down");
            break;
        }

        tn_sched_step st;
        tn_sched_schedule(e->sched, tn_time_s(), &st);
        for (int32_t i = 0; i < st.n_expired; i++) {
            request *r = st.expired[i]->user;
            finish_request(e, r, TN_FINISH_CANCELLED, "timeout");
        }
        publish(e, false); /* running/waiting as planned, before callbacks run */
        if (e->dp) {
            int act = tn__dp_round(e->dp, e, st.n_items > 0);
            poll = act != TN__DP_IDLE;
            if (act == TN__DP_STEP)
                run_step(e, &st);
        } else if (st.n_items > 0) {
            run_step(e, &st);
        }
        publish(e, true);
        if (e->p.moe_stats_path && e->moe_pub && tn_time_s() - e->moe_written_at >= e->p.moe_stats_every_s)
            write_moe_stats(e);
    }
    publish(e, true);
    if (e->p.moe_stats_path && e->moe_pub)
        write_moe_stats(e);
    return NULL;
}

/* ==========================================================================
 * Public API
 * ======================================================================== */

/* Contract in engine.h. Resolves defaults, sizes the cache as blocks, and
 * starts the engine thread. */
tn_status tn_engine_new(const tn_engine_params *p, tn_engine **out)
{
    *out = NULL;
    if (!p || !p->model)
        return tn__err(TN_ERR_INVALID, "engine: model is NULL");
    tn_engine *e = calloc(1, sizeof *e);
    if (!e)
        return tn__err(TN_ERR_NOMEM, "engine: out of memory");
    e->p = *p;
    const tn_hparams *hp = &p->model->hp;
    e->n_vocab = hp->n_vocab;
    if (e->p.n_ctx <= 0)
        e->p.n_ctx = hp->n_ctx_train > 0 ? hp->n_ctx_train : 2048;
    if (e->p.block_size <= 0)
        e->p.block_size = 16;
    if (e->p.n_kv_slots <= 0)
        e->p.n_kv_slots = 4 * e->p.n_ctx;
    if (e->p.max_running <= 0)
        e->p.max_running = 64;
    if (e->p.step_token_budget <= 0)
        e->p.step_token_budget = 512;
    if (e->p.max_waiting <= 0)
        e->p.max_waiting = 256;
    if (!(e->p.hook_idle_s > 0))
        e->p.hook_idle_s = 1.0;
    if (!(e->p.moe_stats_every_s > 0))
        e->p.moe_stats_every_s = 10.0;
    int32_t n_blocks = e->p.n_kv_slots / e->p.block_size;
    tn_status s = TN_OK;
    if (p->link && (s = tn__dp_new(p->link, &e->dp)) != TN_OK) {
        free(e);
        return s;
    }
    if ((int64_t)n_blocks * e->p.block_size < e->p.n_ctx) {
        s = tn__err(TN_ERR_INVALID, "engine: n_kv_slots %d (%d blocks of %d) cannot hold one sequence of n_ctx %d",
                    e->p.n_kv_slots, n_blocks, e->p.block_size, e->p.n_ctx);
        tn__dp_free(e->dp);
        free(e);
        return s;
    }
    tn_sched_params sp = {
        .n_blocks = n_blocks,
        .block_size = e->p.block_size,
        .max_running = e->p.max_running,
        .step_token_budget = e->p.step_token_budget,
        .n_ctx = e->p.n_ctx,
        .prefix_cache = e->p.prefix_cache,
    };
    size_t B = (size_t)e->p.step_token_budget, R = (size_t)e->p.max_running;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    pthread_cond_init(&e->idle_cv, NULL);
    if ((s = tn_sched_new(&sp, &e->sched)) != TN_OK ||
        (s = tn_kv_new_typed(p->model, n_blocks * e->p.block_size, e->p.max_running, p->kv_type, &e->kv)) != TN_OK ||
        (s = tn_forward_new(p->model, e->p.step_token_budget, &e->fwd)) != TN_OK ||
        (s = tn_pool_new(e->p.n_threads, &e->pool)) != TN_OK ||
        (tn_forward_moe_stats(e->fwd) &&
         (s = tn_moe_stats_snapshot_new(tn_forward_moe_stats(e->fwd), &e->moe_pub)) != TN_OK))
        goto err;
    if (p->on_forward && (s = p->on_forward(p->hook_ud, e->fwd)) != TN_OK)
        goto err;
    e->b_tok = malloc(B * sizeof(int32_t));
    e->b_pos = malloc(B * sizeof(int32_t));
    e->b_seq = malloc(B * sizeof(int32_t));
    e->b_slot = malloc(B * sizeof(int32_t));
    e->b_want = malloc(B * sizeof(bool));
    e->row_item = malloc((R + B) * sizeof(int32_t));
    e->row_pos = malloc((R + B) * sizeof(int32_t));
    e->logits = malloc(R * (size_t)e->n_vocab * sizeof(float));
    e->logits_rows = (int32_t)R;
    e->cancel_cap = e->cancels_local_cap = 64;
    e->cancels = malloc((size_t)e->cancel_cap * sizeof(uint64_t));
    e->cancels_local = malloc((size_t)e->cancels_local_cap * sizeof(uint64_t));
    if (!e->b_tok || !e->b_pos || !e->b_seq || !e->b_slot || !e->b_want || !e->row_item || !e->row_pos || !e->logits ||
        !e->cancels || !e->cancels_local) {
        s = tn__err(TN_ERR_NOMEM, "engine: out of memory for step buffers");
        goto err;
    }
    e->next_id = 1;
    e->pub.kv_blocks_total = n_blocks;
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        s = tn__err(TN_ERR_NOMEM, "engine: cannot start the engine thread");
        goto err;
    }
    e->thread_started = true;
    *out = e;
    return TN_OK;
err:
    tn_engine_free(e);
    return s;
}

/* Contract in engine.h. */
void tn_engine_free(tn_engine *e)
{
    if (!e)
        return;
    if (e->thread_started) {
        pthread_mutex_lock(&e->mu);
        e->stop = true;
        pthread_cond_signal(&e->cv);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->thread, NULL);
    }
    for (request *r = e->in_head; r;) {
        request *n = r->next;
        request_free(r);
        r = n;
    }
    tn__dp_free(e->dp); /* rank 0: requests on other ranks get their final event */
    tn_sched_free(e->sched);
    tn_kv_free(e->kv);
    tn_forward_free(e->fwd);
    tn_pool_free(e->pool);
    free(e->b_tok);
    free(e->b_pos);
    free(e->b_seq);
    free(e->b_slot);
    free(e->b_want);
    free(e->row_item);
    free(e->row_pos);
    free(e->logits);
    free(e->cancels);
    free(e->cancels_local);
    tn_moe_stats_free(e->moe_pub);
    pthread_cond_destroy(&e->idle_cv);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

/* Checks r's fields; the message names the first bad one. */
static tn_status check_request(const tn_engine *e, const tn_request_params *r)
{
    if (!r)
        return tn__err(TN_ERR_INVALID, "request: params are NULL");
    if (r->n_prompt < 1 || !r->prompt)
        return tn__err(TN_ERR_INVALID, "request: the prompt is empty (need at least one token)");
    if (r->n_prompt > e->p.n_ctx)
        return tn__err(TN_ERR_INVALID, "request: prompt of %d tokens is longer than the context (%d)", r->n_prompt,
                       e->p.n_ctx);
    for (int32_t i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= e->n_vocab)
            return tn__err(TN_ERR_INVALID, "request: prompt token %d is %d, outside the vocabulary [0, %d)", i,
                           r->prompt[i], e->n_vocab);
    if (r->max_tokens < 0)
        return tn__err(TN_ERR_INVALID, "request: max_tokens %d is negative", r->max_tokens);
    if (r->n_stop_tokens < 0 || (r->n_stop_tokens > 0 && !r->stop_tokens))
        return tn__err(TN_ERR_INVALID, "request: %d stop tokens given without an array", r->n_stop_tokens);
    if (r->top_logprobs < -1 || r->top_logprobs > TN_MAX_TOP_LOGPROBS)
        return tn__err(TN_ERR_INVALID, "request: top_logprobs %d out of range [-1, %d]", r->top_logprobs,
                       TN_MAX_TOP_LOGPROBS);
    if (!(r->timeout_s >= 0) || isinf(r->timeout_s))
        return tn__err(TN_ERR_INVALID, "request: timeout_s must be a finite number >= 0");
    if (r->prompt_logprobs && r->top_logprobs < 0)
        return tn__err(TN_ERR_INVALID, "request: prompt_logprobs needs top_logprobs >= 0");
    if (r->n_logit_bias < 0 || (r->n_logit_bias > 0 && (!r->logit_bias_ids || !r->logit_bias)))
        return tn__err(TN_ERR_INVALID, "request: %d logit_bias entries given without arrays", r->n_logit_bias);
    return TN_OK;
}

/* Queues r here (returns TN_ERR_FULL, freeing r, when draining or full). */
static tn_status enqueue(tn_engine *e, request *r, uint64_t *id)
{
    pthread_mutex_lock(&e->mu);
    if (e->draining || e->stop) {
        pthread_mutex_unlock(&e->mu);
        request_free(r);
        return tn__err(TN_ERR_FULL, "engine: draining, not accepting requests");
    }
    if (e->pub.n_waiting + e->n_inbox >= e->p.max_waiting) {
        int32_t n = e->pub.n_waiting + e->n_inbox;
        pthread_mutex_unlock(&e->mu);
        request_free(r);
        return tn__err(TN_ERR_FULL, "engine: %d requests waiting (max_waiting %d)", n, e->p.max_waiting);
    }
    r->id = e->next_id++;
    if (e->in_tail)
        e->in_tail->next = r;
    else
        e->in_head = r;
    e->in_tail = r;
    e->n_inbox++;
    if (id)
        *id = r->id;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return TN_OK;
}

/* Rank 0 of a data-parallel group: r (checked and built, so that a bad
 * request fails here as in one process) runs here or, as rp, on the rank
 * tn__dp_pick chooses. */
static tn_status submit_routed(tn_engine *e, request *r, const tn_request_params *rp, tn_engine_cb cb, void *user,
                               uint64_t *id)
{
    pthread_mutex_lock(&e->mu);
    int32_t live = e->pub_live + e->n_inbox;
    int32_t waiting = e->pub.n_waiting + e->n_inbox;
    int32_t free_blocks = e->pub.kv_blocks_total - e->pub.kv_blocks_used;
    bool closed = e->draining || e->stop;
    pthread_mutex_unlock(&e->mu);
    if (closed) {
        request_free(r);
        return tn__err(TN_ERR_FULL, "engine: draining, not accepting requests");
    }
    /* Every rank runs the same parameters, so the front refuses (429) when
     * every queue is full, as one process would, rather than sending the
     * request to a rank that would fail it later. */
    int32_t rank = tn__dp_pick(e->dp, live, waiting, free_blocks, e->p.max_waiting);
    if (rank < 0) {
        request_free(r);
        return tn__err(TN_ERR_FULL, "engine: every rank has %d requests waiting (max_waiting)", e->p.max_waiting);
    }
    if (rank == 0)
        return enqueue(e, r, id);
    request_free(r);
    pthread_mutex_lock(&e->mu);
    uint64_t rid = e->next_id++;
    pthread_mutex_unlock(&e->mu);
    if (id)
        *id = rid;
    return tn__dp_submit(e->dp, e, rank, rid, rp, cb, user);
}

/* Contract in engine.h. Allocates the request (prompt copy, sampler) on the
 * caller's thread, then queues it under the lock. */
tn_status tn_engine_submit(tn_engine *e, const tn_request_params *rp, tn_engine_cb cb, void *user, uint64_t *id)
{
    tn_status s = check_request(e, rp);
    if (s != TN_OK)
        return s;
    request *r = calloc(1, sizeof *r);
    if (!r)
        return tn__err(TN_ERR_NOMEM, "engine: out of memory for a request");
    r->cb = cb;
    r->user = user;
    r->n_prompt = rp->n_prompt;
    r->max_new = TN_MIN(rp->max_tokens, e->p.n_ctx - rp->n_prompt);
    r->ignore_eos = rp->ignore_eos;
    r->top_logprobs = rp->top_logprobs;
    r->prompt_lp = rp->prompt_logprobs;
    r->next_plp = 1;
    r->n_stop = rp->n_stop_tokens;
    r->prompt = malloc((size_t)rp->n_prompt * sizeof(int32_t));
    r->stop = malloc((size_t)TN_MAX(rp->n_stop_tokens, 1) * sizeof(int32_t));
    if (!r->prompt || !r->stop) {
        request_free(r);
        return tn__err(TN_ERR_NOMEM, "engine: out of memory for a request of %d tokens", rp->n_prompt);
    }
    memcpy(r->prompt, rp->prompt, (size_t)rp->n_prompt * sizeof(int32_t));
    if (r->n_stop > 0)
        memcpy(r->stop, rp->stop_tokens, (size_t)r->n_stop * sizeof(int32_t));
    if ((s = tn_sampler_new(&rp->sample, e->n_vocab, &r->sampler)) != TN_OK) {
        request_free(r);
        return s;
    }
    if (rp->n_logit_bias > 0 &&
        (s = tn_sampler_set_logit_bias(r->sampler, rp->logit_bias_ids, rp->logit_bias, rp->n_logit_bias)) !=
            TN_OK) {
        request_free(r);
        return s;
    }
    for (int32_t i = 0; i < rp->n_prompt; i++)
        tn_sampler_accept(r->sampler, rp->prompt[i]);
    r->deadline = rp->timeout_s > 0 ? tn_time_s() + rp->timeout_s : 0;

    if (e->dp && tn__dp_rank(e->dp) == 0)
        return submit_routed(e, r, rp, cb, user, id);
    return enqueue(e, r, id);
}

/* Contract in engine.h. If the cancel list cannot grow, the id is dropped
 * with a log line (the request still ends by itself). */
void tn_engine_cancel(tn_engine *e, uint64_t id)
{
    if (e->dp && tn__dp_cancel(e->dp, e, id))
        return;
    pthread_mutex_lock(&e->mu);
    if (e->n_cancels == e->cancel_cap) {
        uint64_t *c = realloc(e->cancels, (size_t)e->cancel_cap * 2 * sizeof(uint64_t));
        if (!c) {
            pthread_mutex_unlock(&e->mu);
            tn_log(TN_LOG_ERROR, "engine: out of memory: cancel of request %llu dropped", (unsigned long long)id);
            return;
        }
        e->cancels = c;
        e->cancel_cap *= 2;
    }
    e->cancels[e->n_cancels++] = id;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

/* Contract in engine.h. */
void tn_engine_drain(tn_engine *e)
{
    pthread_mutex_lock(&e->mu);
    e->draining = true;
    pthread_mutex_unlock(&e->mu);
}

/* Contract in engine.h. */
bool tn_engine_wait_idle(tn_engine *e, double timeout_s)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    if (timeout_s > 0) {
        double t = (double)until.tv_sec + until.tv_nsec * 1e-9 + timeout_s;
        until.tv_sec = (time_t)t;
        until.tv_nsec = (long)((t - (double)until.tv_sec) * 1e9);
    }
    pthread_mutex_lock(&e->mu);
    bool idle;
    while (!(idle = e->pub_live == 0 && e->n_inbox == 0 && (!e->dp || tn__dp_remote_live(e->dp) == 0))) {
        if (timeout_s > 0) {
            if (pthread_cond_timedwait(&e->idle_cv, &e->mu, &until) != 0) {
                idle = e->pub_live == 0 && e->n_inbox == 0 && (!e->dp || tn__dp_remote_live(e->dp) == 0);
                break;
            }
        } else {
            pthread_cond_wait(&e->idle_cv, &e->mu);
        }
    }
    pthread_mutex_unlock(&e->mu);
    return idle;
}

/* Contract in engine.h. */
void tn_engine_get_stats(tn_engine *e, tn_engine_stats *out)
{
    pthread_mutex_lock(&e->mu);
    *out = e->pub;
    out->n_waiting += e->n_inbox;
    pthread_mutex_unlock(&e->mu);
    if (!e->dp || tn__dp_rank(e->dp) != 0)
        return;
    tn__dp_add_stats(e->dp, out); /* rank 0 of a data-parallel group: the sum over the ranks */
}

/* Contract in engine.h. */
int32_t tn_engine_get_rank_stats(tn_engine *e, tn_engine_rank_stats *out, int32_t max)
{
    tn_engine_stats st;
    int32_t live;
    tn__engine_local(e, &st, &live);
    if (!e->dp) {
        if (max > 0)
            out[0] = (tn_engine_rank_stats){.st = st, .n_live = live, .n_routed = 0};
        return 1;
    }
    return tn__dp_rank_stats(e->dp, &st, live, out, max);
}

/* Contract in engine.h. */
void tn_engine_wait_done(tn_engine *e)
{
    if (e->dp && tn__dp_rank(e->dp) > 0)
        tn__dp_wait_done(e->dp);
}

/* Contract in engine_int.h. */
void tn__engine_wake(tn_engine *e)
{
    pthread_mutex_lock(&e->mu);
    e->dp_wake = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

/* Contract in engine_int.h. */
void tn__engine_local(tn_engine *e, tn_engine_stats *st, int32_t *n_live)
{
    pthread_mutex_lock(&e->mu);
    *st = e->pub;
    st->n_waiting += e->n_inbox;
    *n_live = e->pub_live + e->n_inbox;
    pthread_mutex_unlock(&e->mu);
}

/* Contract in engine_int.h. */
void tn__engine_stop(tn_engine *e)
{
    pthread_mutex_lock(&e->mu);
    e->stop = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

/* Contract in engine.h. */
tn_status tn_engine_moe_stats(tn_engine *e, tn_moe_stats **out)
{
    *out = NULL;
    if (!e->moe_pub)
        return TN_OK;
    tn_status s = tn_moe_stats_snapshot_new(e->moe_pub, out);
    if (s != TN_OK)
        return s;
    pthread_mutex_lock(&e->mu);
    tn_moe_stats_copy(*out, e->moe_pub);
    pthread_mutex_unlock(&e->mu);
    return TN_OK;
}
