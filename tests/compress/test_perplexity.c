/*
 * test_perplexity.c — perplexity and the saved-logits comparison
 * (src/compress/perplexity.h) on stories260K and a slice of Shakespeare.
 *
 * Asserts: PPL is finite, above 1 and far below the vocabulary size (the
 * model predicts English better than chance), identical across runs and
 * thread counts; the TNLOGITS file has the documented size; a model
 * compared with its own saved run gives KL exactly 0, 100 % top-1 and the
 * same PPL; a Q4_0 quantization gives a KL that is positive and small and a
 * top-1 agreement well above chance; a text shorter than a window, a file
 * that is not TNLOGITS, a base of another window size, another text, or a
 * truncated base are clear errors.
 */
#include "compress/perplexity.h"
#include "compress/quantize.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STORIES TN_SHARED_DATA "models/stories260K/stories260K.v3.derived.gguf"
#define TEXT TN_SHARED_DATA "corpora/en/tinyshakespeare/input.txt"
#define CTX 64
#define CHUNKS 3
#define SLICE 6000

typedef struct fixture {
    tn_model *m;
    tn_vocab *v;
    tn_pool *pool;
    char *text;
    size_t len;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (tn_model_load(STORIES, &f->m) != TN_OK || tn_vocab_from_gguf(f->m->gguf, &f->v) != TN_OK ||
        tn_pool_new(2, &f->pool) != TN_OK)
        return -1;
    f->text = tn_test_read_file(TEXT, &f->len);
    if (!f->text)
        return -1;
    if (f->len > SLICE)
        f->len = SLICE;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    tn_pool_free(f->pool);
    tn_vocab_free(f->v);
    tn_model_free(f->m);
    free(f->text);
    free(f);
    return 0;
}

static tn_status run(fixture *f, const tn_model *m, tn_pool *pool, const char *save, const char *base,
                     tn_ppl_result *r)
{
    tn_ppl_opts o = {.n_ctx = CTX, .n_chunks = CHUNKS, .save_logits = save, .kl_base = base};
    return tn_perplexity(m, f->v, pool, f->text, f->len, &o, r);
}

static void test_ppl_deterministic(void **state)
{
    fixture *f = *state;
    tn_ppl_result a, b, c;
    assert_int_equal(run(f, f->m, f->pool, NULL, NULL, &a), TN_OK);
    assert_int_equal(a.n_chunks, CHUNKS);
    assert_int_equal(a.n_scored, CHUNKS * (CTX - 1 - CTX / 2));
    assert_true(isfinite(a.ppl) && a.ppl > 1.0 && a.ppl < 512.0);
    assert_true(a.ppl_err > 0.0);
    assert_int_equal(run(f, f->m, f->pool, NULL, NULL, &b), TN_OK);
    assert_true(a.ppl == b.ppl);
    assert_int_equal(run(f, f->m, NULL, NULL, NULL, &c), TN_OK); /* one thread */
    assert_true(a.ppl == c.ppl);
    assert_false(a.has_kl);
}

static void test_self_kl_is_zero(void **state)
{
    fixture *f = *state;
    char *base = tn_test_tmp_path(".tnl");
    tn_ppl_result a, b;
    assert_int_equal(run(f, f->m, f->pool, base, NULL, &a), TN_OK);
    size_t len;
    char *data = tn_test_read_file(base, &len);
    assert_non_null(data);
    assert_memory_equal(data, "TNLOGITS", 8);
    assert_int_equal(len, 32 + 4 * CHUNKS * CTX + (size_t)CHUNKS * (CTX - 1 - CTX / 2) * (8 + 2 * 512));
    free(data);

    assert_int_equal(run(f, f->m, f->pool, NULL, base, &b), TN_OK);
    assert_true(b.has_kl);
    assert_true(b.kl_mean == 0.0 && b.kl_max == 0.0 && b.kl_median == 0.0);
    assert_true(b.top1 == 1.0);
    assert_true(b.dp_mean == 0.0);
    assert_true(fabs(b.base_ppl - a.ppl) < 1e-3 * a.ppl); /* the file's resolution */
    unlink(base);
    free(base);
}

