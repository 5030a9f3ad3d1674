/*
 * test_gptq.c — GPTQ (src/compress/gptq.h) and the hessian file
 * (src/compress/hessian.h).
 *
 * The Cholesky factorization on a known SPD matrix (and its refusal of an
 * indefinite one); the prepared factor U satisfies Uᵀ U (H + λ·mean diag·I)
 * = I; on random weights with strongly correlated inputs, for every type
 * GPTQ supports, the output error tr((W − Q) H (W − Q)ᵀ) of GPTQ is lower
 * than both the same grid fits without error feedback (round to nearest,
 * U diagonal) and tern's diagonal-imatrix quantizer (tn_quant_row with
 * imp = diag H), and the packed blocks dequantize exactly (bit for bit) to
 * the values GPTQ chose; a calibration run on stories260K gives one H per
 * input (q/k/v and gate/up share), symmetric, whose diagonal is the
 * imatrix entry; tern quantize --hessian uses GPTQ on those tensors; bad
 * hessian files (not a hessian file, missing tensor, wrong shape, NaN) are
 * errors naming the tensor and the file.
 */
#include "compress/gptq.h"
#include "compress/hessian.h"
#include "compress/imatrix.h"
#include "compress/quant_k.h"
#include "compress/quantize.h"
#include "format/gguf.h"
#include "kern/dtype.h"
#include "model/model.h"
#include "testutil.h"
#include "tok/tok.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STORIES TN_SHARED_DATA "models/stories260K/stories260K.v3.derived.gguf"
#define TEXT TN_SHARED_DATA "corpora/en/tinyshakespeare/input.txt"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static double nrand(void)
{
    double u = urand(), v = urand();
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

static void test_cholesky(void **state)
{
    (void)state;
    double a[9] = {4, 12, -16, 12, 37, -43, -16, -43, 98};
    const double l[9] = {2, 0, 0, 6, 1, 0, -8, 5, 3};
    assert_int_equal(tn_gptq_cholesky(a, 3), TN_OK);
    for (int i = 0; i < 9; i++)
        assert_true(fabs(a[i] - l[i]) < 1e-12);
    double b[4] = {1, 2, 2, 1}; /* eigenvalues 3, −1 */
    assert_int_equal(tn_gptq_cholesky(b, 2), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "pivot 1"));
}

/* H = XᵀX / T over T tokens of n inputs mixed so that neighbours correlate. */
static float *make_hessian(int64_t n, int T, int dead_col)
{
    float *H = calloc((size_t)(n * n), sizeof *H);
    double *x = malloc((size_t)n * sizeof *x), *z = malloc((size_t)n * sizeof *z);
    for (int t = 0; t < T; t++) {
        for (int64_t i = 0; i < n; i++)
            z[i] = nrand();
        const double common = nrand();
        for (int64_t i = 0; i < n; i++) {
            x[i] = z[i] + 0.9 * (i > 0 ? z[i - 1] : 0) + 0.8 * common;
            x[i] *= 0.5 + (double)(i % 7); /* uneven column scales, as activations have */
            if (i == dead_col)
                x[i] = 0;
        }
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++)
                H[i * n + j] += (float)(x[i] * x[j] / T);
    }
    free(x);
    free(z);
    return H;
}

static void test_prepare(void **state)
{
    (void)state;
    const int64_t n = 48;
    float *H = make_hessian(n, 200, 5), *U = malloc((size_t)(n * n) * sizeof *U);
    uint8_t dead[48];
    assert_int_equal(tn_gptq_prepare(H, n, 0.01, U, dead), TN_OK);
    for (int64_t j = 0; j < n; j++)
        assert_int_equal(dead[j], j == 5);
    double mean = 0;
    for (int64_t j = 0; j < n; j++)
        mean += j == 5 ? 1.0 : H[j * n + j];
    mean /= n;
    /* H' = H (dead row/column → identity) + 0.01 mean I; check Uᵀ U H' = I */
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < i; j++)
            assert_true(U[i * n + j] == 0.0f);
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t k = 0; k < n; k++) {
                double uu = 0; /* (UᵀU)[i][k] */
                for (int64_t m = 0; m <= (i < k ? i : k); m++)
                    uu += (double)U[m * n + i] * U[m * n + k];
                double h = (k == 5 || j == 5) ? (k == j ? 1.0 : 0.0) : H[k * n + j];
                if (k == j)
                    h += 0.01 * mean;
                s += uu * h;
            }
            worst = fmax(worst, fabs(s - (i == j ? 1.0 : 0.0)));
        }
    }
    assert_true(worst < 1e-3);
    free(H);
    free(U);
}

