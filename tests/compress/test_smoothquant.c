/*
 * test_smoothquant.c — `tern quantize ... w8a8` (src/compress/smoothquant.h)
 * on stories260K with a slice of Shakespeare as calibration text.
 *
 * Asserts: the formula of the scales on known values; the written file has
 * every layer matrix as W8A8 and loads; the migration is an identity up to
 * int8 rounding — the scale s_j recovered from the norm weight (g_j / g'_j)
 * times the dequantized q/k/v/gate/up columns gives back the original
 * weights within half a quantization step; the W8A8 model's prefill equals
 * its token-by-token decode bit for bit; its KL against F32 is small and
 * positive; loaded with the x16 repack (kern/w8a8_x16.h, where the ISA
 * has the kernel) its logits of a prefill and a greedy decode are the file
 * layout's bit for bit; bad alpha and a MoE model are clear errors.
 */
#include "compress/perplexity.h"
#include "compress/smoothquant.h"
#include "kern/hadamard.h"
#include "kern/repack.h"
#include "kern/w8a8.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STORIES TN_SHARED_DATA "models/stories260K/stories260K.v3.derived.gguf"
#define TEXT TN_SHARED_DATA "corpora/en/tinyshakespeare/input.txt"

static char *g_text;
static size_t g_len;
static char *g_out;

static void test_scales_formula(void **state)
{
    const float amax[] = {4.0f, 0.0f, 9.0f, 1.0f}, wmax[] = {1.0f, 2.0f, 0.0f, 4.0f};
    float s[4];
    tn_smoothquant_scales(amax, wmax, 4, 0.5f, s);
    assert_true(fabsf(s[0] - 2.0f) < 1e-6f);  /* sqrt(4) / sqrt(1) */
    assert_true(s[1] == 1.0f && s[2] == 1.0f); /* a zero max: no migration */
    assert_true(fabsf(s[3] - 0.5f) < 1e-6f);  /* sqrt(1) / sqrt(4) */
    tn_smoothquant_scales(amax, wmax, 1, 1.0f, s);
    assert_true(fabsf(s[0] - 4.0f) < 1e-6f);
}

static tn_w8a8_result quantize_rot(const char *keep, const char *rotate)
{
    tn_w8a8_opts o = {.in_path = STORIES, .out_path = g_out, .calib_text = g_text, .calib_len = g_len,
                      .alpha = 0.5f, .n_ctx = 64, .n_chunks = 4, .n_threads = 2, .keep = keep, .rotate = rotate};
    tn_w8a8_result r;
    if (tn_quantize_w8a8(&o, &r) != TN_OK)
        fail_msg("w8a8: %s", tn_last_error());
    return r;
}

static void quantize(const char *keep)
{
    tn_w8a8_result r = quantize_rot(keep, NULL);
    assert_int_equal(r.n_rotated, 0);
    assert_int_equal(r.n_chunks, 4);
    assert_int_equal(r.n_w8a8, keep ? 30 : 35);
    assert_true(r.min_s > 0 && r.max_s > r.min_s);
}

/* s_j = g_j / g'_j; W'[r][j] / s_j must equal W[r][j] within half a step
 * (times a factor per row c_r for attn_v, whose rows also carry the
 * attn_output migration: c_r is estimated from the row's largest element). */
static void check_columns(const tn_weight *orig, const tn_weight *q, const float *g, const float *g2, bool row_factor)
{
    assert_int_equal(q->type, TN_DTYPE_W8A8);
    const int64_t n_in = orig->ne[0];
    float *a = malloc((size_t)n_in * sizeof *a), *b = malloc((size_t)n_in * sizeof *b);
    int moved = 0;
    for (int64_t r = 0; r < orig->ne[1]; r++) {
        assert_int_equal(tn_dequantize_row(orig->type, (const char *)orig->data + tn_dtype_row_size(orig->type, n_in) * r,
                                           a, n_in),
                         TN_OK);
        const char *row = (const char *)q->data + TN_W8A8_ROW(n_in) * (size_t)r;
        tn_w8a8_dequantize_row(row, b, n_in);
        float d, c = 1.0f, slack = 0.0f;
        memcpy(&d, row, 4);
        if (row_factor) {
            int64_t jm = 0;
            for (int64_t j = 1; j < n_in; j++)
                if (fabsf(b[j]) > fabsf(b[jm]))
                    jm = j;
            c = b[jm] / (g[jm] / g2[jm]) / a[jm];
            slack = 0.01f;
        }
        for (int64_t j = 0; j < n_in; j++) {
            const float s = g[j] / g2[j];
            moved += fabsf(s - 1.0f) > 0.01f;
            if (fabsf(b[j] / s - c * a[j]) > 0.5001f * d / s + slack * fabsf(c * a[j]) + 1e-7f)
                fail_msg("row %lld col %lld: %g / %g vs %g", (long long)r, (long long)j, (double)b[j], (double)s,
                         (double)a[j]);
        }
    }
    assert_true(moved > 0); /* the scales are not all 1 */
    free(a);
    free(b);
}

