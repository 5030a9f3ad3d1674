/*
 * test_engine_dp.c — data-parallel engines (engine.h, "Data-parallel
 * engines") in one process: three engines, one per thread "rank", joined
 * by a link made of pthread barriers instead of MPI, on the real
 * stories260K model.
 *
 * Key idea: at temperature 0 a request's tokens are a function of its
 * prompt alone, so every request submitted to rank 0 must continue as
 * llama2.c's greedy reference does (expected-greedy-t0.tokens.derived.txt),
 * whichever rank's engine ran it. Around that: requests spread over all
 * ranks, the counters add up, cancel and timeout reach the owning rank, a
 * bad request fails at submit on rank 0, and freeing rank 0 ends what
 * still runs elsewhere and stops the other engines.
 */
#include "engine/engine.h"
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MODEL_PATH TN_SHARED_DATA "models/stories260K/stories260K.v3.derived.gguf"
#define TOKENS_PATH TN_SHARED_DATA "models/stories260K/expected-greedy-t0.tokens.derived.txt"
#define N_GOLD 257
#define MAX_OUT 256
#define N_RANKS 3

static int32_t g_gold[N_GOLD]; /* BOS then 256 greedy tokens */
static tn_model *g_model;
static int32_t g_max_running, g_max_waiting; /* every rank's engine limits (0: defaults) */
static tn_vocab *g_vocab;

static int setup(void **state)
{
    if (tn_test_read_ints(TOKENS_PATH, g_gold, N_GOLD) != N_GOLD || tn_model_load(MODEL_PATH, &g_model) != TN_OK ||
        tn_vocab_from_gguf(g_model->gguf, &g_vocab) != TN_OK)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    tn_vocab_free(g_vocab);
    tn_model_free(g_model);
    return 0;
}

/* ==========================================================================
 * A link over threads: each collective is two barriers around copies out
 * of the other ranks' buffers.
 * ======================================================================== */

typedef struct tgroup {
    pthread_barrier_t bar;
    const unsigned char *send[N_RANKS];
    const size_t *sc[N_RANKS], *sd[N_RANKS];
    int64_t n_rounds; /* all-gathers made by rank 0 */
} tgroup;

typedef struct trank {
    tgroup *g;
    int rank;
    tn_engine_link link;
    tn_engine *e;
    pthread_t thread;
} trank;

static tn_status t_allgather(void *ud, const void *send, size_t bytes, void *recv)
{
    trank *t = ud;
    t->g->send[t->rank] = send;
    pthread_barrier_wait(&t->g->bar);
    for (int r = 0; r < N_RANKS; r++)
        memcpy((unsigned char *)recv + (size_t)r * bytes, t->g->send[r], bytes);
    if (t->rank == 0)
        t->g->n_rounds++;
    pthread_barrier_wait(&t->g->bar);
    return TN_OK;
}

static tn_status t_alltoallv(void *ud, const void *send, const size_t *sc, const size_t *sd, void *recv,
                             const size_t *rc, const size_t *rd)
{
    trank *t = ud;
    tgroup *g = t->g;
    g->send[t->rank] = send;
    g->sc[t->rank] = sc;
    g->sd[t->rank] = sd;
    pthread_barrier_wait(&g->bar);
    for (int r = 0; r < N_RANKS; r++) {
        if (g->sc[r][t->rank] != rc[r]) {
            fprintf(stderr, "rank %d expects %zu bytes from rank %d, which sends %zu\n", t->rank, rc[r], r,
                    g->sc[r][t->rank]);
            abort();
        }
        memcpy((unsigned char *)recv + rd[r], g->send[r] + g->sd[r][t->rank], rc[r]);
    }
    pthread_barrier_wait(&g->bar);
    return TN_OK;
}

static void t_fail(void *ud, const char *why)
{
    fprintf(stderr, "rank %d: link failed: %s\n", ((trank *)ud)->rank, why);
    abort(); /* the contract: fail does not return */
}

static tn_engine_params params(trank *t)
{
    tn_engine_params p;
    memset(&p, 0, sizeof p);
    p.model = g_model;
    p.vocab = g_vocab;
    p.n_threads = 1;
    p.n_ctx = 256;
    p.prefix_cache = true;
    p.link = &t->link;
    p.hook_idle_s = 0.05;
    p.max_running = g_max_running;
    p.max_waiting = g_max_waiting;
    return p;
}