/* Σ_rows (w − q)ᵀ H (w − q). */
static double out_err(const float *W, const float *Q, const float *H, int64_t rows, int64_t n)
{
    double e = 0;
    double *d = malloc((size_t)n * sizeof *d);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = 0; i < n; i++)
            d[i] = (double)W[r * n + i] - Q[r * n + i];
        for (int64_t i = 0; i < n; i++) {
            double s = 0;
            for (int64_t j = 0; j < n; j++)
                s += (double)H[i * n + j] * d[j];
            e += d[i] * s;
        }
    }
    free(d);
    return e;
}

static void test_gptq_types(void **state)
{
    (void)state;
    const int64_t n = 256, rows = 12;
    const tn_dtype types[] = {TN_DTYPE_Q4_0, TN_DTYPE_Q4_1, TN_DTYPE_Q5_0, TN_DTYPE_Q5_1, TN_DTYPE_Q8_0,
                              TN_DTYPE_IQ4_NL, TN_DTYPE_Q2_K, TN_DTYPE_Q3_K, TN_DTYPE_Q4_K, TN_DTYPE_Q5_K,
                              TN_DTYPE_Q6_K};
    float *H = make_hessian(n, 600, 77), *U = malloc((size_t)(n * n) * sizeof *U);
    float *I = calloc((size_t)(n * n), sizeof *I), *UI = malloc((size_t)(n * n) * sizeof *UI);
    uint8_t *dead = malloc((size_t)n), *nodead = malloc((size_t)n);
    float *W0 = malloc((size_t)(rows * n) * sizeof *W0), *W = malloc((size_t)(rows * n) * sizeof *W);
    float *Q = malloc((size_t)(rows * n) * sizeof *Q), *Y = malloc((size_t)(rows * n) * sizeof *Y);
    float *diag = malloc((size_t)n * sizeof *diag);
    unsigned char *dst = malloc((size_t)rows * tn_dtype_row_size(TN_DTYPE_Q8_0, n) * 2);
    for (int64_t i = 0; i < n; i++) {
        I[i * n + i] = 1.0f;
        diag[i] = H[i * n + i];
    }
    for (int64_t i = 0; i < rows * n; i++)
        W0[i] = (float)(0.02 * nrand() + (i % 97 == 0 ? 0.1 : 0.0));
    assert_int_equal(tn_gptq_prepare(H, n, 0.01, U, dead), TN_OK);
    assert_int_equal(tn_gptq_prepare(I, n, 0.01, UI, nodead), TN_OK);
    assert_int_equal(dead[77], 1);
    float *W0d = malloc((size_t)(rows * n) * sizeof *W0d); /* W0 with the dead column zeroed: what the rest are scored on */
    memcpy(W0d, W0, (size_t)(rows * n) * sizeof *W0d);
    for (int64_t r = 0; r < rows; r++)
        W0d[r * n + 77] = 0;
    for (size_t k = 0; k < TN_ARRAY_LEN(types); k++) {
        const tn_dtype t = types[k];
        const size_t rb = tn_dtype_row_size(t, n);
        assert_true(tn_gptq_supported(t));
        /* GPTQ */
        memcpy(W, W0, (size_t)(rows * n) * sizeof *W);
        assert_int_equal(tn_gptq_quantize(t, U, dead, diag, W, rows, n, dst, Q), TN_OK);
        for (int64_t r = 0; r < rows; r++) {
            assert_int_equal(tn_dequantize_row(t, dst + (size_t)r * rb, Y + r * n, n), TN_OK);
            assert_memory_equal(Y + r * n, Q + r * n, (size_t)n * sizeof *Y); /* exactly the chosen values */
        }
        const double e_gptq = out_err(W0d, Q, H, rows, n);
        /* the same grid fits, no error feedback: round to nearest */
        memcpy(W, W0d, (size_t)(rows * n) * sizeof *W);
        assert_int_equal(tn_gptq_quantize(t, UI, nodead, diag, W, rows, n, dst, Q), TN_OK);
        const double e_rtn = out_err(W0d, Q, H, rows, n);
        /* tern's diagonal-imatrix quantizer */
        for (int64_t r = 0; r < rows; r++) {
            assert_int_equal(tn_quant_row(t, W0d + r * n, dst + (size_t)r * rb, n, diag), TN_OK);
            assert_int_equal(tn_dequantize_row(t, dst + (size_t)r * rb, Q + r * n, n), TN_OK);
        }
        const double e_diag = out_err(W0d, Q, H, rows, n);
        print_message("%-7s GPTQ %.4e  RTN %.4e  diagonal imatrix %.4e\n", tn_dtype_traits_of(t)->name, e_gptq, e_rtn,
                      e_diag);
        assert_true(e_gptq < 0.9 * e_rtn);
        assert_true(e_gptq < 0.9 * e_diag);
    }
    /* unsupported type, partial blocks */
    assert_false(tn_gptq_supported(TN_DTYPE_F16));
    assert_int_equal(tn_gptq_quantize(TN_DTYPE_F16, U, dead, diag, W, rows, n, dst, NULL), TN_ERR_UNSUPPORTED);
    assert_int_equal(tn_gptq_quantize(TN_DTYPE_Q4_K, U, dead, diag, W, rows, 96, dst, NULL), TN_ERR_INVALID);
    free(H), free(U), free(I), free(UI), free(dead), free(nodead), free(W0), free(W0d), free(W), free(Q), free(Y);
    free(diag), free(dst);
}