static void test_quantized_kl(void **state)
{
    fixture *f = *state;
    char *base = tn_test_tmp_path(".tnl"), *q = tn_test_tmp_path(".gguf");
    tn_ppl_result a, b;
    assert_int_equal(run(f, f->m, f->pool, base, NULL, &a), TN_OK);
    tn_quant_opts qo = {.in_path = STORIES, .out_path = q, .type = "Q4_0", .n_threads = 1};
    assert_int_equal(tn_quantize_model(&qo, NULL), TN_OK);
    tn_model *qm;
    assert_int_equal(tn_model_load(q, &qm), TN_OK);
    assert_int_equal(run(f, qm, f->pool, NULL, base, &b), TN_OK);
    tn_model_free(qm);
    assert_true(b.kl_mean > 1e-4 && b.kl_mean < 1.0);
    assert_true(b.kl_median <= b.kl_p99 && b.kl_p99 <= b.kl_p999 && b.kl_p999 <= b.kl_max);
    assert_true(b.top1 > 0.5 && b.top1 < 1.0);

    /* --kl-out: one line per scored position, whose mean and max are the summary's */
    char *klf = tn_test_tmp_path(".txt");
    tn_ppl_result c;
    tn_ppl_opts ko = {.n_ctx = CTX, .n_chunks = CHUNKS, .kl_base = base, .kl_out = klf};
    assert_int_equal(tn_model_load(q, &qm), TN_OK);
    assert_int_equal(tn_perplexity(qm, f->v, f->pool, f->text, f->len, &ko, &c), TN_OK);
    tn_model_free(qm);
    FILE *kf = fopen(klf, "r");
    assert_non_null(kf);
    double v, sum = 0, mx = 0;
    int64_t n = 0;
    while (fscanf(kf, "%lf", &v) == 1) {
        sum += v;
        mx = v > mx ? v : mx;
        n++;
    }
    fclose(kf);
    assert_int_equal(n, b.n_scored);
    assert_true(fabs(sum / (double)n - b.kl_mean) <= 1e-6 * b.kl_mean);
    assert_true(fabs(mx - b.kl_max) <= 1e-6 * b.kl_max);
    ko.kl_base = NULL; /* a KL file needs a base */
    assert_int_equal(tn_perplexity(f->m, f->v, f->pool, f->text, f->len, &ko, &c), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "base"));
    unlink(klf);
    free(klf);
    assert_true(fabs(log(b.ppl / a.ppl)) < 0.2);
    assert_true(b.dp_rms > 0.0);
    unlink(base);
    unlink(q);
    free(base);
    free(q);
}

/* The logits of window c's scored positions (log-softmax, double) into lp. */
static void window_logprobs(fixture *f, const tn_model *m, const int32_t *tokens, int32_t c, double *lp)
{
    const int32_t V = m->hp.n_vocab, first = CTX / 2, n_scored = CTX - 1 - first;
    int32_t win[CTX], pos[CTX], seq[CTX] = {0};
    bool want[CTX];
    memcpy(win, tokens + (size_t)c * CTX, sizeof win);
    if (tn_vocab_add_bos(f->v))
        win[0] = tn_vocab_bos(f->v);
    for (int i = 0; i < CTX; i++)
        pos[i] = i, want[i] = i >= first && i < first + n_scored;
    tn_kv_cache *kv;
    tn_forward *fw;
    assert_int_equal(tn_kv_new(m, CTX, 1, &kv), TN_OK);
    assert_int_equal(tn_forward_new(m, CTX, &fw), TN_OK);
    float *logits = malloc(sizeof(float) * (size_t)n_scored * (size_t)V);
    tn_batch b = {.n_tokens = CTX, .token = win, .pos = pos, .seq_id = seq, .kv_slot = pos, .want_logits = want};
    assert_int_equal(tn_forward_run(fw, kv, NULL, &b, logits), TN_OK);
    for (int32_t k = 0; k < n_scored; k++) {
        const float *l = logits + (size_t)k * V;
        double mx = l[0], sum = 0;
        for (int32_t i = 1; i < V; i++)
            mx = l[i] > mx ? l[i] : mx;
        for (int32_t i = 0; i < V; i++)
            sum += exp((double)l[i] - mx);
        for (int32_t i = 0; i < V; i++)
            lp[(size_t)k * V + i] = (double)l[i] - mx - log(sum);
    }
    free(logits);
    tn_forward_free(fw);
    tn_kv_free(kv);
}

/* The mean KL tern perplexity reports equals the exact mean KL computed here
 * in double from both models' full logits at the same positions (Q8_0 and
 * Q4_0 of stories260K), within 5 %. The file's 16-bit rows must not bias
 * it: clamping our side to the base row's range did, by 1.4x at KL 4e-3
 * and more below (tern read ~3x llama-perplexity's KL on the same files). */
