/*
 * test_model.c — loading, the KV cache and the batched forward pass, on the
 * real stories260K model (llama architecture, GQA 8/4, 5 layers).
 *
 * Key idea: the reference for correctness is llama2.c's greedy continuation
 * (expected-greedy-t0.tokens.derived.txt), and the reference for everything
 * batch-related is the forward pass itself run one token at a time: a
 * prefill, interleaved sequences, reused slots and threads must all give the
 * same logits bit for bit, because every reduction in the pass has an order
 * that depends only on the token and its visible cells. Malformed batches
 * and malformed files must fail with a message naming what is wrong.
 */
#include "kern/repack.h"
#include "model/model.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MODEL_PATH TN_SHARED_DATA "models/stories260K/stories260K.v3.derived.gguf"
#define TOKENS_PATH TN_SHARED_DATA "models/stories260K/expected-greedy-t0.tokens.derived.txt"
#define N_STEPS 256
#define N_VOCAB 512

/* ==========================================================================
 * Helpers
 * ======================================================================== */

/* The expected ids: BOS then N_STEPS greedy tokens. */
static int32_t g_expected[N_STEPS + 1];

static void read_expected(void)
{
    assert_int_equal(tn_test_read_ints(TOKENS_PATH, g_expected, N_STEPS + 1), N_STEPS + 1);
    assert_int_equal(g_expected[0], 1);
}

static tn_model *load_model(void)
{
    tn_model *m = NULL;
    tn_status s = tn_model_load(MODEL_PATH, &m);
    if (s != TN_OK)
        fail_msg("load: %s", tn_last_error());
    return m;
}