static void test_names(void **state)
{
    (void)state;
    char b[160];
    assert_true(tn_hessian_name("blk.3.attn_k.weight", false, b, sizeof b));
    assert_string_equal(b, "blk.3.attn_qkv.hessian");
    assert_true(tn_hessian_name("blk.3.ffn_up.weight", false, b, sizeof b));
    assert_string_equal(b, "blk.3.ffn_gate_up.hessian");
    assert_true(tn_hessian_name("blk.12.ffn_down.weight", false, b, sizeof b));
    assert_string_equal(b, "blk.12.ffn_down.hessian");
    assert_true(tn_hessian_name("output.weight", false, b, sizeof b));
    assert_string_equal(b, "output.hessian");
    assert_false(tn_hessian_name("token_embd.weight", false, b, sizeof b));
    assert_true(tn_hessian_name("token_embd.weight", true, b, sizeof b));
    assert_string_equal(b, "output.hessian");
    assert_false(tn_hessian_name("blk.0.ffn_up_exps.weight", false, b, sizeof b));
    assert_false(tn_hessian_name("blk.0.ffn_gate_inp.weight", false, b, sizeof b));
    assert_false(tn_hessian_name("blk.0.attn_q.bias", false, b, sizeof b));
}

/* A calibration run on stories260K: H per input, its diagonal is the
 * imatrix; then tern quantize --hessian takes GPTQ and lowers the output
 * error; bad files are errors naming tensor and file. */
