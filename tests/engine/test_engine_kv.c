/*
 * test_engine_kv.c — the serving engine with an F16 or INT8 KV cache
 * (tn_engine_params.kv_type) on the real stories260K model.
 *
 * Key idea: the cache type changes the numbers, not the contract. With a
 * q8 (or f16) cache, a greedy request's tokens are still a function of its
 * prompt alone: the reference is each prompt run alone on an engine with
 * the same cache type, and the mixed batches (several token budgets, so
 * prefills are chunked differently; prefix cache on and off) and a
 * prefix-cache hit must reproduce it exactly. Paged blocks are slots of any
 * type, so the block accounting ends at zero as with F32.
 */
#include "engine/engine.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODEL_PATH TN_SHARED_DATA "models/stories260K/stories260K.v3.derived.gguf"
#define TOKENS_PATH TN_SHARED_DATA "models/stories260K/expected-greedy-t0.tokens.derived.txt"
#define N_GOLD 257
#define N_REQ 6
#define N_OUT 40

static int32_t g_gold[N_GOLD];
static tn_model *g_model;
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

typedef struct collect {
    int32_t tok[N_OUT];
    int32_t n, n_cached;
    int n_final;
    tn_finish finish;
} collect;

static void on_event(void *user, const tn_engine_event *ev)
{
    collect *c = user;
    if (ev->token >= 0 && c->n < N_OUT)
        c->tok[c->n++] = ev->token;
    c->n_cached = ev->n_cached;
    if (ev->finish != TN_FINISH_NONE) {
        c->n_final++;
        c->finish = ev->finish;
    }
}

static tn_engine *make_engine(tn_kv_type type, int32_t budget, bool prefix)
{
    tn_engine_params p;
    memset(&p, 0, sizeof p);
    p.model = g_model;
    p.vocab = g_vocab;
    p.n_threads = 2;
    p.n_ctx = 256;
    p.prefix_cache = prefix;
    p.step_token_budget = budget;
    p.kv_type = type;
    tn_engine *e = NULL;
    if (tn_engine_new(&p, &e) != TN_OK)
        fail_msg("engine: %s", tn_last_error());
    return e;
}

/* Prompt j: BOS and a stretch of the story; prompts 0 and 1 share their
 * first 35 tokens (two full blocks for the prefix cache). */
static int32_t prompt(int j, int32_t *out)
{
    int32_t n = j < 2 ? 40 : 5 + 7 * j;
    memcpy(out, g_gold, (size_t)n * sizeof(int32_t));
    if (j == 1)
        for (int i = 35; i < n; i++)
            out[i] = g_gold[150 + i];
    if (j >= 2)
        memcpy(out + 1, g_gold + 60 + 11 * j, (size_t)(n - 1) * sizeof(int32_t));
    return n;
}

static void submit(tn_engine *e, const int32_t *p, int32_t n, collect *c)
{
    tn_request_params r;
    memset(&r, 0, sizeof r);
    r.prompt = p;
    r.n_prompt = n;
    r.max_tokens = N_OUT;
    r.sample = tn_sample_params_default();
    r.sample.temperature = 0.0f;
    r.ignore_eos = true;
    r.top_logprobs = -1;
    uint64_t id;
    if (tn_engine_submit(e, &r, on_event, c, &id) != TN_OK)
        fail_msg("submit: %s", tn_last_error());
}

static void check_type(tn_kv_type type)
{
    int32_t prompts[N_REQ][64], np[N_REQ], alone[N_REQ][N_OUT];
    for (int j = 0; j < N_REQ; j++)
        np[j] = prompt(j, prompts[j]);
    tn_engine *e = make_engine(type, 512, false);
    for (int j = 0; j < N_REQ; j++) {
        collect c = {0};
        submit(e, prompts[j], np[j], &c);
        assert_true(tn_engine_wait_idle(e, 120.0));
        assert_int_equal(c.n, N_OUT);
        memcpy(alone[j], c.tok, sizeof alone[j]);
    }
    tn_engine_free(e);

    static const int32_t budgets[] = {5, 16, 512};
    for (size_t bi = 0; bi < TN_ARRAY_LEN(budgets); bi++) {
        for (int prefix = 0; prefix < 2; prefix++) {
            e = make_engine(type, budgets[bi], prefix);
            collect c[N_REQ + 1];
            memset(c, 0, sizeof c);
            for (int j = 0; j < N_REQ; j++)
                submit(e, prompts[j], np[j], &c[j]);
            assert_true(tn_engine_wait_idle(e, 120.0));
            /* Prompt 0 again: with the prefix cache its first blocks are reused. */
            submit(e, prompts[0], np[0], &c[N_REQ]);
            assert_true(tn_engine_wait_idle(e, 120.0));
            for (int j = 0; j <= N_REQ; j++) {
                const int32_t *want = alone[j % N_REQ];
                if (c[j].n_final != 1 || c[j].finish != TN_FINISH_LENGTH || c[j].n != N_OUT ||
                    memcmp(c[j].tok, want, sizeof alone[0]))
                    fail_msg("kv %s, budget %d, prefix %d: request %d differs from its output alone",
                             tn_kv_type_name(type), budgets[bi], prefix, j);
            }
            if (prefix)
                assert_int_equal(c[N_REQ].n_cached, 32);
            tn_engine_stats st;
            tn_engine_get_stats(e, &st);
            assert_int_equal(st.kv_blocks_used, 0);
            tn_engine_free(e);
        }
    }
}

static void test_q8(void **state) { check_type(TN_KV_Q8); }
static void test_f16(void **state) { check_type(TN_KV_F16); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q8),
        cmocka_unit_test(test_f16),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