static int32_t argmax(const float *x, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* Runs a batch whose tokens all want logits. */
static tn_status run_all(tn_forward *f, tn_kv_cache *kv, tn_pool *pool, int32_t n, const int32_t *tok,
                         const int32_t *pos, const int32_t *seq, const int32_t *slot, float *logits)
{
    bool want[512];
    assert_true(n <= 512);
    for (int i = 0; i < n; i++)
        want[i] = true;
    tn_batch b = {n, tok, pos, seq, slot, want};
    return tn_forward_run(f, kv, pool, &b, logits);
}

/* Feeds tok[0..n) of sequence seq one token per call at positions
 * pos0.., slots slot0..; logits: (n, N_VOCAB). */
static void decode_seq(tn_forward *f, tn_kv_cache *kv, tn_pool *pool, const int32_t *tok, int n, int32_t seq,
                       int32_t pos0, int32_t slot0, float *logits)
{
    for (int i = 0; i < n; i++) {
        int32_t pos = pos0 + i, slot = slot0 + i;
        tn_status s = run_all(f, kv, pool, 1, &tok[i], &pos, &seq, &slot, logits + (size_t)i * N_VOCAB);
        if (s != TN_OK)
            fail_msg("decode step %d: %s", i, tn_last_error());
    }
}

/* The reference: logits of g_expected[0..n) decoded alone, from a fresh cache. */
static float *reference_logits(tn_model *m, int n)
{
    tn_kv_cache *kv;
    tn_forward *f;
    assert_int_equal(tn_kv_new(m, 512, 1, &kv), TN_OK);
    assert_int_equal(tn_forward_new(m, 1, &f), TN_OK);
    float *ref = malloc((size_t)n * N_VOCAB * sizeof(float));
    decode_seq(f, kv, NULL, g_expected, n, 0, 0, 0, ref);
    tn_forward_free(f);
    tn_kv_free(kv);
    return ref;
}

static void assert_rows_identical(const float *a, const float *b, int n, const char *what)
{
    for (int i = 0; i < n; i++) {
        if (memcmp(a + (size_t)i * N_VOCAB, b + (size_t)i * N_VOCAB, N_VOCAB * sizeof(float)) != 0) {
            float maxd = 0;
            for (int j = 0; j < N_VOCAB; j++)
                maxd = fmaxf(maxd, fabsf(a[(size_t)i * N_VOCAB + j] - b[(size_t)i * N_VOCAB + j]));
            fail_msg("%s: logits row %d differ (max abs diff %g)", what, i, (double)maxd);
        }
    }
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static void shuffle(int32_t *a, int n)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(rng() % (uint32_t)(i + 1));
        int32_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* ==========================================================================
 * Loading
 * ======================================================================== */

/* The hyper-parameters read from the file are stories260K's. */
static void test_load_hparams(void **state)
{
    tn_model *m = load_model();
    const tn_hparams *hp = &m->hp;
    assert_int_equal(hp->arch, TN_ARCH_LLAMA);
    assert_string_equal(hp->arch_name, "llama");
    assert_int_equal(hp->n_vocab, 512);
    assert_int_equal(hp->n_ctx_train, 512);
    assert_int_equal(hp->n_embd, 64);
    assert_int_equal(hp->n_layer, 5);
    assert_int_equal(hp->n_head, 8);
    assert_int_equal(hp->n_head_kv, 4);
    assert_int_equal(hp->head_dim, 8);
    assert_int_equal(hp->n_ff, 172);
    assert_int_equal(hp->n_rot, 8);
    assert_true(fabsf(hp->norm_eps - 1e-5f) < 1e-9f);
    assert_true(hp->rope_freq_base == 10000.0f);
    assert_true(hp->rope_freq_scale == 1.0f);
    assert_int_equal(hp->rope_type, TN_ROPE_NORM);
    assert_non_null(m->output.data);
    assert_ptr_not_equal(m->output.data, m->tok_embd.data); /* this file has its own output.weight */
    assert_null(m->rope_freqs.data);
    assert_null(m->layers[0].bq.data);
    assert_null(m->layers[0].q_norm.data);
    assert_int_equal(m->layers[4].ffn_down.ne[0], 172);
    assert_int_equal(m->layers[4].ffn_down.ne[1], 64);
    tn_model_free(m);
}

/* ==========================================================================
 * Forward: correctness and batch invariance
 * ======================================================================== */

/* Greedy decoding from BOS, one token per call, reproduces llama2.c's 256
 * tokens exactly; with a 2-thread pool the logits are bit-identical. */
static void test_greedy_decode(void **state)
{
    tn_model *m = load_model();
    tn_kv_cache *kv;
    tn_forward *f;
    tn_pool *pool;
    assert_int_equal(tn_kv_new(m, 512, 1, &kv), TN_OK);
    assert_int_equal(tn_forward_new(m, 1, &f), TN_OK);
    assert_int_equal(tn_pool_new(2, &pool), TN_OK);
    float logits[N_VOCAB];
    int32_t tok = g_expected[0], seq = 0;
    for (int32_t pos = 0; pos < N_STEPS; pos++) {
        tn_status s = run_all(f, kv, NULL, 1, &tok, &pos, &seq, &pos, logits);
        if (s != TN_OK)
            fail_msg("step %d: %s", pos, tn_last_error());
        int32_t next = argmax(logits, N_VOCAB);
        if (next != g_expected[pos + 1])
            fail_msg("step %d: greedy token %d, expected %d", pos, next, g_expected[pos + 1]);
        tok = next;
    }
    /* The same steps on two threads, in a second cache, match bitwise. */
    float *ref = reference_logits(m, 64);
    tn_kv_clear(kv);
    float *got = malloc(64 * N_VOCAB * sizeof(float));
    decode_seq(f, kv, pool, g_expected, 64, 0, 0, 0, got);
    assert_rows_identical(ref, got, 64, "2 threads vs 1");
    free(ref);
    free(got);
    tn_pool_free(pool);
    tn_forward_free(f);
    tn_kv_free(kv);
    tn_model_free(m);
}

/* All 256 tokens as ONE prefill batch give, at every position, exactly the
 * logits of token-by-token decoding; so do uneven prefill chunks followed by
 * decode, and a prefill whose logits are wanted only for some tokens. */
static void test_prefill_equals_decode(void **state)
{
    tn_model *m = load_model();
    float *ref = reference_logits(m, N_STEPS);
    tn_kv_cache *kv;
    tn_forward *f;
    tn_pool *pool;
    assert_int_equal(tn_kv_new(m, 512, 1, &kv), TN_OK);
    assert_int_equal(tn_forward_new(m, N_STEPS, &f), TN_OK);
    assert_int_equal(tn_pool_new(2, &pool), TN_OK);
    int32_t pos[N_STEPS], seq[N_STEPS], slot[N_STEPS];
    for (int i = 0; i < N_STEPS; i++) {
        pos[i] = i;
        seq[i] = 0;
        slot[i] = 511 - i; /* any slots will do */
    }
    float *got = malloc((size_t)N_STEPS * N_VOCAB * sizeof(float));
    tn_status s = run_all(f, kv, NULL, N_STEPS, g_expected, pos, seq, slot, got);
    if (s != TN_OK)
        fail_msg("prefill: %s", tn_last_error());
    assert_rows_identical(ref, got, N_STEPS, "one prefill batch vs decode");

    /* Chunks of 1, 7, 100, 20 then single tokens, on 2 threads. */
    tn_kv_clear(kv);
    int chunks[] = {1, 7, 100, 20};
    int at = 0;
    for (size_t c = 0; c < TN_ARRAY_LEN(chunks); c++) {
        s = run_all(f, kv, pool, chunks[c], g_expected + at, pos + at, seq, slot + at, got + (size_t)at * N_VOCAB);
        assert_int_equal(s, TN_OK);
        at += chunks[c];
    }
    for (; at < N_STEPS; at++)
        assert_int_equal(run_all(f, kv, pool, 1, g_expected + at, pos + at, seq, slot + at, got + (size_t)at * N_VOCAB),
                         TN_OK);
    assert_rows_identical(ref, got, N_STEPS, "chunked prefill + decode vs decode");

    /* Only the last token and one in the middle want logits: the rows come
     * back in batch order. */
    tn_kv_clear(kv);
    bool want[N_STEPS] = {false};
    want[100] = want[N_STEPS - 1] = true;
    tn_batch b = {N_STEPS, g_expected, pos, seq, slot, want};
    float two[2 * N_VOCAB];
    assert_int_equal(tn_forward_run(f, kv, pool, &b, two), TN_OK);
    assert_rows_identical(ref + 100 * N_VOCAB, two, 1, "sparse logits, row 100");
    assert_rows_identical(ref + (N_STEPS - 1) * N_VOCAB, two + N_VOCAB, 1, "sparse logits, last row");

    /* No logits wanted at all: the cache is still filled for later steps. */
    tn_kv_clear(kv);
    memset(want, 0, sizeof want);
    b.n_tokens = N_STEPS - 1;
    assert_int_equal(tn_forward_run(f, kv, pool, &b, NULL), TN_OK);
    s = run_all(f, kv, pool, 1, g_expected + N_STEPS - 1, pos + N_STEPS - 1, seq, slot + N_STEPS - 1, two);
    assert_int_equal(s, TN_OK);
    assert_rows_identical(ref + (N_STEPS - 1) * N_VOCAB, two, 1, "decode after a logit-less prefill");

    free(got);
    free(ref);
    tn_pool_free(pool);
    tn_forward_free(f);
    tn_kv_free(kv);
    tn_model_free(m);
}

/* Two sequences with different prompts, interleaved in one batch in a
 * shuffled order with shuffled slots, then decoded together, give the logits
 * each gives alone. */
static void test_two_sequences(void **state)
{
    enum { NA = 40, NB = 33, ND = 10 };
    tn_model *m = load_model();
    /* Prompt A: the first tokens of the story; prompt B: BOS and a later part. */
    int32_t ta[NA + ND], tb[NB + ND];
    memcpy(ta, g_expected, sizeof ta);
    tb[0] = 1;
    memcpy(tb + 1, g_expected + 150, (NB + ND - 1) * sizeof(int32_t));

    tn_kv_cache *kv;
    tn_forward *f;
    assert_int_equal(tn_kv_new(m, 128, 4, &kv), TN_OK);
    assert_int_equal(tn_forward_new(m, NA + NB, &f), TN_OK);
    float *ref_a = malloc((NA + ND) * N_VOCAB * sizeof(float));
    float *ref_b = malloc((NB + ND) * N_VOCAB * sizeof(float));
    decode_seq(f, kv, NULL, ta, NA + ND, 0, 0, 0, ref_a);
    tn_kv_clear(kv);
    decode_seq(f, kv, NULL, tb, NB + ND, 0, 0, 0, ref_b);
    tn_kv_clear(kv);

    /* One batch: A as sequence 3, B as sequence 1, in a random order. */
    int32_t order[NA + NB], slots[128];
    for (int i = 0; i < NA + NB; i++)
        order[i] = i;
    for (int i = 0; i < 128; i++)
        slots[i] = i;
    shuffle(order, NA + NB);
    shuffle(slots, 128);
    int32_t tok[NA + NB], pos[NA + NB], seq[NA + NB], slot[NA + NB];
    for (int k = 0; k < NA + NB; k++) {
        int i = order[k];
        bool is_a = i < NA;
        tok[k] = is_a ? ta[i] : tb[i - NA];
        pos[k] = is_a ? i : i - NA;
        seq[k] = is_a ? 3 : 1;
        slot[k] = slots[k];
    }
    float *got = malloc((NA + NB) * N_VOCAB * sizeof(float));
    tn_status s = run_all(f, kv, NULL, NA + NB, tok, pos, seq, slot, got);
    if (s != TN_OK)
        fail_msg("mixed batch: %s", tn_last_error());
    for (int k = 0; k < NA + NB; k++) {
        int i = order[k];
        const float *want = i < NA ? ref_a + (size_t)i * N_VOCAB : ref_b + (size_t)(i - NA) * N_VOCAB;
        assert_rows_identical(want, got + (size_t)k * N_VOCAB, 1, i < NA ? "mixed batch, seq A" : "mixed batch, seq B");
    }
    /* Then decode both together, B first in the batch, fresh shuffled slots. */
    for (int d = 0; d < ND; d++) {
        int32_t t2[2] = {tb[NB + d], ta[NA + d]}, p2[2] = {NB + d, NA + d}, s2[2] = {1, 3};
        int32_t sl2[2] = {slots[NA + NB + 2 * d], slots[NA + NB + 2 * d + 1]};
        float two[2 * N_VOCAB];
        assert_int_equal(run_all(f, kv, NULL, 2, t2, p2, s2, sl2, two), TN_OK);
        assert_rows_identical(ref_b + (size_t)(NB + d) * N_VOCAB, two, 1, "joint decode, seq B");
        assert_rows_identical(ref_a + (size_t)(NA + d) * N_VOCAB, two + N_VOCAB, 1, "joint decode, seq A");
    }
    free(got);
    free(ref_a);
    free(ref_b);
    tn_forward_free(f);
    tn_kv_free(kv);
    tn_model_free(m);
}

/* tn_kv_seq_rm frees a sequence's slots for reuse by another sequence;
 * tn_kv_seq_truncate rewinds; without them, writing a position twice is an
 * error. */
static void test_kv_reuse(void **state)
{
    enum { N = 24 };
    tn_model *m = load_model();
    float *ref = reference_logits(m, N);
    tn_kv_cache *kv;
    tn_forward *f;
    assert_int_equal(tn_kv_new(m, N, 2, &kv), TN_OK);
    assert_int_equal(tn_kv_n_slots(kv), N);
    assert_int_equal(tn_forward_new(m, N, &f), TN_OK);
    float *got = malloc(N * N_VOCAB * sizeof(float));

    /* Sequence 0 fills every slot with other tokens, then is removed; sequence
     * 1 reuses the slots (in reverse) and sees nothing of sequence 0. */
    int32_t junk[N];
    for (int i = 0; i < N; i++)
        junk[i] = (int32_t)(7 * i + 3) % N_VOCAB;
    decode_seq(f, kv, NULL, junk, N, 0, 0, 0, got);
    tn_kv_seq_rm(kv, 0);
    for (int i = 0; i < N; i++) {
        int32_t pos = i, seq = 1, slot = N - 1 - i;
        assert_int_equal(run_all(f, kv, NULL, 1, g_expected + i, &pos, &seq, &slot, got + (size_t)i * N_VOCAB), TN_OK);
    }
    assert_rows_identical(ref, got, N, "after seq_rm");

    /* Rewind sequence 1 to position 10 and replay 10.. into other slots. */
    tn_kv_seq_truncate(kv, 1, 10);
    for (int i = 10; i < N; i++) {
        int32_t pos = i, seq = 1, slot = i - 10; /* slots 0..13 were freed by the truncation */
        assert_int_equal(run_all(f, kv, NULL, 1, g_expected + i, &pos, &seq, &slot, got + (size_t)i * N_VOCAB), TN_OK);
    }
    assert_rows_identical(ref + 10 * N_VOCAB, got + 10 * N_VOCAB, N - 10, "after truncate");

    /* Position 5 of sequence 1 is in the cache (slot 18): writing it into
     * another slot (20, which holds position 3) is refused. */
    int32_t pos = 5, seq = 1, slot = 20;
    assert_int_equal(run_all(f, kv, NULL, 1, g_expected, &pos, &seq, &slot, got), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "already in kv_slot"));
    /* Rewriting it in its own slot 18 is fine and changes nothing. */
    slot = N - 1 - 5;
    assert_int_equal(run_all(f, kv, NULL, 1, g_expected + 5, &pos, &seq, &slot, got), TN_OK);
    assert_rows_identical(ref + 5 * N_VOCAB, got, 1, "rewrite in place");

    /* Overwriting a slot of another sequence evicts that cell. */
    tn_kv_clear(kv);
    decode_seq(f, kv, NULL, junk, 4, 0, 0, 0, got);
    decode_seq(f, kv, NULL, g_expected, N, 1, 0, 0, got); /* takes slots 0..3 from sequence 0 */
    assert_rows_identical(ref, got, N, "overwriting another sequence's slots");
    free(got);
    free(ref);
    tn_forward_free(f);
    tn_kv_free(kv);
    tn_model_free(m);
}

/* ==========================================================================
 * Malformed batches
 * ======================================================================== */

/* Each malformed batch is TN_ERR_INVALID naming the token and field, and
 * writes nothing: afterwards the cache still holds exactly the 5-token
 * prefix, and decoding continues with the reference logits. */
static void test_bad_batches(void **state)
{
    tn_model *m = load_model();
    float *ref = reference_logits(m, 8);
    tn_kv_cache *kv;
    tn_forward *f;
    assert_int_equal(tn_kv_new(m, 16, 2, &kv), TN_OK);
    assert_int_equal(tn_forward_new(m, 4, &f), TN_OK);
    float logits[4 * N_VOCAB];
    float *scratch = malloc(5 * N_VOCAB * sizeof(float));
    decode_seq(f, kv, NULL, g_expected, 5, 0, 0, 0, scratch);
    free(scratch);

    struct {
        int32_t tok[2], pos[2], seq[2], slot[2];
        int n;
        const char *needle;
    } cases[] = {
        {{g_expected[5], 512}, {5, 6}, {0, 0}, {5, 6}, 2, "token 1: token id 512"},
        {{g_expected[5], -1}, {5, 6}, {0, 0}, {5, 6}, 2, "token 1: token id -1"},
        {{g_expected[5], 3}, {5, -1}, {0, 0}, {5, 6}, 2, "token 1: pos -1"},
        {{g_expected[5], 3}, {5, 6}, {0, 2}, {5, 6}, 2, "token 1: seq_id 2"},
        {{g_expected[5], 3}, {5, 6}, {0, -1}, {5, 6}, 2, "token 1: seq_id -1"},
        {{g_expected[5], 3}, {5, 6}, {0, 0}, {5, 16}, 2, "token 1: kv_slot 16"},
        {{g_expected[5], 3}, {5, 6}, {0, 0}, {5, -3}, 2, "token 1: kv_slot -3"},
        {{g_expected[5], 3}, {5, 6}, {0, 0}, {5, 5}, 2, "token 1: kv_slot 5 is also used by token 0"},
        {{g_expected[5], 3}, {5, 5}, {0, 0}, {5, 6}, 2, "token 1: pos 5 of seq_id 0 is also given by token 0"},
        {{g_expected[5], 3}, {5, 2}, {0, 0}, {5, 6}, 2, "token 1: pos 2 of seq_id 0 is already in kv_slot 2"},
    };
    for (size_t c = 0; c < TN_ARRAY_LEN(cases); c++) {
        tn_status s = run_all(f, kv, NULL, cases[c].n, cases[c].tok, cases[c].pos, cases[c].seq, cases[c].slot,
                              logits);
        if (s != TN_ERR_INVALID || !strstr(tn_last_error(), cases[c].needle))
            fail_msg("case %zu: status %d, message '%s', expected '%s'", c, s, tn_last_error(), cases[c].needle);
    }
    /* Too many tokens; NULL arrays; logits wanted but no buffer. */
    int32_t t5[5] = {1, 1, 1, 1, 1}, p5[5] = {5, 6, 7, 8, 9}, q5[5] = {0}, s5[5] = {5, 6, 7, 8, 9};
    assert_int_equal(run_all(f, kv, NULL, 5, t5, p5, q5, s5, logits), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "n_tokens 5"));
    bool yes = true;
    tn_batch b = {1, t5, p5, q5, NULL, &yes};
    assert_int_equal(tn_forward_run(f, kv, NULL, &b, logits), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "kv_slot"));
    b.kv_slot = s5;
    assert_int_equal(tn_forward_run(f, kv, NULL, &b, NULL), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "logits"));
    assert_int_equal(tn_forward_run(f, NULL, NULL, &b, logits), TN_ERR_INVALID);
    assert_int_equal(tn_forward_run(f, kv, NULL, NULL, logits), TN_ERR_INVALID);
    /* An empty batch is a no-op. */
    b.n_tokens = 0;
    assert_int_equal(tn_forward_run(f, kv, NULL, &b, NULL), TN_OK);

    /* Nothing was written: positions 5..7 go in and match the reference. */
    int32_t pos[3] = {5, 6, 7}, seq[3] = {0, 0, 0}, slot[3] = {5, 6, 7};
    assert_int_equal(run_all(f, kv, NULL, 3, g_expected + 5, pos, seq, slot, logits), TN_OK);
    assert_rows_identical(ref + 5 * N_VOCAB, logits, 3, "after rejected batches");
    free(ref);
    tn_forward_free(f);
    tn_kv_free(kv);
    tn_model_free(m);
}

