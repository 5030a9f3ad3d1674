/*
 * test_kv_types.c — the F16 and INT8 (Q8) KV caches on the real stories260K
 * model.
 *
 * Key idea: for each cache type, the reference is the forward pass of the
 * SAME type run one token at a time: one prefill, uneven chunks on two
 * threads, shuffled slots and two interleaved sequences must give the same
 * logits bit for bit (batch invariance holds for every type). Quality is
 * checked against the F32 cache: the logits move by little, and greedy
 * decoding mostly keeps llama2.c's continuation. The row kernels are checked
 * against a double-precision reference, and the byte counts against the
 * layouts documented in kv.c.
 */
#include "kern/kvrows.h"
#include "model/model.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODEL_PATH TN_SHARED_DATA "models/stories260K/stories260K.v3.derived.gguf"
#define TOKENS_PATH TN_SHARED_DATA "models/stories260K/expected-greedy-t0.tokens.derived.txt"
#define N_STEPS 200
#define N_VOCAB 512

static int32_t g_tok[257];

static void read_tokens(void)
{
    assert_int_equal(tn_test_read_ints(TOKENS_PATH, g_tok, 257), 257);
}

static tn_model *load_model(void)
{
    tn_model *m = NULL;
    if (tn_model_load(MODEL_PATH, &m) != TN_OK)
        fail_msg("load: %s", tn_last_error());
    return m;
}

static tn_status run_all(tn_forward *f, tn_kv_cache *kv, tn_pool *pool, int32_t n, const int32_t *tok,
                         const int32_t *pos, const int32_t *seq, const int32_t *slot, float *logits)
{
    bool want[2 * N_STEPS];
    assert_true(n <= 2 * N_STEPS);
    for (int i = 0; i < n; i++)
        want[i] = true;
    tn_batch b = {n, tok, pos, seq, slot, want};
    return tn_forward_run(f, kv, pool, &b, logits);
}

/* Logits of g_tok[0..n) decoded one token per call into a fresh cache of `type`. */
static float *decode_logits(tn_model *m, tn_kv_type type, int n)
{
    tn_kv_cache *kv;
    tn_forward *f;
    assert_int_equal(tn_kv_new_typed(m, 512, 1, type, &kv), TN_OK);
    assert_int_equal(tn_kv_get_type(kv), type);
    assert_int_equal(tn_forward_new(m, 1, &f), TN_OK);
    float *out = malloc((size_t)n * N_VOCAB * sizeof(float));
    for (int32_t i = 0, seq = 0; i < n; i++)
        if (run_all(f, kv, NULL, 1, g_tok + i, &i, &seq, &i, out + (size_t)i * N_VOCAB) != TN_OK)
            fail_msg("decode %d: %s", i, tn_last_error());
    tn_forward_free(f);
    tn_kv_free(kv);
    return out;
}

static void assert_rows_identical(const float *a, const float *b, int n, const char *what)
{
    for (int i = 0; i < n; i++)
        if (memcmp(a + (size_t)i * N_VOCAB, b + (size_t)i * N_VOCAB, N_VOCAB * sizeof(float)) != 0)
            fail_msg("%s: logits row %d differ", what, i);
}

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* Batch invariance for one cache type: one prefill on shuffled slots,
 * uneven chunks on 2 threads, and two interleaved sequences all equal the
 * token-by-token run of the same type. */