/* Prefill of 40 tokens == token-by-token decode, bit for bit. */
static void prefill_equals_decode(tn_model *m1)
{
    enum { N = 40 };
    int32_t tok[N], pos[N], seq[N] = {0};
    bool want[N];
    for (int i = 0; i < N; i++)
        tok[i] = 1 + (i * 37) % 500, pos[i] = i, want[i] = true;
    tn_kv_cache *kv;
    tn_forward *f;
    tn_pool *pool;
    assert_int_equal(tn_kv_new(m1, N, 1, &kv), TN_OK);
    assert_int_equal(tn_forward_new(m1, N, &f), TN_OK);
    assert_int_equal(tn_pool_new(2, &pool), TN_OK);
    const int V = m1->hp.n_vocab;
    float *l1 = malloc(sizeof(float) * N * V), *l2 = malloc(sizeof(float) * N * V);
    tn_batch b = {N, tok, pos, seq, pos, want};
    assert_int_equal(tn_forward_run(f, kv, pool, &b, l1), TN_OK);
    tn_kv_clear(kv);
    for (int i = 0; i < N; i++) {
        tn_batch one = {1, tok + i, pos + i, seq, pos + i, want};
        assert_int_equal(tn_forward_run(f, kv, NULL, &one, l2 + (size_t)i * V), TN_OK);
    }
    assert_memory_equal(l1, l2, sizeof(float) * N * V);
    free(l1);
    free(l2);
    tn_pool_free(pool);
    tn_forward_free(f);
    tn_kv_free(kv);
}

/* tn_model_load keeping the file's W8A8 rows (TERN_REPACK=0), which the
 * checks here read directly. */
static tn_status load_plain(const char *path, tn_model **m)
{
    setenv("TERN_REPACK", "0", 1);
    const tn_status s = tn_model_load(path, m);
    unsetenv("TERN_REPACK");
    return s;
}

/* Logits of a 40-token prefill (2 threads) and then of 16 greedy decode
 * steps, (40 + 16, n_vocab); the tokens chosen go to out_tok. */
static float *run_greedy(tn_model *m, int32_t *out_tok)
{
    enum { N = 40, G = 16 };
    int32_t tok[N], pos[N], seq[N] = {0};
    bool want[N];
    for (int i = 0; i < N; i++)
        tok[i] = 1 + (i * 53) % 500, pos[i] = i, want[i] = true;
    tn_kv_cache *kv;
    tn_forward *f;
    tn_pool *pool;
    assert_int_equal(tn_kv_new(m, N + G, 1, &kv), TN_OK);
    assert_int_equal(tn_forward_new(m, N, &f), TN_OK);
    assert_int_equal(tn_pool_new(2, &pool), TN_OK);
    const int V = m->hp.n_vocab;
    float *l = malloc(sizeof(float) * (N + G) * V);
    assert_non_null(l);
    tn_batch b = {N, tok, pos, seq, pos, want};
    assert_int_equal(tn_forward_run(f, kv, pool, &b, l), TN_OK);
    for (int i = 0; i < G; i++) {
        const float *prev = l + (size_t)(N - 1 + i) * V;
        int32_t t = 0, p = N + i;
        for (int k = 1; k < V; k++)
            t = prev[k] > prev[t] ? k : t;
        out_tok[i] = t;
        tn_batch one = {1, &t, &p, seq, &p, want};
        assert_int_equal(tn_forward_run(f, kv, NULL, &one, l + (size_t)(N + i) * V), TN_OK);
    }
    tn_pool_free(pool);
    tn_forward_free(f);
    tn_kv_free(kv);
    return l;
}

/* The file at path loaded with the repack: its W8A8 matrices are x16 where
 * the ISA has the kernel, and prefill / greedy logits equal plain's. */
