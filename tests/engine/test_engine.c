/*
 * test_engine.c — the serving engine on the real stories260K model: batch
 * invariance, the prefix cache, preemption, cancel, timeout, limits, drain.
 *
 * Key idea: at temperature 0 a request's tokens are a function of its
 * prompt alone. The reference is llama2.c's greedy continuation of BOS
 * (expected-greedy-t0.tokens.derived.txt): a prompt made of its first k
 * tokens must continue with token k, k+1, ... exactly, however the batch
 * around it is composed, however its prefill is chunked, whether its prefix
 * came from the cache, and whether it was preempted and recomputed. Other
 * requests are checked against their own output when alone.
 */
#include "engine/engine.h"
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MODEL_PATH TN_SHARED_DATA "models/stories260K/stories260K.v3.derived.gguf"
#define TOKENS_PATH TN_SHARED_DATA "models/stories260K/expected-greedy-t0.tokens.derived.txt"
#define N_GOLD 257
#define MAX_OUT 256

static int32_t g_gold[N_GOLD]; /* BOS then 256 greedy tokens */
static tn_model *g_model;
static tn_vocab *g_vocab;

/* ==========================================================================
 * Helpers
 * ======================================================================== */

static int setup(void **state)
{
    if (tn_test_read_ints(TOKENS_PATH, g_gold, N_GOLD) != N_GOLD)
        return -1;
    if (tn_model_load(MODEL_PATH, &g_model) != TN_OK)
        return -1;
    if (tn_vocab_from_gguf(g_model->gguf, &g_vocab) != TN_OK)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    tn_vocab_free(g_vocab);
    tn_model_free(g_model);
    return 0;
}

/* What a request's callback saw. Written on the engine thread, read by the
 * test after tn_engine_wait_idle (which synchronizes through the engine's
 * lock). */
