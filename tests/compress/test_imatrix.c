/*
 * test_imatrix.c — importance matrices (src/compress/imatrix.h).
 *
 * Accumulation gives the mean square of each column; the file is llama.cpp's
 * legacy .dat layout byte for byte (checked field by field here, and read by
 * llama-quantize by hand, docs/quantization.md) and loads back to the same
 * importances; truncated or hostile files are errors naming the entry; a
 * calibration run on stories260K records every dense product of every layer
 * with the right widths (attn_q/k/v share one input and so one entry value),
 * and `tern quantize --imatrix` uses it and records llama.cpp's keys.
 */
#include "compress/imatrix.h"
#include "compress/quantize.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STORIES TN_SHARED_DATA "models/stories260K/stories260K.v3.derived.gguf"
#define TEXT TN_SHARED_DATA "corpora/en/tinyshakespeare/input.txt"

static int32_t rd32(const unsigned char *p) { return (int32_t)((uint32_t)p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24); }

static void test_accumulate_save_load(void **state)
{
    tn_imatrix *im;
    assert_int_equal(tn_imatrix_new(&im), TN_OK);
    const float a[6] = {1, 2, 3, -1, 0, 1}; /* 2 rows of 3 */
    const float b[3] = {2, 2, 2};
    assert_int_equal(tn_imatrix_add(im, "blk.0.attn_q.weight", a, 2, 3), TN_OK);
    assert_int_equal(tn_imatrix_add(im, "blk.0.attn_q.weight", b, 1, 3), TN_OK);
    assert_int_equal(tn_imatrix_add(im, "output.weight", b, 1, 3), TN_OK);
    assert_int_equal(tn_imatrix_add(im, "output.weight", b, 1, 2), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "output.weight"));
    int64_t nc;
    const float *m = tn_imatrix_get(im, "blk.0.attn_q.weight", &nc);
    assert_int_equal(nc, 3);
    assert_true(fabsf(m[0] - 6.0f / 3) < 1e-6f && fabsf(m[1] - 8.0f / 3) < 1e-6f && fabsf(m[2] - 14.0f / 3) < 1e-6f);
    assert_null(tn_imatrix_get(im, "nope", &nc));
    assert_int_equal(nc, 0);

    char *path = tn_test_tmp_path(".dat");
    assert_int_equal(tn_imatrix_save(im, path, "data.txt"), TN_OK);
    size_t len;
    unsigned char *f = (unsigned char *)tn_test_read_file(path, &len);
    assert_non_null(f);
    /* n_entries, then name len, name, ncall, nval, values = mean * ncall */
    assert_int_equal(rd32(f), 2);
    assert_int_equal(rd32(f + 4), 19);
    assert_memory_equal(f + 8, "blk.0.attn_q.weight", 19);
    assert_int_equal(rd32(f + 27), 2); /* two calls */
    assert_int_equal(rd32(f + 31), 3);
    float v;
    memcpy(&v, f + 35, 4);
    assert_true(fabsf(v - 2.0f * 6.0f / 3) < 1e-6f);
    size_t off = 35 + 12;
    assert_int_equal(rd32(f + off), 13);
    off += 4 + 13 + 8 + 12;
    assert_int_equal(rd32(f + off), 0); /* chunks */
    assert_int_equal(rd32(f + off + 4), 8);
    assert_memory_equal(f + off + 8, "data.txt", 8);
    assert_int_equal(len, off + 16);

    tn_imatrix *im2;
    assert_int_equal(tn_imatrix_load(path, &im2), TN_OK);
    assert_int_equal(tn_imatrix_n_entries(im2), 2);
    const float *m2 = tn_imatrix_get(im2, "blk.0.attn_q.weight", &nc);
    assert_int_equal(nc, 3);
    for (int c = 0; c < 3; c++)
        assert_true(fabsf(m2[c] - m[c]) < 1e-6f * m[c]);
    /* saving the loaded one gives the same bytes */
    char *path2 = tn_test_tmp_path(".dat");
    assert_int_equal(tn_imatrix_save(im2, path2, "data.txt"), TN_OK);
    size_t len2;
    char *f2 = tn_test_read_file(path2, &len2);
    assert_int_equal(len2, len);
    assert_memory_equal(f2, f, len);

    /* every truncation is an error that names the file */
    for (size_t cut = 0; cut < off; cut += 3) {
        assert_int_equal(tn_test_write_file(path2, f, cut), 0);
        tn_imatrix *bad = NULL;
        assert_int_equal(tn_imatrix_load(path2, &bad), TN_ERR_FORMAT);
        assert_null(bad);
        assert_non_null(strstr(tn_last_error(), path2));
    }
    /* hostile counts */
    unsigned char h[16] = {0xff, 0xff, 0xff, 0x7f};
    assert_int_equal(tn_test_write_file(path2, h, 4), 0);
    tn_imatrix *bad = NULL;
    assert_int_equal(tn_imatrix_load(path2, &bad), TN_ERR_FORMAT);
    assert_int_equal(tn_imatrix_load("/nonexistent/x.dat", &bad), TN_ERR_IO);
    unlink(path);
    unlink(path2);
    free(path);
    free(path2);
    free(f);
    free(f2);
    tn_imatrix_free(im);
    tn_imatrix_free(im2);
}