static void repacked_equals_plain(const char *path, tn_model *plain)
{
    tn_model *m;
    assert_int_equal(tn_model_load(path, &m), TN_OK);
    int n_x16 = 0;
    for (int il = 0; il < m->hp.n_layer; il++) {
        const tn_layer *a = &plain->layers[il], *b = &m->layers[il];
        const tn_weight *pa[] = {&a->wq, &a->wk, &a->wv, &a->wo, &a->ffn_gate, &a->ffn_up, &a->ffn_down};
        const tn_weight *pb[] = {&b->wq, &b->wk, &b->wv, &b->wo, &b->ffn_gate, &b->ffn_up, &b->ffn_down};
        for (size_t i = 0; i < TN_ARRAY_LEN(pa); i++) {
            const tn_dtype want = tn__x16_dtype_for(pa[i]->type);
            assert_int_equal(pb[i]->type, want != TN_DTYPE_COUNT ? want : pa[i]->type);
            n_x16 += tn__dtype_is_x16(pb[i]->type);
        }
    }
    assert_int_equal(n_x16 > 0, tn__x16_dtype_for(TN_DTYPE_W8A8) != TN_DTYPE_COUNT);
    int32_t t0[16], t1[16];
    float *l0 = run_greedy(plain, t0), *l1 = run_greedy(m, t1);
    assert_memory_equal(t0, t1, sizeof t0);
    assert_memory_equal(l0, l1, sizeof(float) * 56 * (size_t)m->hp.n_vocab);
    printf("repacked (%d x16 matrices): prefill and greedy logits equal the file layout's\n", n_x16);
    free(l0);
    free(l1);
    tn_model_free(m);
}

static void test_w8a8_model(void **state)
{
    quantize(NULL);
    tn_model *m0 = NULL, *m1 = NULL;
    assert_int_equal(tn_model_load(STORIES, &m0), TN_OK);
    if (load_plain(g_out, &m1) != TN_OK)
        fail_msg("load w8a8: %s", tn_last_error());
    for (int il = 0; il < m0->hp.n_layer; il++) {
        const tn_layer *a = &m0->layers[il], *b = &m1->layers[il];
        check_columns(&a->wq, &b->wq, a->attn_norm.data, b->attn_norm.data, false);
        check_columns(&a->wk, &b->wk, a->attn_norm.data, b->attn_norm.data, false);
        check_columns(&a->wv, &b->wv, a->attn_norm.data, b->attn_norm.data, true);
        check_columns(&a->ffn_gate, &b->ffn_gate, a->ffn_norm.data, b->ffn_norm.data, false);
        assert_int_equal(b->wo.type, TN_DTYPE_W8A8);
        assert_int_equal(b->ffn_up.type, TN_DTYPE_W8A8);
        assert_int_equal(b->ffn_down.type, TN_DTYPE_W8A8);
        assert_int_equal(b->ffn_down.ne[0], m0->hp.n_ff);
    }

    prefill_equals_decode(m1);
    repacked_equals_plain(g_out, m1);

    /* KL against F32 on held-out text (the calibration used the first windows). */
    tn_vocab *v;
    assert_int_equal(tn_vocab_from_gguf(m0->gguf, &v), TN_OK);
    char *base = tn_test_tmp_path(".logits");
    tn_ppl_opts po = {.n_ctx = 128, .n_chunks = 4, .save_logits = base};
    tn_ppl_result r0, r1;
    const char *held = g_text + 200000;
    assert_int_equal(tn_perplexity(m0, v, NULL, held, 30000, &po, &r0), TN_OK);
    po.save_logits = NULL;
    po.kl_base = base;
    assert_int_equal(tn_perplexity(m1, v, NULL, held, 30000, &po, &r1), TN_OK);
    printf("w8a8 stories260K: PPL %.4f vs %.4f, mean KL %.6f, top-1 %.4f\n", r1.ppl, r0.ppl, r1.kl_mean, r1.top1);
    assert_true(r1.kl_mean > 0.0 && r1.kl_mean < 0.03);
    assert_true(r1.top1 > 0.9);
    unlink(base);
    free(base);
    tn_vocab_free(v);
    tn_model_free(m0);
    tn_model_free(m1);
    unlink(g_out);
}

/* --rotate: attn_q (rows of 64: one Hadamard block of 64) becomes
 * W8A8_HAD; ffn_down (rows of 172 = 4 · 43: a block of 4, below
 * TN_W8A8_MIN_ROTATION) stays W8A8. attn_q's rows rotated back are the
 * smoothed weights within the rotated rounding error; the model's prefill
 * still equals its decode, and its KL against F32 stays small. */