static void check_invariance(tn_kv_type type)
{
    tn_model *m = load_model();
    float *ref = decode_logits(m, type, N_STEPS);
    tn_kv_cache *kv;
    tn_forward *f;
    tn_pool *pool;
    assert_int_equal(tn_kv_new_typed(m, 512, 3, type, &kv), TN_OK);
    assert_int_equal(tn_forward_new(m, 2 * N_STEPS, &f), TN_OK);
    assert_int_equal(tn_pool_new(2, &pool), TN_OK);
    int32_t pos[2 * N_STEPS], seq[2 * N_STEPS], slot[2 * N_STEPS], tok[2 * N_STEPS];
    for (int i = 0; i < 2 * N_STEPS; i++)
        slot[i] = i;
    for (int i = 2 * N_STEPS - 1; i > 0; i--) { /* shuffled slots */
        int j = (int)(rng() % (uint32_t)(i + 1));
        int32_t t = slot[i];
        slot[i] = slot[j];
        slot[j] = t;
    }
    for (int i = 0; i < N_STEPS; i++)
        pos[i] = i, seq[i] = 0;
    float *got = malloc((size_t)2 * N_STEPS * N_VOCAB * sizeof(float));
    if (run_all(f, kv, pool, N_STEPS, g_tok, pos, seq, slot, got) != TN_OK)
        fail_msg("prefill: %s", tn_last_error());
    assert_rows_identical(ref, got, N_STEPS, "one prefill vs decode");

    tn_kv_clear(kv);
    int chunks[] = {3, 50, 1, 17, 129};
    for (int c = 0, at = 0; c < 5; at += chunks[c], c++)
        assert_int_equal(run_all(f, kv, pool, chunks[c], g_tok + at, pos + at, seq, slot + at,
                                 got + (size_t)at * N_VOCAB),
                         TN_OK);
    assert_rows_identical(ref, got, N_STEPS, "chunked prefill vs decode");

    /* Two sequences (2 and 0) with the same prompt, interleaved: both equal the reference. */
    tn_kv_clear(kv);
    for (int i = 0; i < 2 * N_STEPS; i++) {
        tok[i] = g_tok[i / 2];
        pos[i] = i / 2;
        seq[i] = i % 2 ? 0 : 2;
    }
    if (run_all(f, kv, pool, 2 * N_STEPS, tok, pos, seq, slot, got) != TN_OK)
        fail_msg("two sequences: %s", tn_last_error());
    for (int i = 0; i < 2 * N_STEPS; i++)
        assert_rows_identical(ref + (size_t)(i / 2) * N_VOCAB, got + (size_t)i * N_VOCAB, 1, "interleaved");
    free(got);
    free(ref);
    tn_pool_free(pool);
    tn_forward_free(f);
    tn_kv_free(kv);
    tn_model_free(m);
}

static void test_f16_invariance(void **state) { check_invariance(TN_KV_F16); }
static void test_q8_invariance(void **state) { check_invariance(TN_KV_Q8); }

/* Against the F32 cache: max logit change and top-1 agreement over 200
 * teacher-forced positions. Measured: F16 0.023 and 200/200, Q8 1.08 and
 * 197/200 (stories260K's heads are only 8 wide, so one int8 scale covers
 * few values); a broken conversion disagrees almost everywhere. */
static void test_quality_vs_f32(void **state)
{
    tn_model *m = load_model();
    float *r32 = decode_logits(m, TN_KV_F32, N_STEPS);
    const tn_kv_type types[] = {TN_KV_F16, TN_KV_Q8};
    const float bound[] = {0.1f, 3.0f};
    const int min_agree[] = {N_STEPS - 2, N_STEPS - 10};
    for (int t = 0; t < 2; t++) {
        float *r = decode_logits(m, types[t], N_STEPS);
        float maxd = 0;
        int agree = 0;
        for (int i = 0; i < N_STEPS; i++) {
            int a = 0, b = 0;
            for (int j = 0; j < N_VOCAB; j++) {
                size_t k = (size_t)i * N_VOCAB + j;
                maxd = fmaxf(maxd, fabsf(r[k] - r32[k]));
                if (r[k] > r[(size_t)i * N_VOCAB + a])
                    a = j;
                if (r32[k] > r32[(size_t)i * N_VOCAB + b])
                    b = j;
            }
            agree += a == b;
        }
        printf("kv %s: max |logit - f32| = %g, top-1 agreement %d/%d\n", tn_kv_type_name(types[t]), (double)maxd,
               agree, N_STEPS);
        assert_true(maxd > 0.0f); /* the storage really is lossy */
        assert_true(maxd < bound[t]);
        assert_true(agree >= min_agree[t]);
        free(r);
    }
    free(r32);
    tn_model_free(m);
}

