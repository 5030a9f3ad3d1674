/*
 * test_sample.c — the sampler: RNG vectors, greedy, top-k, top-p, min-p,
 * penalties, reproducibility.
 *
 * Truncations are checked through the draw: with a huge temperature the
 * draw is uniform over whatever the truncations kept, so a few thousand
 * draws show exactly which set survived. Penalised logits are read back by
 * bisection: with greedy decoding, token 1 beats a reference token 0 of
 * logit y exactly when its penalised logit exceeds y (ties go to id 0).
 */
#include "testutil.h"

#include "engine/sample.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A small deterministic generator for test logits (independent of tn_rng). */
static uint64_t lcg_state;
static double lcg_uniform(void)
{
    lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(lcg_state >> 11) * 0x1.0p-53;
}
static float lcg_gauss(void)
{
    double u1 = lcg_uniform(), u2 = lcg_uniform();
    if (u1 < 1e-300)
        u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

static tn_sample_params plain_params(void)
{
    tn_sample_params p = tn_sample_params_default();
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = 1234;
    return p;
}

static tn_sampler *make(const tn_sample_params *p, int32_t n_vocab)
{
    tn_sampler *s = NULL;
    assert_int_equal(tn_sampler_new(p, n_vocab, &s), TN_OK);
    assert_non_null(s);
    return s;
}

/* Draws n times; marks in seen[] which ids came out (counts if counts != NULL). */
static void draw_many(tn_sampler *s, const float *logits, int32_t n_vocab, int n, long *counts)
{
    for (int i = 0; i < n; i++) {
        int32_t t = tn_sampler_sample(s, logits);
        assert_true(t >= 0 && t < n_vocab);
        counts[t]++;
    }
}

/* ---------------------------------------------------------------------- */

/*
 * Known outputs, computed independently with Python integers:
 *
 *   M = (1 << 64) - 1
 *   def splitmix(x):
 *       x = (x + 0x9e3779b97f4a7c15) & M; z = x
 *       z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M
 *       z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M
 *       return x, z ^ (z >> 31)
 *   rotl = lambda x, k: ((x << k) | (x >> (64 - k))) & M
 *   def seed(sd):  # four splitmix outputs
 *       s, x = [], sd
 *       for _ in range(4): x, z = splitmix(x); s.append(z)
 *       return s
 *   def next(s):
 *       r = (rotl((s[1] * 5) & M, 7) * 9) & M; t = (s[1] << 17) & M
 *       s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]
 *       s[2] ^= t; s[3] = rotl(s[3], 45); return r
 *
 * seed 0  -> state e220a8397b1dcdaf 6e789e6aa1b965f4 06c45d188009454f f88bb8a8724c81ec
 *            outputs 99ec5f36cb75f2b4 bf6e1f784956452a 1a5f849d4933e6e0 6aa594f1262d2d2c
 * seed 42 -> outputs 15780b2e0c2ec716 6104d9866d113a7e ae17533239e499a1 ecb8ad4703b360a1
 *            first uniform (next >> 11) * 2**-53 = 0.08386297105988216
 */
static void test_rng_known_outputs(void **state)
{
    (void)state;
    tn_rng r;
    tn_rng_seed(&r, 0);
    assert_true(r.s[0] == 0xe220a8397b1dcdafull);
    assert_true(r.s[1] == 0x6e789e6aa1b965f4ull);
    assert_true(r.s[2] == 0x06c45d188009454full);
    assert_true(r.s[3] == 0xf88bb8a8724c81ecull);
    const uint64_t want0[4] = {0x99ec5f36cb75f2b4ull, 0xbf6e1f784956452aull, 0x1a5f849d4933e6e0ull,
                               0x6aa594f1262d2d2cull};
    for (int i = 0; i < 4; i++)
        assert_true(tn_rng_next(&r) == want0[i]);

    tn_rng_seed(&r, 42);
    const uint64_t want42[4] = {0x15780b2e0c2ec716ull, 0x6104d9866d113a7eull, 0xae17533239e499a1ull,
                                0xecb8ad4703b360a1ull};
    for (int i = 0; i < 4; i++)
        assert_true(tn_rng_next(&r) == want42[i]);

    tn_rng_seed(&r, 42);
    double u = tn_rng_uniform(&r);
    assert_true(u == 0.08386297105988216);
    for (int i = 0; i < 100000; i++) {
        u = tn_rng_uniform(&r);
        assert_true(u >= 0.0 && u < 1.0);
    }
}

static void test_greedy_argmax_ties_lowest(void **state)
{
    (void)state;
    const float logits[8] = {0.5f, 3.0f, -1.0f, 7.25f, 7.25f, 2.0f, 7.25f, -INFINITY};
    tn_sample_params p = tn_sample_params_default();
    const float temps[3] = {0.0f, -1.0f, -0.0f};
    for (int k = 0; k < 3; k++) {
        p.temperature = temps[k];
        tn_sampler *s = make(&p, 8);
        for (int i = 0; i < 10; i++)
            assert_int_equal(tn_sampler_sample(s, logits), 3);
        tn_sampler_free(s);
    }
    /* a NaN never wins; -inf everywhere still gives a valid id */
    const float odd[4] = {NAN, 1.0f, NAN, 0.5f};
    p.temperature = 0.0f;
    tn_sampler *s = make(&p, 4);
    assert_int_equal(tn_sampler_sample(s, odd), 1);
    const float all_inf[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    assert_int_equal(tn_sampler_sample(s, all_inf), 0);
    tn_sampler_free(s);
    /* sampled mode with one finite logit must pick it */
    p = plain_params();
    s = make(&p, 4);
    const float one[4] = {-INFINITY, 2.0f, -INFINITY, NAN};
    for (int i = 0; i < 50; i++)
        assert_int_equal(tn_sampler_sample(s, one), 1);
    assert_int_equal(tn_sampler_sample(s, all_inf), 0);
    tn_sampler_free(s);
}

/* Greedy over a vocabulary of many blocks (the blocked scan): many ties
 * between blocks, NaN sprinkled in, -inf prefixes, the maximum in the last
 * partial block; always the first index of the maximum a plain scan finds. */
static void test_greedy_argmax_blocked(void **state)
{
    (void)state;
    enum { N = 5000 }; /* 19 full blocks of 256 and a partial one */
    float *logits = malloc(N * sizeof *logits);
    assert_non_null(logits);
    tn_sample_params p = tn_sample_params_default();
    p.temperature = 0.0f;
    tn_sampler *s = make(&p, N);
    lcg_state = 11;
    for (int round = 0; round < 40; round++) {
        for (int i = 0; i < N; i++)
            logits[i] = (float)floor(lcg_gauss() * 4.0) / 2.0f; /* coarse: ties in many blocks */
        for (int i = round; i < N; i += 37 + round)
            logits[i] = NAN;
        if (round % 4 == 1)
            for (int i = 0; i < 256 * (round % 7); i++)
                logits[i] = -INFINITY;
        if (round % 4 == 2)
            logits[N - 1 - round] = 100.0f; /* the last, partial block */
        if (round % 4 == 3)
            logits[256 * (round % 19) + 255] = 100.0f; /* a block's last lane */
        float best = -INFINITY;
        int32_t arg = 0;
        for (int i = 0; i < N; i++)
            if (logits[i] > best) {
                best = logits[i];
                arg = i;
            }
        assert_int_equal(tn_sampler_sample(s, logits), arg);
    }
    tn_sampler_free(s);
    free(logits);
}

static void test_top_k1_is_greedy(void **state)
{
    (void)state;
    enum { N = 5000 };
    float *logits = malloc(N * sizeof *logits);
    lcg_state = 7;
    const float temps[5] = {0.01f, 0.5f, 1.0f, 5.0f, 1000.0f};
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < N; i++)
            logits[i] = (float)floor(lcg_gauss() * 8.0) / 4.0f; /* coarse: many ties */
        float best = -INFINITY;
        int32_t arg = 0;
        for (int i = 0; i < N; i++)
            if (logits[i] > best) {
                best = logits[i];
                arg = i;
            }
        for (int t = 0; t < 5; t++) {
            tn_sample_params p = plain_params();
            p.temperature = temps[t];
            p.top_k = 1;
            p.seed = (uint64_t)(round * 10 + t);
            tn_sampler *s = make(&p, N);
            for (int i = 0; i < 5; i++)
                assert_int_equal(tn_sampler_sample(s, logits), arg);
            tn_sampler_free(s);
        }
    }
    free(logits);
}