/* Ranks > 0: an engine fed by rank 0 until rank 0 ends the group. */
static void *rank_main(void *arg)
{
    trank *t = arg;
    tn_engine_params p = params(t);
    if (tn_engine_new(&p, &t->e) != TN_OK) {
        fprintf(stderr, "rank %d: %s\n", t->rank, tn_last_error());
        abort();
    }
    tn_engine_wait_done(t->e);
    tn_engine_free(t->e);
    return NULL;
}

typedef struct group {
    tgroup g;
    trank r[N_RANKS];
} group;

/* Starts ranks 1.. on threads and returns rank 0's engine. */
static tn_engine *group_start(group *G)
{
    memset(G, 0, sizeof *G);
    pthread_barrier_init(&G->g.bar, NULL, N_RANKS);
    for (int r = 0; r < N_RANKS; r++) {
        trank *t = &G->r[r];
        t->g = &G->g;
        t->rank = r;
        t->link = (tn_engine_link){.rank = r, .size = N_RANKS, .ud = t, .allgather = t_allgather,
                                   .alltoallv = t_alltoallv, .fail = t_fail};
        if (r > 0)
            assert_int_equal(pthread_create(&t->thread, NULL, rank_main, t), 0);
    }
    tn_engine_params p = params(&G->r[0]);
    if (tn_engine_new(&p, &G->r[0].e) != TN_OK)
        fail_msg("rank 0: %s", tn_last_error());
    return G->r[0].e;
}

/* Frees rank 0's engine, ends the group, joins the other ranks. */
static void group_stop(group *G)
{
    tn_engine_free(G->r[0].e);
    assert_int_equal(tn_engine_link_done(&G->r[0].link), TN_OK);
    for (int r = 1; r < N_RANKS; r++)
        pthread_join(G->r[r].thread, NULL);
    pthread_barrier_destroy(&G->g.bar);
}

/* ==========================================================================
 * Requests
 * ======================================================================== */

typedef struct collect {
    int32_t tok[MAX_OUT];
    int32_t n;
    int n_final;
    tn_finish finish;
    char reason[128];
    int32_t n_top, top0;
    tn_engine *e;
    int32_t cancel_at;    /* > 0: cancel itself after this many tokens */
    double sleep_first_s; /* > 0: sleep in the first token's callback (rank 0's engine thread) */
    atomic_int *hold;     /* non-NULL: the first token's callback waits while *hold is set */
} collect;