/* Bytes per token follow the layouts (5 layers, 4 KV heads of 8). */
static void test_bytes_and_names(void **state)
{
    tn_model *m = load_model();
    const size_t want[] = {5 * 2 * 32 * 4, 5 * 2 * 32 * 2, 5 * 2 * (32 + 4 * 4)};
    for (int t = 0; t < 3; t++) {
        tn_kv_cache *kv;
        assert_int_equal(tn_kv_new_typed(m, 16, 1, (tn_kv_type)t, &kv), TN_OK);
        assert_int_equal(tn_kv_bytes_per_token(kv), want[t]);
        tn_kv_type back;
        assert_true(tn_kv_type_from_name(tn_kv_type_name((tn_kv_type)t), &back));
        assert_int_equal(back, t);
        tn_kv_free(kv);
    }
    tn_kv_type x;
    assert_true(tn_kv_type_from_name("Q8", &x) && x == TN_KV_Q8);
    assert_false(tn_kv_type_from_name("q4", &x));
    assert_false(tn_kv_type_from_name("q", &x));
    tn_kv_cache *kv = NULL;
    assert_int_equal(tn_kv_new_typed(m, 16, 1, (tn_kv_type)7, &kv), TN_ERR_INVALID);
    assert_null(kv);
    tn_model_free(m);
}

/* Row kernels on odd lengths against double references. */
static void test_row_kernels(void **state)
{
    enum { N = 37, R = 5 };
    float x[R][N], q[N];
    int8_t q8[R][N];
    uint16_t h[R][N];
    float d[R];
    for (int j = 0; j < N; j++)
        q[j] = (float)((int)(rng() % 2001) - 1000) / 500.0f;
    for (int r = 0; r < R; r++) {
        for (int j = 0; j < N; j++) {
            x[r][j] = (float)((int)(rng() % 2001) - 1000) / (r + 1) / 300.0f;
            h[r][j] = tn_fp32_to_fp16(x[r][j]);
        }
        if (r == 3)
            memset(x[r], 0, sizeof x[r]); /* an all-zero row */
        tn_quantize_row_kv_q8(x[r], q8[r], &d[r], N);
        for (int j = 0; j < N; j++)
            assert_true(fabsf(d[r] * q8[r][j] - x[r][j]) <= 0.5001f * d[r] + 1e-12f);
    }
    assert_true(d[3] == 0.0f);
    const int32_t idx[] = {4, 0, 2, 3};
    float o8[4], o16[4], y8[N], y16[N];
    float p[4] = {0.1f, 0.4f, 0.3f, 0.2f};
    tn_dot_q8_rows(q, &q8[0][0], d, idx, N, 1, 4, N, 0.5f, o8);
    tn_dot_f16_rows(q, &h[0][0], idx, N, 4, N, 0.5f, o16);
    tn_axpy_q8_rows(y8, p, &q8[0][0], d, idx, N, 1, 4, N);
    tn_axpy_f16_rows(y16, p, &h[0][0], idx, N, 4, N);
    for (int i = 0; i < 4; i++) {
        double s8 = 0, s16 = 0;
        for (int j = 0; j < N; j++) {
            s8 += (double)q[j] * d[idx[i]] * q8[idx[i]][j];
            s16 += (double)q[j] * tn_fp16_to_fp32(h[idx[i]][j]);
        }
        assert_true(fabs(o8[i] - 0.5 * s8) < 1e-4);
        assert_true(fabs(o16[i] - 0.5 * s16) < 1e-4);
    }
    for (int j = 0; j < N; j++) {
        double s8 = 0, s16 = 0;
        for (int i = 0; i < 4; i++) {
            s8 += (double)p[i] * d[idx[i]] * q8[idx[i]][j];
            s16 += (double)p[i] * tn_fp16_to_fp32(h[idx[i]][j]);
        }
        assert_true(fabs(y8[j] - s8) < 1e-5);
        assert_true(fabs(y16[j] - s16) < 1e-5);
    }
}

int main(void)
{
    read_tokens();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_kernels),
        cmocka_unit_test(test_bytes_and_names),
        cmocka_unit_test(test_f16_invariance),
        cmocka_unit_test(test_q8_invariance),
        cmocka_unit_test(test_quality_vs_f32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