/* The set {i : drawn at least once} must equal want[] exactly. */
static void assert_support(const long *counts, const bool *want, int32_t n)
{
    for (int32_t i = 0; i < n; i++) {
        if (want[i] != (counts[i] > 0))
            fail_msg("token %d: expected %s, drawn %ld times", (int)i, want[i] ? "in the kept set" : "never",
                     counts[i]);
    }
}

typedef struct ranked {
    float logit;
    int32_t id;
} ranked;

static int cmp_rank(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit > y->logit ? -1 : 1;
    return x->id < y->id ? -1 : 1;
}

/* Reference nucleus by full sort (the simple way the sampler avoids):
 * marks in want[] the smallest rank prefix of the first n_pool ranked
 * tokens whose mass (normalised over the pool) reaches top_p. */
static int32_t ref_nucleus(const float *logits, int32_t n, int32_t k, float top_p, float min_p, bool *want)
{
    ranked *r = malloc((size_t)n * sizeof *r);
    for (int32_t i = 0; i < n; i++)
        r[i] = (ranked){logits[i], i};
    qsort(r, (size_t)n, sizeof *r, cmp_rank);
    int32_t pool = (k > 0 && k < n) ? k : n;
    double z = 0;
    for (int32_t i = 0; i < pool; i++)
        z += exp((double)r[i].logit - r[0].logit);
    int32_t keep = pool;
    if (top_p < 1.0f) {
        double acc = 0;
        for (int32_t i = 0; i < pool; i++) {
            acc += exp((double)r[i].logit - r[0].logit) / z;
            if (acc >= top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    if (min_p > 0.0f) {
        int32_t m = 1;
        while (m < keep && exp((double)r[m].logit - r[0].logit) >= min_p)
            m++;
        keep = m;
    }
    memset(want, 0, (size_t)n * sizeof *want);
    for (int32_t i = 0; i < keep; i++)
        want[r[i].id] = true;
    free(r);
    return keep;
}

static void test_top_p_frequencies(void **state)
{
    (void)state;
    /* probabilities .40 .25 .15 .10 .05 .03 .015 .005; top_p 0.85:
     * cumulative .40 .65 .80 .90 -> the nucleus is ids {0,1,2,3} (shuffled
     * below so order in the array does not matter) */
    const double prob[8] = {0.40, 0.25, 0.15, 0.10, 0.05, 0.03, 0.015, 0.005};
    const int perm[8] = {5, 2, 7, 0, 3, 6, 1, 4}; /* id perm[j] has prob[j] */
    float logits[8];
    for (int j = 0; j < 8; j++)
        logits[perm[j]] = (float)log(prob[j]) + 3.0f;
    tn_sample_params p = plain_params();
    p.top_p = 0.85f;
    p.seed = 99;
    tn_sampler *s = make(&p, 8);
    enum { DRAWS = 200000 };
    long counts[8] = {0};
    draw_many(s, logits, 8, DRAWS, counts);
    tn_sampler_free(s);
    double chi2 = 0;
    for (int j = 0; j < 8; j++) {
        long c = counts[perm[j]];
        if (j >= 4) {
            assert_int_equal(c, 0);
            continue;
        }
        double expect = DRAWS * prob[j] / 0.90;
        chi2 += (c - expect) * (c - expect) / expect;
    }
    /* 3 degrees of freedom: P(chi2 > 30) ~ 1.4e-6; with a fixed seed this
     * is deterministic anyway, the bound only has to hold for a correct
     * sampler */
    assert_true(chi2 < 30.0);
}

/* No truncation at all: the draw walks the whole vocabulary in blocks.
 * Five live tokens spread over three blocks (one partial), everything else
 * -inf or NaN; frequencies must follow softmax(logits / T) with T = 2. */
static void test_temperature_frequencies(void **state)
{
    (void)state;
    enum { N = 600, DRAWS = 100000 };
    float logits[N];
    for (int i = 0; i < N; i++)
        logits[i] = (i % 2) ? -INFINITY : NAN;
    const int ids[5] = {3, 255, 256, 511, 599};
    const float lg[5] = {1.0f, 2.0f, -0.5f, 0.0f, 1.5f};
    double prob[5], z = 0;
    for (int j = 0; j < 5; j++) {
        logits[ids[j]] = lg[j];
        z += exp(lg[j] / 2.0);
    }
    for (int j = 0; j < 5; j++)
        prob[j] = exp(lg[j] / 2.0) / z;
    tn_sample_params p = plain_params();
    p.temperature = 2.0f;
    p.seed = 4242;
    tn_sampler *s = make(&p, N);
    long counts[N];
    memset(counts, 0, sizeof counts);
    draw_many(s, logits, N, DRAWS, counts);
    tn_sampler_free(s);
    double chi2 = 0;
    long live = 0;
    for (int j = 0; j < 5; j++) {
        double e = DRAWS * prob[j];
        chi2 += (counts[ids[j]] - e) * (counts[ids[j]] - e) / e;
        live += counts[ids[j]];
    }
    assert_int_equal(live, DRAWS); /* -inf and NaN never drawn */
    /* 4 degrees of freedom: P(chi2 > 32) ~ 2e-6 */
    assert_true(chi2 < 32.0);
}

/* Large vocabularies exercise the quickselect nucleus (no top-k) and the
 * min-p prefilter; the kept set must equal the one found by sorting. */
static void test_top_p_large_vocab_exact_set(void **state)
{
    (void)state;
    enum { N = 16000 };
    float *logits = malloc(N * sizeof *logits);
    bool *want = malloc(N * sizeof *want);
    long *counts = malloc(N * sizeof *counts);
    struct {
        float scale, top_p, min_p;
        int32_t k;
    } cases[] = {
        {4.0f, 0.50f, 0.0f, 0},   /* quickselect over the whole vocabulary */
        {4.0f, 0.90f, 0.0f, 0},
        {3.0f, 0.95f, 0.05f, 0},  /* min-p prefilter, nucleus inside it */
        {1.0f, 0.30f, 0.2f, 0},   /* min-p keeps more than the nucleus */
        {4.0f, 0.95f, 0.001f, 0}, /* nucleus shorter than the min-p set */
        {4.0f, 0.70f, 0.0f, 40},  /* top-k then top-p over the 40 */
        {4.0f, 0.95f, 0.05f, 40}, /* the default chain */
        {2.0f, 1.00f, 0.0f, 25},  /* top-k alone */
    };
    lcg_state = 2024;
    for (size_t c = 0; c < TN_ARRAY_LEN(cases); c++) {
        for (int i = 0; i < N; i++)
            logits[i] = lcg_gauss() * cases[c].scale;
        /* a few exact ties among the top */
        logits[17] = logits[18] = logits[19] = 3.5f * cases[c].scale;
        int32_t keep = ref_nucleus(logits, N, cases[c].k, cases[c].top_p, cases[c].min_p, want);
        assert_true(keep >= 1 && keep < 2000);
        tn_sample_params p = plain_params();
        p.temperature = 1e6f; /* uniform over the kept set */
        p.top_p = cases[c].top_p;
        p.min_p = cases[c].min_p;
        p.top_k = cases[c].k;
        p.seed = 5 + c;
        tn_sampler *s = make(&p, N);
        memset(counts, 0, N * sizeof *counts);
        draw_many(s, logits, N, keep * 25 + 100, counts);
        tn_sampler_free(s);
        assert_support(counts, want, N);
    }
    free(logits);
    free(want);
    free(counts);
}

/* A sweep of top_p over one moderate vocabulary, so that the nucleus
 * boundary falls on every kind of place in find_nucleus (a partition pivot,
 * the final scan). */
static void test_top_p_sweep(void **state)
{
    (void)state;
    enum { N = 1500 };
    float *logits = malloc(N * sizeof *logits);
    bool *want = malloc(N * sizeof *want);
    long *counts = malloc(N * sizeof *counts);
    lcg_state = 77;
    for (int i = 0; i < N; i++)
        logits[i] = lcg_gauss() * 3.0f;
    for (int step = 1; step < 25; step++) {
        float top_p = (float)step / 25.0f;
        int32_t keep = ref_nucleus(logits, N, 0, top_p, 0.0f, want);
        tn_sample_params p = plain_params();
        p.temperature = 1e6f;
        p.top_p = top_p;
        p.seed = (uint64_t)step;
        tn_sampler *s = make(&p, N);
        memset(counts, 0, N * sizeof *counts);
        draw_many(s, logits, N, keep * 25 + 100, counts);
        tn_sampler_free(s);
        assert_support(counts, want, N);
    }
    free(logits);
    free(want);
    free(counts);
}

static void test_min_p_cut(void **state)
{
    (void)state;
    /* p_max = e^0; min_p 0.1 keeps logit >= log(0.1) = -2.3026 */
    const float logits[6] = {-2.0f, 0.0f, -2.4f, -1.0f, -5.0f, -2.30f};
    const bool want[6] = {true, true, false, true, false, true};
    tn_sample_params p = plain_params();
    p.temperature = 1e6f;
    p.min_p = 0.1f;
    tn_sampler *s = make(&p, 6);
    long counts[6] = {0};
    draw_many(s, logits, 6, 5000, counts);
    tn_sampler_free(s);
    assert_support(counts, want, 6);
    /* same through the top-k path */
    p.top_k = 5;
    s = make(&p, 6);
    memset(counts, 0, sizeof counts);
    draw_many(s, logits, 6, 5000, counts);
    tn_sampler_free(s);
    assert_support(counts, want, 6);
    /* min_p above 1 still keeps the best token, on both paths */
    for (int32_t k = 0; k <= 5; k += 5) {
        p.top_k = k;
        p.min_p = 2.0f;
        s = make(&p, 6);
        for (int i = 0; i < 100; i++)
            assert_int_equal(tn_sampler_sample(s, logits), 1);
        tn_sampler_free(s);
    }
}

/* The penalised logit of token 1 (raw logit x) after accepting hist[],
 * read back by bisection against a reference token 0 under greedy. */
static float probe_penalised(tn_sample_params p, float x, const int32_t *hist, int n_hist)
{
    p.temperature = 0.0f;
    double lo = -100.0, hi = 100.0; /* invariant: token 1 wins at lo, loses at hi */
    for (int it = 0; it < 200; it++) {
        double mid = 0.5 * (lo + hi);
        if ((float)mid == (float)lo || (float)mid == (float)hi)
            break;
        tn_sampler *s = make(&p, 3);
        for (int i = 0; i < n_hist; i++)
            tn_sampler_accept(s, hist[i]);
        float logits[3] = {(float)mid, x, -1000.0f};
        int32_t t = tn_sampler_sample(s, logits);
        tn_sampler_free(s);
        if (t == 1)
            lo = mid;
        else
            hi = mid;
    }
    return (float)hi;
}

static void test_penalties(void **state)
{
    (void)state;
    tn_sample_params p = plain_params();
    const int32_t once[1] = {1};
    const int32_t thrice[4] = {1, 2, 1, 1};
    const int32_t none[1] = {2};
    const float tol = 1e-4f;

    /* no penalty: the logit is unchanged */
    assert_float_equal(probe_penalised(p, 1.5f, once, 1), 1.5f, tol);

    /* repetition: positive logits divided, negative multiplied, once
     * whatever the count */
    p.repeat_penalty = 1.5f;
    assert_float_equal(probe_penalised(p, 3.0f, once, 1), 2.0f, tol);
    assert_float_equal(probe_penalised(p, 3.0f, thrice, 4), 2.0f, tol);
    assert_float_equal(probe_penalised(p, -2.0f, once, 1), -3.0f, tol);
    assert_float_equal(probe_penalised(p, 3.0f, none, 1), 3.0f, tol);

    /* presence: subtracted once if present */
    p.repeat_penalty = 1.0f;
    p.presence_penalty = 0.75f;
    assert_float_equal(probe_penalised(p, 1.0f, once, 1), 0.25f, tol);
    assert_float_equal(probe_penalised(p, 1.0f, thrice, 4), 0.25f, tol);
    assert_float_equal(probe_penalised(p, 1.0f, none, 1), 1.0f, tol);

    /* frequency: subtracted per occurrence */
    p.presence_penalty = 0.0f;
    p.frequency_penalty = 0.5f;
    assert_float_equal(probe_penalised(p, 1.0f, once, 1), 0.5f, tol);
    assert_float_equal(probe_penalised(p, 1.0f, thrice, 4), -0.5f, tol);

    /* all three, in llama.cpp's order: repeat first, then the subtractions */
    p.repeat_penalty = 2.0f;
    p.presence_penalty = 0.25f;
    p.frequency_penalty = 0.5f;
    assert_float_equal(probe_penalised(p, 4.0f, thrice, 4), 4.0f / 2.0f - 3 * 0.5f - 0.25f, tol);
    assert_float_equal(probe_penalised(p, -1.0f, thrice, 4), -1.0f * 2.0f - 3 * 0.5f - 0.25f, tol);

    /* the window: only the last penalty_last_n accepted tokens count */
    p.repeat_penalty = 1.0f;
    p.presence_penalty = 0.0f;
    p.frequency_penalty = 1.0f;
    p.penalty_last_n = 2;
    const int32_t old[4] = {1, 1, 2, 2};    /* both 1s have left the window */
    const int32_t recent[4] = {2, 2, 2, 1}; /* one 1 in the window */
    const int32_t both[3] = {2, 1, 1};      /* two */
    assert_float_equal(probe_penalised(p, 1.0f, old, 4), 1.0f, tol);
    assert_float_equal(probe_penalised(p, 1.0f, recent, 4), 0.0f, tol);
    assert_float_equal(probe_penalised(p, 1.0f, both, 3), -1.0f, tol);
    p.penalty_last_n = 0; /* off */
    assert_float_equal(probe_penalised(p, 1.0f, both, 3), 1.0f, tol);
    p.penalty_last_n = -1; /* everything ever accepted */
    assert_float_equal(probe_penalised(p, 1.0f, old, 4), -1.0f, tol);

    /* out-of-range ids are ignored by accept */
    const int32_t bad[3] = {-1, 3, 1000};
    assert_float_equal(probe_penalised(p, 1.0f, bad, 3), 1.0f, tol);
}

/* Penalties must not touch the caller's logits. */
static void test_logits_not_modified(void **state)
{
    (void)state;
    float logits[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    tn_sample_params p = plain_params();
    p.repeat_penalty = 1.3f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    tn_sampler *s = make(&p, 4);
    tn_sampler_accept(s, 3);
    tn_sampler_accept(s, 2);
    for (int i = 0; i < 20; i++)
        tn_sampler_accept(s, tn_sampler_sample(s, logits));
    tn_sampler_free(s);
    for (int i = 0; i < 4; i++)
        assert_true(logits[i] == (float)(i + 1));
}

static void run_sequence(uint64_t seed, const float *logits, int32_t n, int32_t *out, int len)
{
    tn_sample_params p = tn_sample_params_default();
    p.temperature = 1.5f;
    p.top_k = 0;
    p.top_p = 0.98f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.1f;
    p.seed = seed;
    tn_sampler *s = make(&p, n);
    for (int i = 0; i < len; i++) {
        out[i] = tn_sampler_sample(s, logits);
        tn_sampler_accept(s, out[i]);
    }
    tn_sampler_free(s);
}

static void test_seed_reproducible(void **state)
{
    (void)state;
    enum { N = 1000, LEN = 200 };
    float logits[N];
    lcg_state = 31337;
    for (int i = 0; i < N; i++)
        logits[i] = lcg_gauss();
    int32_t a[LEN], b[LEN], c[LEN];
    run_sequence(1, logits, N, a, LEN);
    run_sequence(1, logits, N, b, LEN);
    run_sequence(2, logits, N, c, LEN);
    assert_memory_equal(a, b, sizeof a);
    int diff = 0;
    for (int i = 0; i < LEN; i++)
        diff += a[i] != c[i];
    assert_true(diff > LEN / 2);
}

/* The bias is added before the chain: +100 on a low token makes greedy pick
 * it, -100 on the argmax makes greedy pick the runner-up (also with
 * penalties on and in sampled mode with top-k); the caller's logits are
 * untouched; n == 0 clears; a bad id is rejected and the old bias stays. */
static void test_logit_bias(void **state)
{
    (void)state;
    const float logits[6] = {1.0f, 4.0f, -2.0f, 9.0f, 6.5f, 0.25f};
    float copy[6];
    memcpy(copy, logits, sizeof copy);
    tn_sample_params p = tn_sample_params_default();
    p.temperature = 0.0f;
    tn_sampler *s = make(&p, 6);
    assert_int_equal(tn_sampler_sample(s, logits), 3);

    const int32_t low[1] = {2};
    const float plus[1] = {100.0f};
    assert_int_equal(tn_sampler_set_logit_bias(s, low, plus, 1), TN_OK);
    assert_int_equal(tn_sampler_sample(s, logits), 2);
    assert_memory_equal(copy, logits, sizeof copy);

    const int32_t top[1] = {3};
    const float minus[1] = {-100.0f};
    assert_int_equal(tn_sampler_set_logit_bias(s, top, minus, 1), TN_OK);
    assert_int_equal(tn_sampler_sample(s, logits), 4);

    /* a bad id: rejected, named, the -100 on token 3 stays */
    const int32_t bad[2] = {1, 6};
    const float two[2] = {1.0f, 1.0f};
    assert_int_equal(tn_sampler_set_logit_bias(s, bad, two, 2), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "token id 6"));
    const int32_t neg[1] = {-1};
    assert_int_equal(tn_sampler_set_logit_bias(s, neg, plus, 1), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "token id -1"));
    const float inf[1] = {INFINITY};
    assert_int_equal(tn_sampler_set_logit_bias(s, low, inf, 1), TN_ERR_INVALID);
    assert_int_equal(tn_sampler_sample(s, logits), 4);

    /* cleared: back to the argmax */
    assert_int_equal(tn_sampler_set_logit_bias(s, NULL, NULL, 0), TN_OK);
    assert_int_equal(tn_sampler_sample(s, logits), 3);
    tn_sampler_free(s);

    /* with penalties on (token 4 seen), the ban still holds and applies
     * before the penalty: token 1 wins over a penalised 4 */
    p.repeat_penalty = 2.0f;
    s = make(&p, 6);
    tn_sampler_accept(s, 4);
    assert_int_equal(tn_sampler_set_logit_bias(s, top, minus, 1), TN_OK);
    assert_int_equal(tn_sampler_sample(s, logits), 1);
    tn_sampler_free(s);

    /* sampled with top-k 2 at temperature 1: the banned token never comes */
    p = plain_params();
    p.top_k = 2;
    s = make(&p, 6);
    assert_int_equal(tn_sampler_set_logit_bias(s, top, minus, 1), TN_OK);
    for (int i = 0; i < 200; i++) {
        int32_t t = tn_sampler_sample(s, logits);
        assert_true(t == 4 || t == 1);
    }
    tn_sampler_free(s);
}

static void test_bad_params(void **state)
{
    (void)state;
    tn_sampler *s = (tn_sampler *)&s; /* must be reset to NULL */
    tn_sample_params p = tn_sample_params_default();
    p.temperature = NAN;
    assert_int_equal(tn_sampler_new(&p, 10, &s), TN_ERR_INVALID);
    assert_null(s);
    assert_non_null(strstr(tn_last_error(), "temperature"));
    p = tn_sample_params_default();
    p.repeat_penalty = 0.0f;
    assert_int_equal(tn_sampler_new(&p, 10, &s), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "repeat_penalty"));
    p = tn_sample_params_default();
    p.penalty_last_n = -2;
    assert_int_equal(tn_sampler_new(&p, 10, &s), TN_ERR_INVALID);
    p = tn_sample_params_default();
    assert_int_equal(tn_sampler_new(&p, 0, &s), TN_ERR_INVALID);
    p.top_p = NAN;
    assert_int_equal(tn_sampler_new(&p, 10, &s), TN_ERR_INVALID);

    p = tn_sample_params_default();
    assert_true(p.temperature == 0.8f && p.top_k == 40 && p.top_p == 0.95f && p.min_p == 0.05f);
    assert_true(p.repeat_penalty == 1.0f && p.presence_penalty == 0.0f && p.frequency_penalty == 0.0f);
    assert_int_equal(p.penalty_last_n, 64);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rng_known_outputs),
        cmocka_unit_test(test_greedy_argmax_ties_lowest),
        cmocka_unit_test(test_greedy_argmax_blocked),
        cmocka_unit_test(test_top_k1_is_greedy),
        cmocka_unit_test(test_top_p_frequencies),
        cmocka_unit_test(test_temperature_frequencies),
        cmocka_unit_test(test_top_p_large_vocab_exact_set),
        cmocka_unit_test(test_top_p_sweep),
        cmocka_unit_test(test_min_p_cut),
        cmocka_unit_test(test_penalties),
        cmocka_unit_test(test_logits_not_modified),
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_logit_bias),
        cmocka_unit_test(test_bad_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