/* Bad sizes for the cache and the scratch are refused. */
static void test_bad_sizes(void **state)
{
    tn_model *m = load_model();
    tn_kv_cache *kv = (tn_kv_cache *)1;
    tn_forward *f = (tn_forward *)1;
    assert_int_equal(tn_kv_new(m, 0, 1, &kv), TN_ERR_INVALID);
    assert_null(kv);
    assert_int_equal(tn_kv_new(m, 4, 0, &kv), TN_ERR_INVALID);
    assert_int_equal(tn_forward_new(m, 0, &f), TN_ERR_INVALID);
    assert_null(f);
    tn_model_free(m);
    tn_model_free(NULL);
    tn_kv_free(NULL);
    tn_forward_free(NULL);
}

/* ==========================================================================
 * Malformed files (rewritten copies of stories260K)
 * ======================================================================== */

/* How a rewritten copy differs from the original. */
typedef struct edit {
    const char *drop_key;      /* metadata key left out */
    const char *arch;          /* replaces general.architecture and renames "llama." keys */
    const char *drop_tensor;   /* tensor left out */
    const char *bad_shape;     /* tensor written with one row fewer */
    const char *as_f16;        /* tensor written as F16 */
    const char *extra_tensor;  /* added copy of output_norm.weight under this name */
    bool permute_neox;         /* permute attn_q/attn_k rows from NORM to NEOX pairing */
    bool add_zero_bias;        /* add zero q/k/v biases */
    bool add_qk_norm;          /* add unit q/k norms */
    bool q8_0;                 /* matrices with whole blocks per row stored as Q8_0 */
} edit;