/* A gate stops the engine thread inside a request's first-token callback
 * until the test opens it, so the test can queue more requests while that
 * one is known to be running: which requests share a step then does not
 * depend on how the threads happen to be scheduled. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open, reached;
} gate;

#define GATE_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false}

/* Engine thread: announce the gate is reached, wait until it opens. */
static void gate_hold(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->reached = true;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

/* Test thread: wait until the engine thread stands at the gate. */
static void gate_wait_reached(gate *g)
{
    pthread_mutex_lock(&g->mu);
    while (!g->reached)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

typedef struct collect {
    int32_t tok[MAX_OUT];
    int32_t n;
    int n_final;
    tn_finish finish;
    int32_t n_cached, n_generated;
    char reason[64];
    /* Hooks. */
    tn_engine *e;
    int32_t cancel_at;       /* > 0: cancel itself when this many tokens were seen */
    double sleep_first_s;    /* > 0: sleep this long in the first token's callback */
    struct gate *gate;       /* non-NULL: block in the first callback until the gate opens */
    int32_t blocks_used_at_final;
} collect;

static void on_event(void *user, const tn_engine_event *ev)
{
    collect *c = user;
    if (ev->token >= 0 && c->n < MAX_OUT)
        c->tok[c->n++] = ev->token;
    c->n_cached = ev->n_cached;
    c->n_generated = ev->n_generated;
    if (ev->finish != TN_FINISH_NONE) {
        tn_engine_stats st;
        c->n_final++;
        c->finish = ev->finish;
        snprintf(c->reason, sizeof c->reason, "%s", ev->error ? ev->error : "");
        tn_engine_get_stats(c->e, &st);
        c->blocks_used_at_final = st.kv_blocks_used;
        return;
    }
    if (c->cancel_at > 0 && c->n == c->cancel_at)
        tn_engine_cancel(c->e, ev->id);
    if (c->sleep_first_s > 0 && c->n == 1)
        usleep((useconds_t)(c->sleep_first_s * 1e6));
    if (c->gate && c->n == 1)
        gate_hold(c->gate);
}

static tn_engine_params base_params(void)
{
    tn_engine_params p;
    memset(&p, 0, sizeof p);
    p.model = g_model;
    p.vocab = g_vocab;
    p.n_threads = 1;
    p.n_ctx = 256;
    p.prefix_cache = true;
    return p;
}

static tn_engine *make_engine(const tn_engine_params *p)
{
    tn_engine *e = NULL;
    if (tn_engine_new(p, &e) != TN_OK)
        fail_msg("engine: %s", tn_last_error());
    return e;
}

static tn_request_params greedy(const int32_t *prompt, int32_t n, int32_t max_tokens)
{
    tn_request_params r;
    memset(&r, 0, sizeof r);
    r.prompt = prompt;
    r.n_prompt = n;
    r.max_tokens = max_tokens;
    r.sample = tn_sample_params_default();
    r.sample.temperature = 0.0f;
    r.ignore_eos = true;
    r.top_logprobs = -1;
    return r;
}

static uint64_t submit(tn_engine *e, const tn_request_params *r, collect *c)
{
    uint64_t id = 0;
    c->e = e;
    if (tn_engine_submit(e, r, on_event, c, &id) != TN_OK)
        fail_msg("submit: %s", tn_last_error());
    return id;
}

static void wait_idle(tn_engine *e)
{
    assert_true(tn_engine_wait_idle(e, 120.0));
}

/* The "other" prompts: BOS and a later stretch of the story, of varied
 * lengths, so none shares a full block with the golden prompt. */
static int32_t other_prompt(int j, int32_t *out)
{
    int32_t n = 3 + 5 * j;
    out[0] = 1;
    memcpy(out + 1, g_gold + 100 + 9 * j, (size_t)(n - 1) * sizeof(int32_t));
    return n;
}

/* Asserts c generated exactly want[0..n) and finished by length. */
static void assert_tokens(const collect *c, const int32_t *want, int32_t n, const char *what)
{
    if (c->n_final != 1 || c->finish != TN_FINISH_LENGTH || c->n != n)
        fail_msg("%s: %d final events, finish %d, %d tokens (want 1, LENGTH, %d)", what, c->n_final, c->finish,
                 c->n, n);
    for (int32_t i = 0; i < n; i++)
        if (c->tok[i] != want[i])
            fail_msg("%s: token %d is %d, want %d", what, i, c->tok[i], want[i]);
}

/* ==========================================================================
 * Batch invariance
 * ======================================================================== */

enum { GOLD_PROMPT = 20, GOLD_OUT = 60, OTHER_OUT = 40, N_OTHERS = 8 };

/* The golden prompt continues as llama2.c says, alone and with 1..8 other
 * requests in the batch, under token budgets that chunk the prefills
 * differently (1 token a step up to everything at once); the others equal
 * their own output alone. */
static void test_batch_invariance(void **state)
{
    int32_t others[N_OTHERS][64], n_other[N_OTHERS];
    int32_t alone[N_OTHERS][OTHER_OUT];
    for (int j = 0; j < N_OTHERS; j++)
        n_other[j] = other_prompt(j, others[j]);

    /* References: each other prompt alone, one at a time. */
    tn_engine_params p = base_params();
    tn_engine *e = make_engine(&p);
    for (int j = 0; j < N_OTHERS; j++) {
        collect c = {0};
        tn_request_params r = greedy(others[j], n_other[j], OTHER_OUT);
        submit(e, &r, &c);
        wait_idle(e);
        assert_int_equal(c.n, OTHER_OUT);
        memcpy(alone[j], c.tok, sizeof alone[j]);
    }
    /* The golden prompt alone. */
    collect g = {0};
    tn_request_params rg = greedy(g_gold, GOLD_PROMPT, GOLD_OUT);
    submit(e, &rg, &g);
    wait_idle(e);
    assert_tokens(&g, g_gold + GOLD_PROMPT, GOLD_OUT, "golden prompt alone");
    tn_engine_free(e);

    static const int32_t budgets[] = {1, 5, 16, 64, 512};
    for (size_t bi = 0; bi < TN_ARRAY_LEN(budgets); bi++) {
        for (int k = 1; k <= N_OTHERS; k++) {
            if (budgets[bi] == 1 && k > 2)
                continue; /* one token a step: keep the test short */
            p = base_params();
            p.step_token_budget = budgets[bi];
            p.prefix_cache = (k & 1) == 0;
            e = make_engine(&p);
            collect cg = {0}, co[N_OTHERS];
            memset(co, 0, sizeof co);
            /* The golden request in the middle of the arrivals. */
            for (int j = 0; j < k; j++) {
                if (j == k / 2)
                    submit(e, &rg, &cg);
                tn_request_params r = greedy(others[j], n_other[j], OTHER_OUT);
                submit(e, &r, &co[j]);
            }
            wait_idle(e);
            char what[96];
            snprintf(what, sizeof what, "golden prompt, budget %d, %d others", budgets[bi], k);
            assert_tokens(&cg, g_gold + GOLD_PROMPT, GOLD_OUT, what);
            for (int j = 0; j < k; j++) {
                snprintf(what, sizeof what, "other %d, budget %d, %d others", j, budgets[bi], k);
                assert_tokens(&co[j], alone[j], OTHER_OUT, what);
            }
            tn_engine_stats st;
            tn_engine_get_stats(e, &st);
            assert_int_equal(st.kv_blocks_used, 0);
            assert_int_equal(st.n_running, 0);
            assert_int_equal(st.generated_tokens, GOLD_OUT + (uint64_t)k * OTHER_OUT);
            tn_engine_free(e);
        }
    }
}

/* ==========================================================================
 * Step timing
 * ======================================================================== */

/* forward_s and host_s grow while a request decodes, and host_s leaves out
 * the time the engine waited for work between two requests. */
static void test_step_times(void **state)
{
    enum { NP = 8, NO = 12 };
    (void)state;
    tn_engine_params p = base_params();
    tn_engine *e = make_engine(&p);
    collect a = {0}, b = {0};
    tn_request_params r = greedy(g_gold, NP, NO);
    tn_engine_stats s0, s1, s2;
    tn_engine_get_stats(e, &s0);
    assert_true(s0.forward_s == 0 && s0.host_s == 0);
    submit(e, &r, &a);
    wait_idle(e);
    assert_tokens(&a, g_gold + NP, NO, "timed");
    tn_engine_get_stats(e, &s1);
    assert_true(s1.forward_s > 0);
    assert_true(s1.host_s > 0); /* NO - 1 decode steps follow each other */
    usleep(500000);
    submit(e, &r, &b);
    wait_idle(e);
    tn_engine_get_stats(e, &s2);
    assert_true(s2.forward_s > s1.forward_s);
    assert_true(s2.host_s > s1.host_s);
    assert_true(s2.host_s - s1.host_s < 0.5); /* the idle half second is not host time */
    tn_engine_free(e);
}

/* ==========================================================================
 * Prefix cache
 * ======================================================================== */

/* A repeated prompt, then one sharing only its first blocks, are served
 * from the cache (n_cached, stats) and continue exactly as uncached. */
static void test_prefix_cache(void **state)
{
    enum { NP = 40, NO = 30 };
    tn_engine_params p = base_params();
    tn_engine *e = make_engine(&p);

    collect a = {0}, b = {0}, c = {0};
    tn_request_params r = greedy(g_gold, NP, NO);
    submit(e, &r, &a);
    wait_idle(e);
    assert_tokens(&a, g_gold + NP, NO, "first time");
    assert_int_equal(a.n_cached, 0);
    tn_engine_stats s1;
    tn_engine_get_stats(e, &s1);
    assert_int_equal(s1.prefix_hits, 0);

    submit(e, &r, &b);
    wait_idle(e);
    assert_tokens(&b, g_gold + NP, NO, "repeated");
    assert_int_equal(b.n_cached, 32); /* (40 - 1) / 16 = 2 full blocks; the last token is computed */
    tn_engine_stats s2;
    tn_engine_get_stats(e, &s2);
    assert_int_equal(s2.prefix_hits, 32);
    assert_true(s2.prefix_queries >= 2 * NP);

    /* Same first 35 tokens, then a different tail: two blocks hit, and the
     * output equals that prompt's output on a fresh engine. */
    int32_t q[NP];
    memcpy(q, g_gold, sizeof q);
    for (int i = 35; i < NP; i++)
        q[i] = g_gold[200 + i];
    tn_request_params rq = greedy(q, NP, NO);
    submit(e, &rq, &c);
    wait_idle(e);
    assert_int_equal(c.n_cached, 32);
    tn_engine_free(e);

    p.prefix_cache = false;
    e = make_engine(&p);
    collect d = {0};
    submit(e, &rq, &d);
    wait_idle(e);
    assert_int_equal(d.n_cached, 0);
    assert_tokens(&c, d.tok, NO, "shared prefix, new tail");
    tn_engine_get_stats(e, &s2);
    assert_int_equal(s2.prefix_hits, 0);
    tn_engine_free(e);
}

/* ==========================================================================
 * Preemption
 * ======================================================================== */

/* A cache of 64 slots (4 blocks of 16) and four requests that each grow to
 * 60 tokens: they cannot all run, so some are preempted and recomputed;
 * every output still equals the output alone, and nothing fails. */
static void test_preemption(void **state)
{
    enum { N_REQ = 4, NO = 50 };
    int32_t prompts[N_REQ][64], np[N_REQ];
    for (int j = 0; j < N_REQ; j++) {
        other_prompt(j + 1, prompts[j]); /* fills 8, 13, 18, 23 tokens */
        np[j] = 4 + 2 * j;               /* of which 4..10 are used */
    }
    int32_t alone[N_REQ][NO];

    tn_engine_params p = base_params();
    p.n_ctx = 64;
    p.n_kv_slots = 64;
    tn_engine *e = make_engine(&p);
    for (int j = 0; j < N_REQ; j++) {
        collect c = {0};
        tn_request_params r = greedy(prompts[j], np[j], NO);
        submit(e, &r, &c);
        wait_idle(e);
        assert_int_equal(c.n, NO);
        memcpy(alone[j], c.tok, sizeof alone[j]);
    }
    tn_engine_stats st;
    tn_engine_get_stats(e, &st);
    assert_int_equal(st.n_preemptions, 0);

    collect c[N_REQ];
    memset(c, 0, sizeof c);
    gate gt = GATE_INIT;
    c[0].gate = &gt; /* all four queued while the first runs */
    for (int j = 0; j < N_REQ; j++) {
        tn_request_params r = greedy(prompts[j], np[j], NO);
        submit(e, &r, &c[j]);
        if (j == 0)
            gate_wait_reached(&gt);
    }
    gate_open(&gt);
    wait_idle(e);
    for (int j = 0; j < N_REQ; j++) {
        char what[48];
        snprintf(what, sizeof what, "request %d under preemption", j);
        assert_tokens(&c[j], alone[j], NO, what);
    }
    tn_engine_get_stats(e, &st);
    assert_true(st.n_preemptions > 0);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_int_equal(st.kv_blocks_total, 4);
    tn_engine_free(e);

    /* The golden prompt through a full-length context in a cache that holds
     * exactly one sequence, with a competitor: it still completes exactly. */
    p.n_ctx = 128;
    p.n_kv_slots = 128;
    p.step_token_budget = 7;
    e = make_engine(&p);
    collect g = {0}, o = {0};
    gate g2 = GATE_INIT;
    g.gate = &g2;
    tn_request_params rg = greedy(g_gold, 16, 112);
    tn_request_params ro = greedy(prompts[1], np[1], 100);
    submit(e, &rg, &g);
    gate_wait_reached(&g2);
    submit(e, &ro, &o);
    gate_open(&g2);
    wait_idle(e);
    assert_tokens(&g, g_gold + 16, 112, "golden prompt, full context, tiny cache");
    assert_int_equal(o.n, 100);
    tn_engine_get_stats(e, &st);
    assert_true(st.n_preemptions > 0);
    tn_engine_free(e);
}

/* ==========================================================================
 * Cancel, timeout, shutdown
 * ======================================================================== */

/* A request that cancels itself at its 3rd token gets no 4th: its final
 * CANCELLED event comes in the next step, after its blocks were freed. A
 * neighbour is unaffected. */
static void test_cancel(void **state)
{
    tn_engine_params p = base_params();
    tn_engine *e = make_engine(&p);
    collect a = {0};
    a.cancel_at = 3;
    tn_request_params r = greedy(g_gold, 30, 100);
    submit(e, &r, &a);
    wait_idle(e);
    assert_int_equal(a.n_final, 1);
    assert_int_equal(a.finish, TN_FINISH_CANCELLED);
    assert_int_equal(a.n, 3);
    assert_int_equal(a.n_generated, 3);
    assert_string_equal(a.reason, "cancelled");
    assert_int_equal(a.blocks_used_at_final, 0);

    /* With a neighbour: it finishes exactly, and the cancelled one's blocks
     * were gone when its final event came (only the neighbour's remain). */
    int32_t other[64];
    int32_t n_other = other_prompt(2, other);
    collect ref = {0}, b = {0}, n = {0};
    tn_request_params ro = greedy(other, n_other, 40);
    submit(e, &ro, &ref);
    wait_idle(e);
    /* The neighbour holds the engine at its first token until the cancelled
     * one is queued, so both run together however fast the machine is. */
    gate gt = GATE_INIT;
    n.gate = &gt;
    b.cancel_at = 5;
    submit(e, &ro, &n);
    gate_wait_reached(&gt);
    submit(e, &r, &b);
    gate_open(&gt);
    wait_idle(e);
    assert_int_equal(b.finish, TN_FINISH_CANCELLED);
    assert_int_equal(b.n, 5);
    assert_tokens(&n, ref.tok, 40, "neighbour of a cancelled request");
    /* The neighbour held ceil((n_other + k) / 16) blocks then, fewer than 4. */
    assert_true(b.blocks_used_at_final >= 1 && b.blocks_used_at_final <= (n_other + 40 + 15) / 16);

    /* Unknown ids are ignored. */
    tn_engine_cancel(e, 987654321);
    tn_engine_free(e);
}

/* A request whose callback stalls the engine past its timeout is
 * cancelled at the next step with reason "timeout"; a request without a
 * timeout is not. */
static void test_timeout(void **state)
{
    tn_engine_params p = base_params();
    tn_engine *e = make_engine(&p);
    collect a = {0};
    a.sleep_first_s = 0.15;
    tn_request_params r = greedy(g_gold, 10, 100);
    r.timeout_s = 0.05;
    submit(e, &r, &a);
    wait_idle(e);
    assert_int_equal(a.finish, TN_FINISH_CANCELLED);
    assert_string_equal(a.reason, "timeout");
    assert_int_equal(a.n, 1);

    collect b = {0};
    b.sleep_first_s = 0.05;
    r.timeout_s = 0;
    r.max_tokens = 20;
    submit(e, &r, &b);
    wait_idle(e);
    assert_tokens(&b, g_gold + 10, 20, "no timeout");
    tn_engine_free(e);
}

/* Freeing the engine with work in flight cancels it with a final event. */
static void test_free_cancels(void **state)
{
    tn_engine_params p = base_params();
    tn_engine *e = make_engine(&p);
    collect a = {0};
    a.sleep_first_s = 0.05;
    tn_request_params r = greedy(g_gold, 10, 200);
    submit(e, &r, &a);
    usleep(20000);
    tn_engine_free(e);
    assert_int_equal(a.n_final, 1);
    assert_int_equal(a.finish, TN_FINISH_CANCELLED);
    assert_true(a.n < 200);
}

/* ==========================================================================
 * Limits and validation
 * ======================================================================== */

/* With the engine held inside a callback, max_waiting requests queue and
 * the next is TN_ERR_FULL; after drain, submit is TN_ERR_FULL too, and the
 * queued ones still complete. */
static void test_queue_full_and_drain(void **state)
{
    tn_engine_params p = base_params();
    p.max_waiting = 2;
    tn_engine *e = make_engine(&p);
    gate gt = GATE_INIT;
    collect first = {0}, q[3];
    memset(q, 0, sizeof q);
    first.gate = &gt;
    tn_request_params r = greedy(g_gold, 10, 8);
    submit(e, &r, &first);
    gate_wait_reached(&gt);

    uint64_t id;
    for (int i = 0; i < 2; i++)
        submit(e, &r, &q[i]);
    q[2].e = e;
    assert_int_equal(tn_engine_submit(e, &r, on_event, &q[2], &id), TN_ERR_FULL);
    tn_engine_stats st;
    tn_engine_get_stats(e, &st);
    assert_int_equal(st.n_waiting, 2);
    assert_int_equal(st.n_running, 1);

    tn_engine_drain(e);
    gate_open(&gt);
    assert_int_equal(tn_engine_submit(e, &r, on_event, &q[2], &id), TN_ERR_FULL);
    wait_idle(e);
    assert_tokens(&first, g_gold + 10, 8, "gated request");
    assert_tokens(&q[0], g_gold + 10, 8, "queued 0");
    assert_tokens(&q[1], g_gold + 10, 8, "queued 1");
    assert_int_equal(q[2].n_final, 0);
    tn_engine_free(e);
}

/* Bad requests are TN_ERR_INVALID with a message; max_tokens is clipped to
 * the context; max_tokens 0 ends at once; logprobs are log-probabilities. */
static void test_validation(void **state)
{
    tn_engine_params p = base_params();
    p.n_ctx = 32;
    tn_engine *e = make_engine(&p);
    int32_t big[33];
    for (int i = 0; i < 33; i++)
        big[i] = g_gold[i];
    uint64_t id;
    collect c = {0};
    c.e = e;
    tn_request_params r = greedy(big, 33, 1);
    assert_int_equal(tn_engine_submit(e, &r, on_event, &c, &id), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "longer than the context"));
    r.n_prompt = 0;
    assert_int_equal(tn_engine_submit(e, &r, on_event, &c, &id), TN_ERR_INVALID);
    int32_t bad[2] = {1, 100000};
    r = greedy(bad, 2, 1);
    assert_int_equal(tn_engine_submit(e, &r, on_event, &c, &id), TN_ERR_INVALID);
    r = greedy(big, 4, -1);
    assert_int_equal(tn_engine_submit(e, &r, on_event, &c, &id), TN_ERR_INVALID);
    r = greedy(big, 4, 1);
    r.top_logprobs = TN_MAX_TOP_LOGPROBS + 1;
    assert_int_equal(tn_engine_submit(e, &r, on_event, &c, &id), TN_ERR_INVALID);
    assert_int_equal(c.n_final, 0);

    /* A prompt of exactly n_ctx tokens generates nothing: LENGTH at once.
     * A large max_tokens is clipped to the context. */
    collect full = {0}, clip = {0}, zero = {0};
    r = greedy(big, 32, 10);
    submit(e, &r, &full);
    r = greedy(big, 20, 1000);
    submit(e, &r, &clip);
    r = greedy(big, 20, 0);
    submit(e, &r, &zero);
    wait_idle(e);
    assert_int_equal(full.finish, TN_FINISH_LENGTH);
    assert_int_equal(full.n, 0);
    assert_tokens(&clip, g_gold + 20, 12, "clipped to the context");
    assert_int_equal(zero.finish, TN_FINISH_LENGTH);
    assert_int_equal(zero.n, 0);
    tn_engine_free(e);

    /* n_kv_slots smaller than one context is refused. */
    p.n_ctx = 64;
    p.n_kv_slots = 48;
    tn_engine *bad_e = NULL;
    assert_int_equal(tn_engine_new(&p, &bad_e), TN_ERR_INVALID);
    assert_null(bad_e);
}

/* Stop tokens and end of generation end a request with STOP. */
static int32_t g_lp_tok = -1;
static float g_lp, g_lp_top0;
static int32_t g_lp_ntop, g_lp_top_tok0;
static void on_logprob(void *user, const tn_engine_event *ev)
{
    if (ev->token >= 0 && g_lp_tok < 0) {
        g_lp_tok = ev->token;
        g_lp = ev->logprob;
        g_lp_ntop = ev->n_top;
        g_lp_top_tok0 = ev->top_token[0];
        g_lp_top0 = ev->top_logprob[0];
    }
    on_event(user, ev);
}

static void test_stop_and_logprobs(void **state)
{
    tn_engine_params p = base_params();
    tn_engine *e = make_engine(&p);
    collect c = {0};
    tn_request_params r = greedy(g_gold, 10, 50);
    int32_t stop = g_gold[14];
    r.stop_tokens = &stop;
    r.n_stop_tokens = 1;
    submit(e, &r, &c);
    wait_idle(e);
    assert_int_equal(c.finish, TN_FINISH_STOP);
    int32_t first = 0;
    while (g_gold[10 + first] != stop)
        first++;
    assert_int_equal(c.n, first + 1);

    collect l = {0};
    l.e = e;
    r = greedy(g_gold, 10, 3);
    r.top_logprobs = 5;
    uint64_t id;
    assert_int_equal(tn_engine_submit(e, &r, on_logprob, &l, &id), TN_OK);
    wait_idle(e);
    assert_int_equal(g_lp_tok, g_gold[10]);
    assert_int_equal(g_lp_ntop, 5);
    assert_int_equal(g_lp_top_tok0, g_gold[10]); /* greedy: the top token */
    assert_true(g_lp <= 0.0f && g_lp > -20.0f);
    assert_float_equal(g_lp, g_lp_top0, 1e-6);
    tn_engine_free(e);
}

/* A -100 logit bias on the reference's next token makes greedy choose
 * another; the bias is copied at submit (the caller's arrays are
 * overwritten right after); a bias on another request does not leak into
 * one submitted alongside; an id outside the vocabulary is rejected. */
static void test_logit_bias(void **state)
{
    tn_engine_params p = base_params();
    tn_engine *e = make_engine(&p);
    collect biased = {0}, plain = {0};
    int32_t ids[1] = {g_gold[10]};
    float bias[1] = {-100.0f};
    tn_request_params r = greedy(g_gold, 10, 4);
    r.logit_bias_ids = ids;
    r.logit_bias = bias;
    r.n_logit_bias = 1;
    submit(e, &r, &biased);
    ids[0] = 0;
    bias[0] = 0.0f;
    tn_request_params rp = greedy(g_gold, 10, 4);
    submit(e, &rp, &plain);
    wait_idle(e);
    assert_int_equal(biased.n, 4);
    assert_int_not_equal(biased.tok[0], g_gold[10]);
    assert_tokens(&plain, g_gold + 10, 4, "unbiased neighbour");

    uint64_t id;
    collect c = {0};
    c.e = e;
    ids[0] = g_model->hp.n_vocab;
    r.logit_bias_ids = ids;
    assert_int_equal(tn_engine_submit(e, &r, on_event, &c, &id), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "logit_bias"));
    r.logit_bias_ids = NULL;
    assert_int_equal(tn_engine_submit(e, &r, on_event, &c, &id), TN_ERR_INVALID);
    assert_int_equal(c.n_final, 0);
    tn_engine_free(e);
}