static void test_kl_matches_exact(void **state)
{
    fixture *f = *state;
    char *base = tn_test_tmp_path(".tnl"), *q = tn_test_tmp_path(".gguf");
    tn_ppl_result a, b;
    assert_int_equal(run(f, f->m, f->pool, base, NULL, &a), TN_OK);
    size_t cap = f->len + 16, n = 0;
    int32_t *tokens = malloc(cap * sizeof *tokens);
    assert_int_equal(tn_tokenize(f->v, f->text, f->len, tn_vocab_add_bos(f->v), false, tokens, cap, &n), TN_OK);
    assert_true(n >= (size_t)CHUNKS * CTX);
    const int32_t V = f->m->hp.n_vocab, n_scored = CTX - 1 - CTX / 2;
    double *lb = malloc(sizeof(double) * (size_t)n_scored * V), *lc = malloc(sizeof(double) * (size_t)n_scored * V);
    const char *types[] = {"Q8_0", "Q4_0"};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        tn_quant_opts qo = {.in_path = STORIES, .out_path = q, .type = types[t], .n_threads = 1};
        assert_int_equal(tn_quantize_model(&qo, NULL), TN_OK);
        tn_model *qm;
        assert_int_equal(tn_model_load(q, &qm), TN_OK);
        assert_int_equal(run(f, qm, f->pool, NULL, base, &b), TN_OK);
        double exact = 0;
        for (int32_t c = 0; c < CHUNKS; c++) {
            window_logprobs(f, f->m, tokens, c, lb);
            window_logprobs(f, qm, tokens, c, lc);
            for (size_t i = 0; i < (size_t)n_scored * V; i++)
                exact += exp(lb[i]) * (lb[i] - lc[i]);
        }
        exact /= (double)CHUNKS * n_scored;
        printf("%s: mean KL %.6g, exact %.6g\n", types[t], b.kl_mean, exact);
        assert_true(exact > 1e-5);
        assert_true(fabs(b.kl_mean - exact) <= 0.05 * exact);
        tn_model_free(qm);
    }
    free(lb);
    free(lc);
    free(tokens);
    unlink(base);
    unlink(q);
    free(base);
    free(q);
}

static void test_errors(void **state)
{
    fixture *f = *state;
    tn_ppl_result r;
    tn_ppl_opts o = {.n_ctx = CTX};
    assert_int_equal(tn_perplexity(f->m, f->v, f->pool, "Once upon a time", 16, &o, &r), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "fewer than one window"));
    o.n_chunks = 1000;
    assert_int_equal(tn_perplexity(f->m, f->v, f->pool, f->text, f->len, &o, &r), TN_ERR_INVALID);

    char *bad = tn_test_tmp_path(".tnl");
    assert_int_equal(tn_test_write_file(bad, "GGUF not logits at all, padding to 32+ bytes.....", 48), 0);
    assert_int_equal(run(f, f->m, f->pool, NULL, bad, &r), TN_ERR_FORMAT);
    assert_non_null(strstr(tn_last_error(), "not a TNLOGITS file"));
    assert_int_equal(run(f, f->m, f->pool, NULL, "/nonexistent/base.tnl", &r), TN_ERR_IO);

    /* a base of another window size */
    char *base = tn_test_tmp_path(".tnl");
    tn_ppl_opts o2 = {.n_ctx = 32, .n_chunks = 2, .save_logits = base};
    assert_int_equal(tn_perplexity(f->m, f->v, f->pool, f->text, f->len, &o2, &r), TN_OK);
    assert_int_equal(run(f, f->m, f->pool, NULL, base, &r), TN_ERR_FORMAT);
    assert_non_null(strstr(tn_last_error(), "--ctx 32"));
    /* a base of another text (same window) */
    tn_ppl_opts o3 = {.n_ctx = CTX, .n_chunks = CHUNKS, .save_logits = base};
    assert_int_equal(tn_perplexity(f->m, f->v, f->pool, f->text + 1000, f->len - 1000, &o3, &r), TN_OK);
    assert_int_equal(run(f, f->m, f->pool, NULL, base, &r), TN_ERR_FORMAT);
    assert_non_null(strstr(tn_last_error(), "another text"));
    /* a truncated base */
    assert_int_equal(run(f, f->m, f->pool, base, NULL, &r), TN_OK);
    size_t len;
    char *data = tn_test_read_file(base, &len);
    assert_int_equal(tn_test_write_file(base, data, len - 100), 0);
    free(data);
    assert_int_equal(run(f, f->m, f->pool, NULL, base, &r), TN_ERR_FORMAT);
    assert_non_null(strstr(tn_last_error(), "truncated"));
    unlink(bad);
    unlink(base);
    free(bad);
    free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ppl_deterministic),
        cmocka_unit_test(test_self_kl_is_zero),
        cmocka_unit_test(test_kl_matches_exact),
        cmocka_unit_test(test_quantized_kl),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
