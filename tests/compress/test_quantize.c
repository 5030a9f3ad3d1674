/*
 * test_quantize.c — `tern quantize` as a library (src/compress/quantize.h).
 *
 * On stories260K (rows of 64, and ffn_down rows of 172 that fit no 32-block
 * type): the plan keeps norms F32, sends ffn_down to the F16 fallback and
 * the output tensor to Q8_0 in a Q4_0 mix (Q4_0 with --pure); the written
 * file is read back independently (GGUF reader + tn_dequantize_row) and its
 * weights are within the type's error of the source, its metadata is the
 * source's with general.file_type changed, and tern's loader accepts it.
 * The measured RMSE grows from F16 to Q8_0 to Q4_0; the result does not
 * depend on the thread count; every mix name works and loads; bad options
 * are clear errors.
 */
#include "compress/quantize.h"
#include "model/model.h"
#include "model/synth.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STORIES TN_SHARED_DATA "models/stories260K/stories260K.v3.derived.gguf"

static tn_status quant(const char *in, const char *out, const char *type, bool pure, int nt, tn_quant_report *rep)
{
    tn_quant_opts o = {.in_path = in, .out_path = out, .type = type, .pure = pure, .stats = true, .n_threads = nt};
    return tn_quantize_model(&o, rep);
}

static const tn_quant_tensor *find(const tn_quant_report *r, const char *name)
{
    for (int64_t i = 0; i < r->n_tensors; i++)
        if (!strcmp(r->tensors[i].name, name))
            return &r->tensors[i];
    return NULL;
}

/* Max |dequantized output - source| over a tensor, read back from the files. */
static double max_abs_err(const tn_gguf *src, const tn_gguf *dst, const char *name)
{
    const tn_gguf_tensor *a = tn_gguf_find_tensor(src, name), *b = tn_gguf_find_tensor(dst, name);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(a->ne[0], b->ne[0]);
    assert_int_equal(a->ne[1], b->ne[1]);
    int64_t ne0 = a->ne[0], rows = a->ne[1] * a->ne[2] * a->ne[3];
    float *x = malloc((size_t)ne0 * 4), *y = malloc((size_t)ne0 * 4);
    double m = 0;
    for (int64_t r = 0; r < rows; r++) {
        assert_int_equal(tn_dequantize_row(a->type, (const char *)a->data + r * tn_dtype_row_size(a->type, ne0), x, ne0),
                         TN_OK);
        assert_int_equal(tn_dequantize_row(b->type, (const char *)b->data + r * tn_dtype_row_size(b->type, ne0), y, ne0),
                         TN_OK);
        for (int64_t k = 0; k < ne0; k++)
            m = fmax(m, fabs((double)x[k] - y[k]));
    }
    free(x);
    free(y);
    return m;
}

static void test_stories_q8_0(void **state)
{
    char *out = tn_test_tmp_path(".gguf");
    tn_quant_report rep;
    assert_int_equal(quant(STORIES, out, "Q8_0", false, 2, &rep), TN_OK);
    assert_int_equal(rep.file_type, 7);
    const tn_quant_tensor *t = find(&rep, "blk.0.ffn_down.weight");
    assert_non_null(t);
    assert_int_equal(t->dst_type, TN_DTYPE_F16); /* rows of 172: fallback */
    assert_non_null(t->note);
    t = find(&rep, "blk.0.attn_norm.weight");
    assert_int_equal(t->dst_type, TN_DTYPE_F32);
    assert_false(t->quantized);
    assert_int_equal(find(&rep, "blk.0.attn_q.weight")->dst_type, TN_DTYPE_Q8_0);
    assert_int_equal(find(&rep, "output.weight")->dst_type, TN_DTYPE_Q8_0);
    assert_true(rep.dst_bytes < rep.src_bytes / 3);

    /* read back independently */
    tn_gguf *src, *dst;
    assert_int_equal(tn_gguf_open(STORIES, &src), TN_OK);
    assert_int_equal(tn_gguf_open(out, &dst), TN_OK);
    assert_int_equal(tn_gguf_n_tensors(src), tn_gguf_n_tensors(dst));
    uint32_t ft = 0, qv = 0;
    assert_int_equal(tn_gguf_get_u32(dst, "general.file_type", &ft), TN_OK);
    assert_int_equal(ft, 7);
    assert_int_equal(tn_gguf_get_u32(dst, "general.quantization_version", &qv), TN_OK);
    assert_int_equal(qv, 2);
    for (int64_t i = 0; i < tn_gguf_n_kv(src); i++) {
        const char *k = tn_gguf_kv_key(src, i);
        assert_true(tn_gguf_find_key(dst, k) >= 0);
        if (strcmp(k, "general.file_type") != 0) {
            char a[256], b[256];
            assert_string_equal(tn_gguf_kv_format(src, i, a, sizeof a),
                                tn_gguf_kv_format(dst, tn_gguf_find_key(dst, k), b, sizeof b));
        }
    }
    assert_int_equal(tn_gguf_find_tensor(dst, "blk.0.attn_q.weight")->type, TN_DTYPE_Q8_0);
    /* Q8_0: error at most half a step of amax/127 (weights here are < 1) */
    double e = max_abs_err(src, dst, "blk.0.attn_q.weight");
    assert_true(e > 0 && e < 0.01);
    assert_true(max_abs_err(src, dst, "blk.0.ffn_down.weight") < 1e-3);
    assert_true(max_abs_err(src, dst, "blk.0.attn_norm.weight") == 0.0);
    tn_gguf_free(src);
    tn_gguf_free(dst);

    /* the stats agree: relative RMSE of Q8_0 is well under 1 % */
    assert_true(rep.ssq > 0 && sqrt(rep.sse / rep.ssq) < 0.01 && rep.sse > 0);

    tn_model *m;
    assert_int_equal(tn_model_load(out, &m), TN_OK);
    assert_int_equal(m->layers[0].ffn_down.type, TN_DTYPE_F16);
    tn_model_free(m);
    tn_quant_report_deinit(&rep);
    unlink(out);
    free(out);
}