/* Prompt logprobs: what one request saw. */
typedef struct plp_collect {
    int32_t pos[64], tok[64], top0[64], n_top[64];
    float lp[64], top0_lp[64];
    int32_t n_plp;
    int32_t gen[8], n_gen;
    float gen_lp[8];
    bool order_ok;          /* every prompt event came before the first generated token, in order */
    int n_final;
    tn_finish finish;
    int32_t n_cached;
} plp_collect;

static void on_plp(void *user, const tn_engine_event *ev)
{
    plp_collect *c = user;
    if (ev->prompt_pos > 0) {
        int32_t i = c->n_plp++;
        if (i < 64) {
            c->pos[i] = ev->prompt_pos;
            c->tok[i] = ev->token;
            c->lp[i] = ev->logprob;
            c->n_top[i] = ev->n_top;
            c->top0[i] = ev->top_token[0];
            c->top0_lp[i] = ev->top_logprob[0];
        }
        if (c->n_gen > 0 || ev->finish != TN_FINISH_NONE || ev->prompt_pos != i + 1)
            c->order_ok = false;
        return;
    }
    if (ev->token >= 0 && c->n_gen < 8) {
        c->gen_lp[c->n_gen] = ev->logprob;
        c->gen[c->n_gen++] = ev->token;
    }
    c->n_cached = ev->n_cached;
    if (ev->finish != TN_FINISH_NONE) {
        c->n_final++;
        c->finish = ev->finish;
    }
}

