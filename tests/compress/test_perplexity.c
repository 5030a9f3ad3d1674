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
    assert_true(fabs(log(b.ppl / a.ppl)) < 0.2);
    assert_true(b.dp_rms > 0.0);
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
        cmocka_unit_test(test_quantized_kl),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