static void on_event(void *user, const tn_engine_event *ev)
{
    collect *c = user;
    if (ev->token >= 0 && c->n < MAX_OUT) {
        c->tok[c->n++] = ev->token;
        c->n_top = ev->n_top;
        c->top0 = ev->n_top > 0 ? ev->top_token[0] : -1;
    }
    if (ev->finish != TN_FINISH_NONE) {
        c->n_final++;
        c->finish = ev->finish;
        snprintf(c->reason, sizeof c->reason, "%s", ev->error ? ev->error : "");
        return;
    }
    if (c->cancel_at > 0 && c->n == c->cancel_at)
        tn_engine_cancel(c->e, ev->id);
    while (c->hold && c->n == 1 && atomic_load(c->hold)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    if (c->sleep_first_s > 0 && c->n == 1) {
        struct timespec ts = {0, (long)(c->sleep_first_s * 1e9)};
        nanosleep(&ts, NULL);
    }
}

static tn_request_params greedy(int32_t n_prompt, int32_t max_tokens)
{
    tn_request_params r;
    memset(&r, 0, sizeof r);
    r.prompt = g_gold;
    r.n_prompt = n_prompt;
    r.max_tokens = max_tokens;
    r.sample = tn_sample_params_default();
    r.sample.temperature = 0.0f;
    r.ignore_eos = true;
    r.top_logprobs = -1;
    return r;
}

static void submit(tn_engine *e, const tn_request_params *r, collect *c)
{
    c->e = e;
    if (tn_engine_submit(e, r, on_event, c, NULL) != TN_OK)
        fail_msg("submit: %s", tn_last_error());
}

/* ==========================================================================
 * Tests
 * ======================================================================== */

enum { N_REQ = 9, OUT = 24 };

/* Nine requests at once (prompts of the reference's first 4..12 tokens,
 * one with top logprobs): each continues exactly as the reference, every
 * rank ran some, and rank 0's counters are the sums of the ranks'. */
static void test_greedy_spread(void **state)
{
    group G;
    tn_engine *e = group_start(&G);
    static collect c[N_REQ];
    memset(c, 0, sizeof c);
    for (int i = 0; i < N_REQ; i++) {
        tn_request_params r = greedy(4 + i, OUT);
        if (i == 4)
            r.top_logprobs = 3;
        submit(e, &r, &c[i]);
    }
    assert_true(tn_engine_wait_idle(e, 120.0));
    for (int i = 0; i < N_REQ; i++) {
        if (c[i].n_final != 1 || c[i].finish != TN_FINISH_LENGTH || c[i].n != OUT)
            fail_msg("request %d: %d final events, finish %d, %d tokens", i, c[i].n_final, c[i].finish, c[i].n);
        for (int k = 0; k < OUT; k++)
            if (c[i].tok[k] != g_gold[4 + i + k])
                fail_msg("request %d: token %d is %d, the reference says %d", i, k, c[i].tok[k], g_gold[4 + i + k]);
    }
    assert_int_equal(c[4].n_top, 3);
    assert_int_equal(c[4].top0, g_gold[4 + 4 + OUT - 1]); /* greedy: the top token */

    tn_engine_rank_stats rs[N_RANKS];
    assert_int_equal(tn_engine_get_rank_stats(e, rs, N_RANKS), N_RANKS);
    uint64_t routed = 0, gen = 0;
    for (int r = 0; r < N_RANKS; r++) {
        if (rs[r].n_routed < 2 || rs[r].st.generated_tokens != rs[r].n_routed * OUT || rs[r].n_live != 0)
            fail_msg("rank %d: %llu routed, %llu tokens generated, %d live", r, (unsigned long long)rs[r].n_routed,
                     (unsigned long long)rs[r].st.generated_tokens, rs[r].n_live);
        routed += rs[r].n_routed;
        gen += rs[r].st.generated_tokens;
    }
    assert_int_equal(routed, N_REQ);
    tn_engine_stats all;
    tn_engine_get_stats(e, &all);
    assert_int_equal(all.generated_tokens, gen);
    assert_int_equal(all.generated_tokens, N_REQ * OUT);
    assert_int_equal(all.kv_blocks_total, 3 * rs[0].st.kv_blocks_total);
    group_stop(&G);
}

/* Cancel from the callback and a timeout both reach the rank that runs the
 * request (three at once: one lands on each rank); a bad request fails at
 * submit on rank 0 without reaching any rank. */
static void test_cancel_timeout_errors(void **state)
{
    group G;
    tn_engine *e = group_start(&G);
    collect c[N_RANKS];
    memset(c, 0, sizeof c);
    for (int i = 0; i < N_RANKS; i++) {
        tn_request_params r = greedy(5, 200);
        c[i].cancel_at = 3;
        submit(e, &r, &c[i]);
    }
    assert_true(tn_engine_wait_idle(e, 120.0));
    for (int i = 0; i < N_RANKS; i++) {
        assert_int_equal(c[i].finish, TN_FINISH_CANCELLED);
        assert_string_equal(c[i].reason, "cancelled");
        assert_true(c[i].n >= 3 && c[i].n < 200);
    }
    tn_engine_rank_stats rs[N_RANKS];
    tn_engine_get_rank_stats(e, rs, N_RANKS);
    for (int r = 0; r < N_RANKS; r++)
        assert_int_equal(rs[r].n_routed, 1);

    /* Three with a 50 ms timeout whose first token's callback takes 150 ms:
     * each rank's scheduler expires its own. */
    collect t[N_RANKS];
    memset(t, 0, sizeof t);
    for (int i = 0; i < N_RANKS; i++) {
        tn_request_params r = greedy(6, 100);
        r.timeout_s = 0.05;
        t[i].sleep_first_s = 0.15;
        submit(e, &r, &t[i]);
    }
    assert_true(tn_engine_wait_idle(e, 120.0));
    for (int i = 0; i < N_RANKS; i++) {
        assert_int_equal(t[i].finish, TN_FINISH_CANCELLED);
        assert_string_equal(t[i].reason, "timeout");
        assert_true(t[i].n >= 1 && t[i].n < 100);
    }
    tn_engine_get_rank_stats(e, rs, N_RANKS);
    for (int r = 0; r < N_RANKS; r++)
        assert_int_equal(rs[r].n_routed, 2);

    tn_request_params r = greedy(5, 10);
    int32_t bad[3] = {1, 999999, 2};
    r.prompt = bad;
    r.n_prompt = 3;
    uint64_t id;
    assert_int_equal(tn_engine_submit(e, &r, on_event, &t[0], &id), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "outside the vocabulary"));
    group_stop(&G);
}