static void test_collect_quantize_errors(void **state)
{
    (void)state;
    tn_model *m;
    tn_vocab *v;
    tn_pool *pool;
    tn_imatrix *im;
    tn_hessian *hs;
    assert_int_equal(tn_model_load(STORIES, &m), TN_OK);
    assert_int_equal(tn_vocab_from_gguf(m->gguf, &v), TN_OK);
    assert_int_equal(tn_pool_new(1, &pool), TN_OK);
    assert_int_equal(tn_imatrix_new(&im), TN_OK);
    assert_int_equal(tn_hessian_new(&hs), TN_OK);
    tn_imatrix_set_hessian(im, hs);
    size_t len;
    char *text = tn_test_read_file(TEXT, &len);
    assert_non_null(text);
    assert_int_equal(tn_imatrix_collect(im, m, v, pool, text, 20000, 64, 4, NULL, NULL), TN_OK);
    const int n_layer = m->hp.n_layer;
    assert_int_equal(tn_hessian_n_entries(hs), 4 * n_layer + 1);
    char *hpath = tn_test_tmp_path(".gguf");
    assert_int_equal(tn_hessian_save(hs, hpath, "text", 4), TN_OK);

    tn_gguf *g;
    assert_int_equal(tn_gguf_open(hpath, &g), TN_OK);
    assert_int_equal(tn_hessian_check_file(g, hpath), TN_OK);
    const char *probe[] = {"blk.1.attn_v.weight", "blk.1.ffn_gate.weight", "blk.1.ffn_down.weight",
                           "blk.1.attn_output.weight", "output.weight"};
    for (size_t k = 0; k < TN_ARRAY_LEN(probe); k++) {
        const tn_gguf_tensor *wt = tn_gguf_find_tensor(m->gguf, probe[k]);
        assert_non_null(wt);
        const int64_t n = wt->ne[0];
        const float *H;
        assert_int_equal(tn_hessian_lookup(g, hpath, probe[k], false, n, &H), TN_OK);
        assert_non_null(H);
        int64_t nc;
        const float *imp = tn_imatrix_get(im, probe[k], &nc);
        assert_int_equal(nc, n);
        for (int64_t i = 0; i < n; i++) {
            assert_true(fabsf(H[i * n + i] - imp[i]) <= 1e-5f * (imp[i] + 1e-6f));
            for (int64_t j = 0; j < n; j++)
                assert_true(H[i * n + j] == H[j * n + i]);
        }
    }
    const float *H;
    assert_int_equal(tn_hessian_lookup(g, hpath, "token_embd.weight", false, 64, &H), TN_OK);
    assert_null(H);
    assert_int_equal(tn_hessian_lookup(g, hpath, "blk.1.attn_q.weight", false, 65, &H), TN_ERR_FORMAT);
    assert_non_null(strstr(tn_last_error(), "blk.1.attn_qkv.hessian"));
    assert_non_null(strstr(tn_last_error(), hpath));
    assert_int_equal(tn_hessian_lookup(g, hpath, "blk.99.attn_q.weight", false, 64, &H), TN_ERR_FORMAT);
    assert_non_null(strstr(tn_last_error(), "blk.99.attn_qkv.hessian"));
    tn_gguf_free(g);

    /* tern quantize --hessian: GPTQ on the dense matrices (ffn_down's rows of 172 fall back to F16) */
    char *out1 = tn_test_tmp_path(".gguf"), *out2 = tn_test_tmp_path(".gguf");
    tn_quant_opts o = {.in_path = STORIES, .out_path = out1, .type = "Q4_0", .hessian = hpath, .n_threads = 2};
    tn_quant_report rep;
    assert_int_equal(tn_quantize_model(&o, &rep), TN_OK);
    int n_gptq = 0;
    for (int64_t i = 0; i < rep.n_tensors; i++) {
        const tn_quant_tensor *q = &rep.tensors[i];
        n_gptq += q->gptq;
        if (strstr(q->name, "attn_q.weight") || strstr(q->name, "ffn_up.weight"))
            assert_true(q->gptq);
        if (strstr(q->name, "ffn_down") || strstr(q->name, "token_embd"))
            assert_false(q->gptq);
    }
    assert_int_equal(n_gptq, 6 * n_layer + 1);
    tn_quant_report_deinit(&rep);
    /* the output error Σ (w−q)ᵀH(w−q) of attn_q is below the diagonal-imatrix file's */
    assert_int_equal(tn_imatrix_save(im, out2, NULL), TN_OK);
    char *imat = out2;
    char *out3 = tn_test_tmp_path(".gguf");
    tn_quant_opts o2 = {.in_path = STORIES, .out_path = out3, .type = "Q4_0", .imatrix = imat, .n_threads = 2};
    assert_int_equal(tn_quantize_model(&o2, NULL), TN_OK);
    {
        tn_gguf *a, *b, *hg;
        assert_int_equal(tn_gguf_open(out1, &a), TN_OK);
        assert_int_equal(tn_gguf_open(out3, &b), TN_OK);
        assert_int_equal(tn_gguf_open(hpath, &hg), TN_OK);
        const tn_gguf_tensor *w0 = tn_gguf_find_tensor(m->gguf, "blk.2.attn_q.weight");
        const tn_gguf_tensor *wa = tn_gguf_find_tensor(a, "blk.2.attn_q.weight");
        const tn_gguf_tensor *wb = tn_gguf_find_tensor(b, "blk.2.attn_q.weight");
        const int64_t n = w0->ne[0], rows = w0->ne[1];
        const float *Hq;
        assert_int_equal(tn_hessian_lookup(hg, hpath, "blk.2.attn_q.weight", false, n, &Hq), TN_OK);
        float *qa = malloc((size_t)(n * rows) * sizeof *qa), *qb = malloc((size_t)(n * rows) * sizeof *qb);
        const size_t rb = tn_dtype_row_size(TN_DTYPE_Q4_0, n);
        for (int64_t r = 0; r < rows; r++) {
            assert_int_equal(tn_dequantize_row(TN_DTYPE_Q4_0, (const unsigned char *)wa->data + r * rb, qa + r * n, n),
                             TN_OK);
            assert_int_equal(tn_dequantize_row(TN_DTYPE_Q4_0, (const unsigned char *)wb->data + r * rb, qb + r * n, n),
                             TN_OK);
        }
        const double ea = out_err(w0->data, qa, Hq, rows, n), eb = out_err(w0->data, qb, Hq, rows, n);
        print_message("stories260K blk.2.attn_q Q4_0: output error GPTQ %.4e, diagonal imatrix %.4e\n", ea, eb);
        assert_true(ea < 0.9 * eb);
        free(qa);
        free(qb);
        tn_gguf_free(a);
        tn_gguf_free(b);
        tn_gguf_free(hg);
    }

    /* bad files: not a hessian file; a tensor of the wrong shape; one missing; a NaN */
    char *bad = tn_test_tmp_path(".gguf");
    unlink(out1);
    o.hessian = STORIES;
    assert_int_equal(tn_quantize_model(&o, NULL), TN_ERR_FORMAT);
    assert_non_null(strstr(tn_last_error(), "not a hessian file"));
    assert_non_null(strstr(tn_last_error(), STORIES));
    for (int kind = 0; kind < 3; kind++) {
        tn_gguf_writer *w;
        assert_int_equal(tn_gguf_writer_new(&w), TN_OK);
        assert_int_equal(tn_gguf_set_str(w, "general.type", "hessian"), TN_OK);
        float *z = calloc(64 * 64, sizeof *z);
        for (int i = 0; i < 64; i++)
            z[i * 65] = 1;
        if (kind == 2)
            z[3 * 64 + 5] = NAN;
        const int64_t ne_ok[2] = {64, 64}, ne_bad[2] = {64, 32};
        char nm[64];
        for (int l = 0; l < n_layer; l++) {
            snprintf(nm, sizeof nm, "blk.%d.attn_qkv.hessian", l);
            assert_int_equal(tn_gguf_add_tensor(w, nm, TN_DTYPE_F32, 2, kind == 0 && l == 1 ? ne_bad : ne_ok, z),
                             TN_OK);
        }
        const int64_t ne_down[2] = {172, 172};
        float *zd = calloc(172 * 172, sizeof *zd);
        for (int i = 0; i < 172; i++)
            zd[i * 173] = 1;
        if (kind != 1) { /* kind 1: the rest missing */
            for (int l = 0; l < n_layer; l++) {
                const char *sfx[] = {"attn_output", "ffn_gate_up", "ffn_down"};
                for (int s = 0; s < 3; s++) {
                    snprintf(nm, sizeof nm, "blk.%d.%s.hessian", l, sfx[s]);
                    assert_int_equal(tn_gguf_add_tensor(w, nm, TN_DTYPE_F32, 2, s == 2 ? ne_down : ne_ok, s == 2 ? zd : z),
                                     TN_OK);
                }
            }
            assert_int_equal(tn_gguf_add_tensor(w, "output.hessian", TN_DTYPE_F32, 2, ne_ok, z), TN_OK);
        }
        assert_int_equal(tn_gguf_writer_write(w, bad), TN_OK);
        tn_gguf_writer_free(w);
        free(z);
        free(zd);
        o.hessian = bad;
        assert_int_equal(tn_quantize_model(&o, NULL), TN_ERR_FORMAT);
        const char *e = tn_last_error();
        print_message("bad hessian %d: %s\n", kind, e);
        assert_non_null(strstr(e, bad));
        if (kind == 0)
            assert_true(strstr(e, "blk.1.attn_qkv.hessian") && strstr(e, "[64, 32, 1]"));
        if (kind == 1)
            assert_true(strstr(e, "has no tensor") && strstr(e, ".hessian"));
        if (kind == 2)
            assert_true(strstr(e, ".hessian") && strstr(e, "element (3, 5) is not finite"));
        assert_true(access(out1, F_OK) != 0); /* the failed write leaves nothing behind */
    }
    unlink(hpath), unlink(out2), unlink(out3), unlink(bad);
    free(hpath), free(out1), free(out2), free(out3), free(bad), free(text);
    tn_imatrix_free(im);
    tn_hessian_free(hs);
    tn_pool_free(pool);
    tn_vocab_free(v);
    tn_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cholesky),
        cmocka_unit_test(test_prepare),
        cmocka_unit_test(test_gptq_types),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_collect_quantize_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