static float *g_bufs[512];
static int g_n_bufs;

static void *keep(void *p)
{
    assert_true(g_n_bufs < (int)TN_ARRAY_LEN(g_bufs));
    g_bufs[g_n_bufs++] = p;
    return p;
}

static void add_f32(tn_gguf_writer *w, const char *name, int n_dims, int64_t ne0, int64_t ne1, const float *data)
{
    int64_t ne[2] = {ne0, ne1};
    assert_int_equal(tn_gguf_add_tensor(w, name, TN_DTYPE_F32, n_dims, ne, data), TN_OK);
}

/* Writes a copy of stories260K with edit e applied; returns its path. */
static char *write_edited(const edit *e)
{
    tn_gguf *g;
    assert_int_equal(tn_gguf_open(MODEL_PATH, &g), TN_OK);
    tn_gguf_writer *w;
    assert_int_equal(tn_gguf_writer_new(&w), TN_OK);
    for (int64_t i = 0; i < tn_gguf_n_kv(g); i++) {
        const char *key = tn_gguf_kv_key(g, i);
        if (e->drop_key && strcmp(key, e->drop_key) == 0)
            continue;
        if (e->arch && strcmp(key, "general.architecture") == 0) {
            assert_int_equal(tn_gguf_set_str(w, key, e->arch), TN_OK);
        } else if (e->arch && strncmp(key, "llama.", 6) == 0) {
            char renamed[128];
            snprintf(renamed, sizeof renamed, "%s.%s", e->arch, key + 6);
            if (tn_gguf_kv_type(g, i) == TN_GGUF_FLOAT32) {
                float v;
                assert_int_equal(tn_gguf_get_f32(g, key, &v), TN_OK);
                assert_int_equal(tn_gguf_set_f32(w, renamed, v), TN_OK);
            } else if (tn_gguf_kv_type(g, i) == TN_GGUF_UINT32) {
                uint32_t v;
                assert_int_equal(tn_gguf_get_u32(g, key, &v), TN_OK);
                assert_int_equal(tn_gguf_set_u32(w, renamed, v), TN_OK);
            } /* other llama.* keys (a layout note) are dropped */
        } else {
            assert_int_equal(tn_gguf_set_from(w, g, i), TN_OK);
        }
    }
    for (int64_t i = 0; i < tn_gguf_n_tensors(g); i++) {
        const tn_gguf_tensor *t = tn_gguf_tensor_at(g, i);
        if (e->drop_tensor && strcmp(t->name, e->drop_tensor) == 0)
            continue;
        int64_t ne[4] = {t->ne[0], t->ne[1], t->ne[2], t->ne[3]};
        const void *data = t->data;
        tn_dtype type = t->type;
        if (e->bad_shape && strcmp(t->name, e->bad_shape) == 0)
            ne[1] -= 1;
        if (e->as_f16 && strcmp(t->name, e->as_f16) == 0) {
            int64_t n = ne[0] * ne[1];
            uint16_t *h = keep(malloc((size_t)n * 2));
            for (int64_t j = 0; j < n; j++)
                h[j] = tn_fp32_to_fp16(((const float *)t->data)[j]);
            data = h;
            type = TN_DTYPE_F16;
        }
        if (e->q8_0 && t->n_dims == 2 && ne[0] % 32 == 0) {
            size_t row = tn_dtype_row_size(TN_DTYPE_Q8_0, ne[0]);
            char *q = keep(malloc(row * (size_t)ne[1]));
            for (int64_t r = 0; r < ne[1]; r++)
                assert_int_equal(tn_quantize_row(TN_DTYPE_Q8_0, (const float *)t->data + r * ne[0], q + r * row, ne[0]),
                                 TN_OK);
            data = q;
            type = TN_DTYPE_Q8_0;
        }
        if (e->permute_neox && (strstr(t->name, "attn_q.weight") || strstr(t->name, "attn_k.weight"))) {
            /* Row (h, 2i) moves to (h, i) and (h, 2i+1) to (h, i + hd/2): the
             * inverse of llama.cpp's conversion permutation (head_dim 8). */
            const int hd = 8;
            float *p = keep(malloc((size_t)(ne[0] * ne[1]) * sizeof(float)));
            const float *src = t->data;
            for (int64_t r = 0; r < ne[1]; r++) {
                int64_t h = r / hd, j = r % hd;
                int64_t dst = h * hd + (j % 2 == 0 ? j / 2 : j / 2 + hd / 2);
                memcpy(p + dst * ne[0], src + r * ne[0], (size_t)ne[0] * sizeof(float));
            }
            data = p;
        }
        assert_int_equal(tn_gguf_add_tensor(w, t->name, type, t->n_dims, ne, data), TN_OK);
    }
    static const float zeros[64];
    static const float ones[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    for (int il = 0; il < 5; il++) {
        char name[64];
        if (e->add_zero_bias) {
            snprintf(name, sizeof name, "blk.%d.attn_q.bias", il);
            add_f32(w, name, 1, 64, 1, zeros);
            snprintf(name, sizeof name, "blk.%d.attn_k.bias", il);
            add_f32(w, name, 1, 32, 1, zeros);
            snprintf(name, sizeof name, "blk.%d.attn_v.bias", il);
            add_f32(w, name, 1, 32, 1, zeros);
        }
        if (e->add_qk_norm) {
            snprintf(name, sizeof name, "blk.%d.attn_q_norm.weight", il);
            add_f32(w, name, 1, 8, 1, ones);
            snprintf(name, sizeof name, "blk.%d.attn_k_norm.weight", il);
            add_f32(w, name, 1, 8, 1, ones);
        }
    }
    if (e->extra_tensor)
        add_f32(w, e->extra_tensor, 1, 64, 1, tn_gguf_find_tensor(g, "output_norm.weight")->data);
    char *path = tn_test_tmp_path(".gguf");
    tn_status s = tn_gguf_writer_write(w, path);
    if (s != TN_OK)
        fail_msg("write: %s", tn_last_error());
    tn_gguf_writer_free(w);
    tn_gguf_free(g);
    while (g_n_bufs > 0)
        free(g_bufs[--g_n_bufs]);
    return path;
}

/* Loads an edited copy; expects status want and a message containing needle. */
static void expect_load_error(const edit *e, tn_status want, const char *needle)
{
    char *path = write_edited(e);
    tn_model *m = (tn_model *)1;
    tn_status s = tn_model_load(path, &m);
    if (s != want || !strstr(tn_last_error(), needle))
        fail_msg("status %d, message '%s'; expected status %d naming '%s'", s, tn_last_error(), want, needle);
    assert_null(m);
    unlink(path);
    free(path);
}

/* Logits of the first n expected tokens, decoded by the model at path. */
static float *logits_of_file(const char *path, int n)
{
    tn_model *m;
    tn_status s = tn_model_load(path, &m);
    if (s != TN_OK)
        fail_msg("load %s: %s", path, tn_last_error());
    float *out = reference_logits(m, n);
    tn_model_free(m);
    return out;
}

/* A faithful copy loads and gives identical logits; each defect is reported
 * with the name of the key or tensor. */
static void test_bad_files(void **state)
{
    edit same = {0};
    char *path = write_edited(&same);
    tn_model *orig = load_model();
    float *ref = reference_logits(orig, 16);
    tn_model_free(orig);
    float *got = logits_of_file(path, 16);
    assert_rows_identical(ref, got, 16, "unedited copy");
    free(got);
    unlink(path);
    free(path);

    expect_load_error(&(edit){.bad_shape = "blk.2.attn_k.weight"}, TN_ERR_FORMAT, "blk.2.attn_k.weight");
    expect_load_error(&(edit){.bad_shape = "token_embd.weight"}, TN_ERR_FORMAT, "tokenizer.ggml.tokens has 512");
    expect_load_error(&(edit){.drop_key = "llama.embedding_length"}, TN_ERR_FORMAT, "llama.embedding_length");
    expect_load_error(&(edit){.drop_key = "llama.attention.layer_norm_rms_epsilon"}, TN_ERR_FORMAT,
                      "llama.attention.layer_norm_rms_epsilon");
    expect_load_error(&(edit){.drop_key = "general.architecture"}, TN_ERR_FORMAT, "general.architecture");
    expect_load_error(&(edit){.drop_tensor = "blk.4.ffn_down.weight"}, TN_ERR_FORMAT, "blk.4.ffn_down.weight");
    expect_load_error(&(edit){.drop_tensor = "output_norm.weight"}, TN_ERR_FORMAT, "output_norm.weight");
    expect_load_error(&(edit){.as_f16 = "blk.1.ffn_norm.weight"}, TN_ERR_UNSUPPORTED, "blk.1.ffn_norm.weight");
    expect_load_error(&(edit){.extra_tensor = "blk.0.attn_qkv.weight"}, TN_ERR_UNSUPPORTED, "blk.0.attn_qkv.weight");
    expect_load_error(&(edit){.arch = "gpt2"}, TN_ERR_UNSUPPORTED, "gpt2");
    /* qwen2 requires biases; qwen3 requires q/k norms. */
    expect_load_error(&(edit){.arch = "qwen2"}, TN_ERR_FORMAT, "blk.0.attn_q.bias");
    expect_load_error(&(edit){.arch = "qwen3"}, TN_ERR_FORMAT, "blk.0.attn_q_norm.weight");

    /* Tied embeddings: without output.weight the token embedding is used. */
    path = write_edited(&(edit){.drop_tensor = "output.weight"});
    tn_model *m;
    assert_int_equal(tn_model_load(path, &m), TN_OK);
    assert_ptr_equal(m->output.data, m->tok_embd.data);
    tn_model_free(m);
    unlink(path);
    free(path);

    /* qwen2 with zero biases and Wq/Wk rows permuted to NEOX pairing is the
     * same model: same logits up to the order of the q·k sums. */
    path = write_edited(&(edit){.arch = "qwen2", .permute_neox = true, .add_zero_bias = true});
    assert_int_equal(tn_model_load(path, &m), TN_OK);
    assert_int_equal(m->hp.rope_type, TN_ROPE_NEOX);
    assert_non_null(m->layers[3].bv.data);
    tn_model_free(m);
    got = logits_of_file(path, 16);
    float maxd = 0;
    for (int i = 0; i < 16 * N_VOCAB; i++)
        maxd = fmaxf(maxd, fabsf(got[i] - ref[i]));
    if (maxd > 1e-4f)
        fail_msg("qwen2 (NEOX, permuted) vs llama: max abs logit diff %g", (double)maxd);
    free(got);
    unlink(path);
    free(path);

    /* qwen3 (per-head q/k norms) loads and its prefill equals its decode. */
    path = write_edited(&(edit){.arch = "qwen3", .add_qk_norm = true});
    assert_int_equal(tn_model_load(path, &m), TN_OK);
    assert_non_null(m->layers[0].k_norm.data);
    float *dec = reference_logits(m, 16);
    tn_kv_cache *kv;
    tn_forward *f;
    assert_int_equal(tn_kv_new(m, 16, 1, &kv), TN_OK);
    assert_int_equal(tn_forward_new(m, 16, &f), TN_OK);
    int32_t pos[16], seq[16] = {0};
    for (int i = 0; i < 16; i++)
        pos[i] = i;
    float *pre = malloc(16 * N_VOCAB * sizeof(float));
    assert_int_equal(run_all(f, kv, NULL, 16, g_expected, pos, seq, pos, pre), TN_OK);
    assert_rows_identical(dec, pre, 16, "qwen3 prefill vs decode");
    maxd = 0;
    for (int i = 0; i < 16 * N_VOCAB; i++)
        maxd = fmaxf(maxd, fabsf(dec[i] - ref[i]));
    assert_true(maxd > 1e-3f); /* the norms do change the model */
    free(pre);
    free(dec);
    tn_forward_free(f);
    tn_kv_free(kv);
    tn_model_free(m);
    unlink(path);
    free(path);
    free(ref);
}

/* Asserts that prefilling g_expected[0..n) in one batch gives exactly the
 * logits of decoding it token by token, for any model with n_vocab >= 512. */
static void check_prefill_equals_decode(tn_model *m, int n, float *dec)
{
    int32_t nv = m->hp.n_vocab;
    tn_kv_cache *kv;
    tn_forward *f;
    assert_int_equal(tn_kv_new(m, n, 1, &kv), TN_OK);
    assert_int_equal(tn_forward_new(m, n, &f), TN_OK);
    int32_t pos[64], seq[64] = {0};
    assert_true(n <= 64);
    for (int i = 0; i < n; i++)
        pos[i] = i;
    for (int i = 0; i < n; i++) {
        assert_int_equal(run_all(f, kv, NULL, 1, g_expected + i, pos + i, seq, pos + i, dec + (size_t)i * nv), TN_OK);
    }
    tn_kv_clear(kv);
    float *pre = malloc((size_t)n * nv * sizeof(float));
    assert_int_equal(run_all(f, kv, NULL, n, g_expected, pos, seq, pos, pre), TN_OK);
    assert_int_equal(memcmp(pre, dec, (size_t)n * nv * sizeof(float)), 0);
    free(pre);
    tn_forward_free(f);
    tn_kv_free(kv);
}

/* F16 weights (the tiny random Llama 2 with its 32,000-token vocabulary)
 * and Q8_0 weights (a quantized copy of stories260K) load and run, prefill
 * equals decode bit for bit, and Q8_0 stays close to F32. */
static void test_other_dtypes(void **state)
{
    tn_model *m;
    tn_status s = tn_model_load(TN_SHARED_DATA "models/tiny-random/llama-2-tiny-random.gguf", &m);
    if (s != TN_OK)
        fail_msg("tiny-random: %s", tn_last_error());
    assert_int_equal(m->hp.n_vocab, 32000);
    assert_int_equal(m->hp.head_dim, 4);
    assert_int_equal(m->hp.n_rot, 4);
    assert_int_equal(m->layers[0].wq.type, TN_DTYPE_F16);
    float *dec = malloc(16 * 32000 * sizeof(float));
    check_prefill_equals_decode(m, 16, dec);
    for (int i = 0; i < 16 * 32000; i++)
        assert_true(isfinite(dec[i]));
    free(dec);
    tn_model_free(m);

    tn_model *orig = load_model();
    float *ref = reference_logits(orig, 32);
    tn_model_free(orig);
    char *path = write_edited(&(edit){.q8_0 = true});
    assert_int_equal(tn_model_load(path, &m), TN_OK);
    /* repacked at load where the ISA has the x16 kernel (load_repack.c) */
    assert_int_equal(m->layers[0].wq.type,
                     tn__x16_dtype_for(TN_DTYPE_Q8_0) != TN_DTYPE_COUNT ? TN_DTYPE_Q8_0X16 : TN_DTYPE_Q8_0);
    assert_int_equal(m->layers[0].ffn_down.type, TN_DTYPE_F32); /* 172 columns: not whole blocks */
    dec = malloc(32 * N_VOCAB * sizeof(float));
    check_prefill_equals_decode(m, 32, dec);
    float maxd = 0;
    int agree = 0;
    for (int i = 0; i < 32; i++) {
        agree += argmax(dec + i * N_VOCAB, N_VOCAB) == argmax(ref + i * N_VOCAB, N_VOCAB);
        for (int j = 0; j < N_VOCAB; j++)
            maxd = fmaxf(maxd, fabsf(dec[i * N_VOCAB + j] - ref[i * N_VOCAB + j]));
    }
    printf("q8_0 vs f32 on 32 positions: max abs logit diff %.4f, argmax agrees at %d/32\n", (double)maxd, agree);
    assert_true(maxd > 0.0f && maxd < 1.0f);
    assert_true(agree >= 28);
    free(dec);
    free(ref);
    tn_model_free(m);
    unlink(path);
    free(path);
}

int main(void)
{
    read_expected();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_hparams),
        cmocka_unit_test(test_greedy_decode),
        cmocka_unit_test(test_prefill_equals_decode),
        cmocka_unit_test(test_two_sequences),
        cmocka_unit_test(test_kv_reuse),
        cmocka_unit_test(test_bad_batches),
        cmocka_unit_test(test_bad_sizes),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_other_dtypes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