static uint64_t submit_plp(tn_engine *e, const int32_t *prompt, int32_t n, int32_t max_tokens, plp_collect *c)
{
    memset(c, 0, sizeof *c);
    c->order_ok = true;
    tn_request_params r = greedy(prompt, n, max_tokens);
    r.top_logprobs = 3;
    r.prompt_logprobs = true;
    uint64_t id = 0;
    if (tn_engine_submit(e, &r, on_plp, c, &id) != TN_OK)
        fail_msg("submit: %s", tn_last_error());
    return id;
}

/* The golden prompt is llama2.c's greedy story, so each of its tokens is
 * the model's top choice after the tokens before it: every prompt-logprob
 * event must name that token as top 1 with logprob == top logprob, and that
 * logprob must equal what a separate request for the prefix reports for
 * its first generated token. Checked with chunked prefill (budget 5), after
 * the prompt went into the prefix cache (it is then computed anyway),
 * with max_tokens 0 (the prompt is still run) and with generation after. */
static void test_prompt_logprobs(void **state)
{
    enum { NP = 40 };
    int32_t budgets[] = {5, 512};
    for (int bi = 0; bi < 2; bi++) {
        tn_engine_params p = base_params();
        p.step_token_budget = budgets[bi];
        tn_engine *e = make_engine(&p);
        collect warm = {0};
        tn_request_params w = greedy(g_gold, NP, 1);
        submit(e, &w, &warm); /* fills the prefix cache with the prompt's blocks */
        wait_idle(e);
        for (int32_t max_tokens = 0; max_tokens <= 2; max_tokens += 2) {
            plp_collect c;
            submit_plp(e, g_gold, NP, max_tokens, &c);
            wait_idle(e);
            assert_true(c.order_ok);
            assert_int_equal(c.n_final, 1);
            assert_int_equal(c.finish, TN_FINISH_LENGTH);
            assert_int_equal(c.n_cached, 0);
            assert_int_equal(c.n_plp, NP - 1);
            for (int32_t i = 0; i < NP - 1; i++) {
                assert_int_equal(c.pos[i], i + 1);
                assert_int_equal(c.tok[i], g_gold[i + 1]);
                assert_int_equal(c.n_top[i], 3);
                assert_int_equal(c.top0[i], g_gold[i + 1]);
                assert_float_equal(c.lp[i], c.top0_lp[i], 1e-6);
                assert_true(c.lp[i] <= 0.0f && c.lp[i] > -30.0f);
            }
            assert_int_equal(c.n_gen, max_tokens);
            for (int32_t i = 0; i < max_tokens; i++)
                assert_int_equal(c.gen[i], g_gold[NP + i]);
            if (bi == 0 && max_tokens == 0) {
                int32_t probe[] = {1, 7, 16, 17, 33, NP - 1};
                for (size_t k = 0; k < sizeof probe / sizeof probe[0]; k++) {
                    plp_collect one;
                    memset(&one, 0, sizeof one);
                    tn_request_params r = greedy(g_gold, probe[k], 1);
                    r.top_logprobs = 3;
                    uint64_t id;
                    assert_int_equal(tn_engine_submit(e, &r, on_plp, &one, &id), TN_OK);
                    wait_idle(e);
                    assert_int_equal(one.n_gen, 1);
                    assert_int_equal(one.gen[0], g_gold[probe[k]]);
                    assert_float_equal(one.gen_lp[0], c.lp[probe[k] - 1], 1e-4);
                }
            }
        }
        tn_engine_free(e);
    }
    /* Preemption mid-prefill and mid-decode (three 30-token prompts growing
     * to 50 in a 64-slot cache, 5-token steps): each prompt position is
     * still sent exactly once, in order, and the outputs stay golden. */
    {
        tn_engine_params p = base_params();
        p.n_ctx = 64;
        p.n_kv_slots = 64;
        p.step_token_budget = 5;
        tn_engine *e = make_engine(&p);
        plp_collect c[3];
        for (int j = 0; j < 3; j++)
            submit_plp(e, g_gold, 30, 20, &c[j]);
        wait_idle(e);
        tn_engine_stats st;
        tn_engine_get_stats(e, &st);
        assert_true(st.n_preemptions > 0);
        for (int j = 0; j < 3; j++) {
            assert_true(c[j].order_ok);
            assert_int_equal(c[j].n_plp, 29);
            for (int32_t i = 0; i < 29; i++)
                assert_int_equal(c[j].top0[i], g_gold[i + 1]);
            assert_int_equal(c[j].n_gen, 8); /* the collector keeps 8 */
            for (int32_t i = 0; i < 8; i++)
                assert_int_equal(c[j].gen[i], g_gold[30 + i]);
        }
        tn_engine_free(e);
    }
    /* prompt_logprobs without logprobs is refused */
    tn_engine_params p = base_params();
    tn_engine *e = make_engine(&p);
    tn_request_params r = greedy(g_gold, 5, 1);
    r.prompt_logprobs = true;
    uint64_t id;
    assert_int_equal(tn_engine_submit(e, &r, on_plp, NULL, &id), TN_ERR_INVALID);
    tn_engine_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_step_times),
        cmocka_unit_test(test_prefix_cache),
        cmocka_unit_test(test_preemption),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_free_cancels),
        cmocka_unit_test(test_queue_full_and_drain),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_stop_and_logprobs),
        cmocka_unit_test(test_logit_bias),
        cmocka_unit_test(test_prompt_logprobs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