static const tn_quant_tensor *find_t(const tn_quant_report *r, const char *name)
{
    for (int64_t i = 0; i < r->n_tensors; i++)
        if (!strcmp(r->tensors[i].name, name))
            return &r->tensors[i];
    return NULL;
}

static void test_collect_and_quantize(void **state)
{
    tn_model *m;
    tn_vocab *v;
    tn_imatrix *im;
    assert_int_equal(tn_model_load(STORIES, &m), TN_OK);
    assert_int_equal(tn_vocab_from_gguf(m->gguf, &v), TN_OK);
    assert_int_equal(tn_imatrix_new(&im), TN_OK);
    size_t len;
    char *text = tn_test_read_file(TEXT, &len);
    assert_non_null(text);
    assert_int_equal(tn_imatrix_collect(im, m, v, NULL, text, 60, 128, 0, NULL, NULL), TN_ERR_INVALID);
    assert_int_equal(tn_imatrix_collect(im, m, v, NULL, text, 20000, 128, 3, NULL, NULL), TN_OK);
    assert_int_equal(tn_imatrix_n_chunks(im), 3);
    /* 5 layers x 7 products + output */
    assert_int_equal(tn_imatrix_n_entries(im), 36);
    int64_t nq, nk, nd, no;
    const float *q = tn_imatrix_get(im, "blk.4.attn_q.weight", &nq);
    const float *k = tn_imatrix_get(im, "blk.4.attn_k.weight", &nk);
    assert_int_equal(nq, 64);
    assert_memory_equal(q, k, 64 * sizeof *q);
    const float *d = tn_imatrix_get(im, "blk.2.ffn_down.weight", &nd);
    assert_int_equal(nd, 172);
    for (int c = 0; c < 172; c++)
        assert_true(isfinite(d[c]) && d[c] >= 0);
    assert_non_null(tn_imatrix_get(im, "output.weight", &no));
    int32_t ncall;
    tn_imatrix_entry(im, 0, NULL, &ncall);
    assert_int_equal(ncall, 3);
    /* rmsnorm output with weights near 1: mean square per column is O(1) */
    double mean = 0;
    for (int c = 0; c < 64; c++)
        mean += q[c] / 64;
    assert_true(mean > 0.05 && mean < 50);

    char *path = tn_test_tmp_path(".dat"), *out = tn_test_tmp_path(".gguf");
    assert_int_equal(tn_imatrix_save(im, path, TEXT), TN_OK);
    tn_quant_opts o = {.in_path = STORIES, .out_path = out, .type = "Q4_0", .imatrix = path, .stats = true};
    tn_quant_report rep;
    assert_int_equal(tn_quantize_model(&o, &rep), TN_OK);
    int n_imp = 0;
    for (int64_t i = 0; i < rep.n_tensors; i++)
        n_imp += rep.tensors[i].imatrix;
    /* every Q4_0 matrix: not the F16-fallback ffn_down (rows of 172) nor the Q8_0 output */
    assert_int_equal(n_imp, 5 * 6);
    assert_false(find_t(&rep, "blk.1.ffn_down.weight")->imatrix);
    assert_true(find_t(&rep, "blk.1.ffn_up.weight")->imatrix);
    tn_quant_report_deinit(&rep);
    tn_gguf *g;
    assert_int_equal(tn_gguf_open(out, &g), TN_OK);
    int32_t n_ent = 0;
    assert_int_equal(tn_gguf_get_i32(g, "quantize.imatrix.entries_count", &n_ent), TN_OK);
    assert_int_equal(n_ent, 36);
    tn_gguf_free(g);

    /* an entry of the wrong width is refused, naming it */
    tn_imatrix *w;
    assert_int_equal(tn_imatrix_new(&w), TN_OK);
    float z[32] = {1};
    assert_int_equal(tn_imatrix_add(w, "blk.0.attn_q.weight", z, 1, 32), TN_OK);
    assert_int_equal(tn_imatrix_save(w, path, NULL), TN_OK);
    assert_int_equal(tn_quantize_model(&o, &rep), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "blk.0.attn_q.weight"));
    tn_quant_report_deinit(&rep);
    tn_imatrix_free(w);

    unlink(path);
    unlink(out);
    free(path);
    free(out);
    free(text);
    tn_imatrix_free(im);
    tn_vocab_free(v);
    tn_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accumulate_save_load),
        cmocka_unit_test(test_collect_and_quantize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