static void test_rmse_order_and_pure(void **state)
{
    const char *types[] = {"F16", "BF16", "Q8_0", "Q4_0"};
    double rel[4];
    char *out = tn_test_tmp_path(".gguf");
    for (int i = 0; i < 4; i++) {
        tn_quant_report rep;
        assert_int_equal(quant(STORIES, out, types[i], false, 1, &rep), TN_OK);
        rel[i] = sqrt(rep.sse / rep.ssq);
        if (i == 3) /* the mix raises the output tensor */
            assert_int_equal(find(&rep, "output.weight")->dst_type, TN_DTYPE_Q8_0);
        tn_quant_report_deinit(&rep);
    }
    assert_true(rel[0] > 0 && rel[0] < rel[1] && rel[1] < rel[2] && rel[2] < rel[3] && rel[3] < 0.15);

    tn_quant_report rep;
    assert_int_equal(quant(STORIES, out, "Q4_0", true, 1, &rep), TN_OK);
    assert_int_equal(find(&rep, "output.weight")->dst_type, TN_DTYPE_Q4_0);
    assert_int_equal(find(&rep, "blk.4.ffn_down.weight")->dst_type, TN_DTYPE_F16);
    tn_quant_report_deinit(&rep);
    unlink(out);
    free(out);
}

static void test_threads_same_bytes(void **state)
{
    char *a = tn_test_tmp_path(".gguf"), *b = tn_test_tmp_path(".gguf");
    assert_int_equal(quant(STORIES, a, "q4_0", false, 1, NULL), TN_OK);
    assert_int_equal(quant(STORIES, b, "q4_0", false, 2, NULL), TN_OK);
    size_t la, lb;
    char *da = tn_test_read_file(a, &la), *db = tn_test_read_file(b, &lb);
    assert_non_null(da);
    assert_non_null(db);
    assert_int_equal(la, lb);
    assert_memory_equal(da, db, la);
    free(da);
    free(db);
    unlink(a);
    unlink(b);
    free(a);
    free(b);
}

/* Every mix on a synth model (rows of 64: the K-quants take their
 * fallbacks) works and loads. */
static void test_every_mix(void **state)
{
    char *src = tn_test_tmp_path(".gguf"), *out = tn_test_tmp_path(".gguf");
    tn_synth_opts so = {.preset = "tiny-llama", .dtype = "f32", .vocab_path = STORIES, .out_path = src, .seed = 3,
                        .n_threads = 1};
    assert_int_equal(tn_synth_write(&so), TN_OK);
    const char *mixes[] = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "Q2_K",
                           "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K"};
    for (size_t i = 0; i < sizeof mixes / sizeof mixes[0]; i++) {
        tn_quant_report rep;
        assert_int_equal(quant(src, out, mixes[i], false, 1, &rep), TN_OK);
        tn_model *m;
        assert_int_equal(tn_model_load(out, &m), TN_OK);
        tn_model_free(m);
        if (strcmp(mixes[i], "F32") != 0)
            assert_true(rep.sse > 0 && sqrt(rep.sse / rep.ssq) < 0.5);
        tn_quant_report_deinit(&rep);
    }
    unlink(src);
    unlink(out);
    free(src);
    free(out);
}

static void test_errors(void **state)
{
    char *out = tn_test_tmp_path(".gguf");
    tn_quant_report rep;
    assert_int_equal(quant(STORIES, out, "Q9_9", false, 1, &rep), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "Q9_9"));
    tn_quant_report_deinit(&rep);
    assert_true(access(out, F_OK) != 0);
    assert_int_not_equal(quant("/nonexistent/model.gguf", out, "Q8_0", false, 1, &rep), TN_OK);
    assert_non_null(strstr(tn_last_error(), "/nonexistent/model.gguf"));
    tn_quant_report_deinit(&rep);
    tn_quant_opts o = {.in_path = STORIES, .out_path = out, .type = "Q8_0", .output_type = "nope"};
    assert_int_equal(tn_quantize_model(&o, &rep), TN_ERR_INVALID);
    tn_quant_report_deinit(&rep);
    assert_false(tn_quant_type_supported(TN_DTYPE_Q8_K));
    assert_true(tn_quant_type_supported(TN_DTYPE_Q4_0));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories_q8_0),      cmocka_unit_test(test_rmse_order_and_pure),
        cmocka_unit_test(test_threads_same_bytes), cmocka_unit_test(test_every_mix),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