/* max_running = max_waiting = 1 on every rank. With rank 0's engine thread
 * held in the first request's callback (no rounds, so rank 0's picture of
 * the other ranks stays as it was), rank 0 queues one request per rank and
 * then refuses with TN_ERR_FULL at submit, as one process does (serve
 * turns it into 429), instead of routing a request to a full rank that
 * would fail it later. Every accepted request then runs to the end. */
static void test_queue_full(void **state)
{
    g_max_running = 1;
    g_max_waiting = 1;
    group G;
    tn_engine *e = group_start(&G);
    enum { MAX = 8 };
    collect c[MAX];
    memset(c, 0, sizeof c);
    tn_request_params r = greedy(5, 40);
    atomic_int hold;
    atomic_init(&hold, 1);
    c[0].hold = &hold;
    submit(e, &r, &c[0]);
    for (int i = 0; i < 20000 && c[0].n == 0; i++) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(c[0].n, 1); /* its callback now waits on rank 0's engine thread */
    int n = 1;
    tn_status st = TN_OK;
    while (n < MAX && (st = tn_engine_submit(e, &r, on_event, &c[n], NULL)) == TN_OK)
        c[n++].e = e;
    assert_int_equal(st, TN_ERR_FULL);
    assert_non_null(strstr(tn_last_error(), "every rank"));
    assert_int_equal(n, 1 + N_RANKS);
    atomic_store(&hold, 0);
    assert_true(tn_engine_wait_idle(e, 120.0));
    for (int i = 0; i < n; i++) {
        assert_int_equal(c[i].finish, TN_FINISH_LENGTH);
        assert_int_equal(c[i].n, 40);
        assert_memory_equal(c[i].tok, g_gold + 5, 40 * sizeof(int32_t));
    }
    tn_engine_rank_stats rs[N_RANKS];
    tn_engine_get_rank_stats(e, rs, N_RANKS);
    uint64_t routed = 0;
    for (int k = 0; k < N_RANKS; k++) {
        assert_true(rs[k].n_routed >= 1);
        routed += rs[k].n_routed;
    }
    assert_int_equal(routed, (uint64_t)n);
    group_stop(&G);
    g_max_running = g_max_waiting = 0;
}

/* Freeing rank 0 while requests run on every rank: each gets one final
 * CANCELLED event, and the other engines stop (their threads join). */
static void test_shutdown(void **state)
{
    group G;
    tn_engine *e = group_start(&G);
    collect c[N_RANKS];
    memset(c, 0, sizeof c);
    for (int i = 0; i < N_RANKS; i++) {
        tn_request_params r = greedy(5, 250);
        submit(e, &r, &c[i]);
    }
    tn_engine_rank_stats rs[N_RANKS];
    for (int k = 0; k < 2000; k++) { /* until every rank has generated something */
        tn_engine_get_rank_stats(e, rs, N_RANKS);
        if (rs[1].st.generated_tokens > 0 && rs[2].st.generated_tokens > 0 && rs[0].st.generated_tokens > 0)
            break;
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    group_stop(&G); /* asserts the others stop */
    for (int i = 0; i < N_RANKS; i++) {
        assert_int_equal(c[i].n_final, 1);
        assert_int_equal(c[i].finish, TN_FINISH_CANCELLED);
        assert_string_equal(c[i].reason, "engine shutting down");
        assert_true(c[i].n > 0 && c[i].n < 250);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_spread),
        cmocka_unit_test(test_cancel_timeout_errors),
        cmocka_unit_test(test_queue_full),
        cmocka_unit_test(test_shutdown),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