static void test_rotate(void **state)
{
    tn_w8a8_result r = quantize_rot(NULL, "attn_q,ffn_down");
    tn_model *m0 = NULL, *m1 = NULL;
    assert_int_equal(tn_model_load(STORIES, &m0), TN_OK);
    if (load_plain(g_out, &m1) != TN_OK)
        fail_msg("load w8a8_had: %s", tn_last_error());
    assert_int_equal(r.n_rotated, m0->hp.n_layer);
    const int64_t n = m0->hp.n_embd;
    float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
    for (int il = 0; il < m0->hp.n_layer; il++) {
        const tn_layer *l0 = &m0->layers[il], *l1 = &m1->layers[il];
        assert_int_equal(l1->wq.type, TN_DTYPE_W8A8_HAD);
        assert_int_equal(l1->wk.type, TN_DTYPE_W8A8);
        assert_int_equal(l1->ffn_down.type, TN_DTYPE_W8A8);
        const float *g = l0->attn_norm.data, *g2 = l1->attn_norm.data;
        for (int64_t row = 0; row < l0->wq.ne[1]; row++) {
            assert_int_equal(tn_dequantize_row(l0->wq.type,
                                               (const char *)l0->wq.data + tn_dtype_row_size(l0->wq.type, n) * row, a, n),
                             TN_OK);
            const char *q = (const char *)l1->wq.data + TN_W8A8_ROW(n) * (size_t)row;
            tn_w8a8_dequantize_row(q, b, n);
            tn_hadamard(b, n);
            float d;
            memcpy(&d, q, 4);
            for (int64_t j = 0; j < n; j++) {
                const float s = g[j] / g2[j]; /* |H·e| <= |e|_2 <= d/2 · √64 */
                if (fabsf(b[j] / s - a[j]) > 4.0f * d / s + 1e-6f)
                    fail_msg("layer %d row %lld col %lld: %g / %g vs %g", il, (long long)row, (long long)j,
                             (double)b[j], (double)s, (double)a[j]);
            }
        }
    }
    free(a);
    free(b);
    prefill_equals_decode(m1);
    repacked_equals_plain(g_out, m1);
    tn_vocab *v;
    assert_int_equal(tn_vocab_from_gguf(m0->gguf, &v), TN_OK);
    char *base = tn_test_tmp_path(".logits");
    tn_ppl_opts po = {.n_ctx = 128, .n_chunks = 4, .save_logits = base};
    tn_ppl_result r0, r1;
    const char *held = g_text + 200000;
    assert_int_equal(tn_perplexity(m0, v, NULL, held, 30000, &po, &r0), TN_OK);
    po.save_logits = NULL;
    po.kl_base = base;
    assert_int_equal(tn_perplexity(m1, v, NULL, held, 30000, &po, &r1), TN_OK);
    printf("w8a8 rotated attn_q stories260K: mean KL %.6f, top-1 %.4f\n", r1.kl_mean, r1.top1);
    assert_true(r1.kl_mean > 0.0 && r1.kl_mean < 0.03);
    assert_true(r1.top1 > 0.9);
    unlink(base);
    free(base);
    tn_vocab_free(v);
    tn_model_free(m0);
    tn_model_free(m1);
    unlink(g_out);
}

static void test_keep(void **state)
{
    quantize("ffn_down");
    tn_model *m0 = NULL, *m1 = NULL;
    assert_int_equal(tn_model_load(STORIES, &m0), TN_OK);
    assert_int_equal(load_plain(g_out, &m1), TN_OK);
    for (int il = 0; il < m0->hp.n_layer; il++) {
        /* ffn_down kept bit for bit, and so ffn_up takes no row factors. */
        assert_int_equal(m1->layers[il].ffn_down.type, m0->layers[il].ffn_down.type);
        assert_memory_equal(m1->layers[il].ffn_down.data, m0->layers[il].ffn_down.data,
                            tn_dtype_row_size(m0->layers[il].ffn_down.type, m0->hp.n_ff) * 64);
        check_columns(&m0->layers[il].ffn_up, &m1->layers[il].ffn_up, m0->layers[il].ffn_norm.data,
                      m1->layers[il].ffn_norm.data, false);
    }
    tn_model_free(m0);
    tn_model_free(m1);
    unlink(g_out);
}

static void test_errors(void **state)
{
    tn_w8a8_opts o = {.in_path = STORIES, .out_path = g_out, .alpha = 1.5f};
    tn_w8a8_result r;
    assert_int_equal(tn_quantize_w8a8(&o, &r), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "alpha"));
    o.alpha = 0.5f;
    o.calib_text = "Once upon";
    o.calib_len = 9;
    assert_int_equal(tn_quantize_w8a8(&o, &r), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "fewer than one window"));
    o.calib_text = NULL;
    o.in_path = "/nonexistent/model.gguf";
    assert_int_not_equal(tn_quantize_w8a8(&o, &r), TN_OK);
    assert_non_null(strstr(tn_last_error(), "/nonexistent/model.gguf"));
    assert_int_equal(access(g_out, F_OK), -1);
}

int main(void)
{
    g_text = tn_test_read_file(TEXT, &g_len);
    if (!g_text || g_len < 240000)
        return 1;
    g_out = tn_test_tmp_path(".gguf"); /* malloc'd */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scales_formula),
        cmocka_unit_test(test_w8a8_model),
        cmocka_unit_test(test_keep),
        cmocka_unit_test(test_rotate),
        cmocka_unit_test(test_errors),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(g_text);
    free(g_out);
    return rc;
}
