/*
 * test_w8a8.c — tern's W8A8 type: the integer dot kernel of every ISA this
 * CPU runs against the scalar reference on odd shapes (bit for bit: the sums
 * are exact), the threaded matmul against a double-precision reference of
 * the same quantized operands, batch and thread invariance, and row
 * quantization bounds.
 */
#include "kern/kern.h"
#include "kern/hadamard.h"
#include "kern/w8a8.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rs = 0x853c49e6748fea9bull;
static uint32_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 16);
}
static float frand(void) { return (float)((int)(rnd() % 20001) - 10000) / 10000.0f; }

static void test_idot_variants(void **state)
{
    const int64_t ns[] = {1, 3, 7, 31, 32, 33, 63, 64, 65, 100, 172, 257, 1000, 2049};
    tn_w8a8_kernels ref, k;
    assert_true(tn_w8a8_kernels_of(0, &ref));
    int n_variants = 0;
    for (int isa = 1; isa <= 2; isa++) {
        if (!tn_w8a8_kernels_of(isa, &k))
            continue;
        n_variants++;
        for (size_t i = 0; i < TN_ARRAY_LEN(ns); i++) {
            const int64_t n = ns[i];
            const size_t stride = (size_t)n + 4 + (size_t)(rnd() % 5); /* rows need not be aligned */
            int8_t *w = malloc(4 * stride), *x = malloc((size_t)n);
            for (size_t j = 0; j < 4 * stride; j++)
                w[j] = (int8_t)((int)(rnd() % 255) - 127);
            for (int64_t j = 0; j < n; j++)
                x[j] = (int8_t)((int)(rnd() % 255) - 127);
            if (n > 4)
                x[0] = 127, x[1] = -127, w[0] = -127, w[1] = -127; /* extremes */
            for (int nr = 1; nr <= 4; nr++) {
                int32_t a[4], b[4];
                ref.idot(w + 1, stride, nr, x, n, a);
                k.idot(w + 1, stride, nr, x, n, b);
                for (int r = 0; r < nr; r++) {
                    int64_t s = 0;
                    for (int64_t j = 0; j < n; j++)
                        s += (int64_t)w[1 + (size_t)r * stride + j] * x[j];
                    assert_int_equal(a[r], s);
                    if (a[r] != b[r])
                        fail_msg("isa %d n %lld nr %d row %d: %d != %d", isa, (long long)n, nr, r, b[r], a[r]);
                }
            }
            free(w);
            free(x);
        }
    }
    printf("w8a8: %d SIMD variant(s) checked against scalar\n", n_variants);
}

/* Each ISA's activation quantizer writes the scalar one's bytes and scale,
 * signed and offset, on odd lengths, ties (x exactly k + 0.5 steps), a
 * clamp-edge maximum and an all-zero row. */
static void test_quant_variants(void **state)
{
    const int64_t ns[] = {1, 5, 15, 16, 17, 31, 33, 64, 65, 127, 200, 2048, 2051};
    tn_w8a8_kernels ref, k;
    assert_true(tn_w8a8_kernels_of(0, &ref));
    for (int isa = 1; isa <= 2; isa++) {
        if (!tn_w8a8_kernels_of(isa, &k))
            continue;
        for (size_t i = 0; i < TN_ARRAY_LEN(ns); i++) {
            const int64_t n = ns[i];
            float *x = malloc(sizeof(float) * (size_t)n);
            int8_t *qa = malloc((size_t)n + 64), *qb = malloc((size_t)n + 64);
            for (int kind = 0; kind < 3; kind++) {
                for (int64_t j = 0; j < n; j++)
                    x[j] = kind == 2 ? 0.0f : frand() * 5.0f;
                if (kind == 1) /* amax 127, so d = 1 and x = k + 0.5 are exact ties */
                    for (int64_t j = 0; j < n; j++)
                        x[j] = (float)((int)(j % 253) - 126) + (j % 2 ? 0.5f : -0.5f);
                if (kind == 1 && n > 1)
                    x[n / 2] = -127.0f;
                int8_t *qs = malloc((size_t)n);
                float ds;
                tn_w8a8_quantize_act(x, qs, &ds, n);
                if (kind == 1 && n > 1) {
                    assert_true(ds == 1.0f);
                    assert_int_equal(qs[n / 2], -127);
                    assert_int_equal(qs[0], -127); /* -126.5: ties round away from zero */
                    assert_int_equal(qs[1], -125); /* -124.5 */
                }
                for (int off = 0; off < 2; off++) {
                    memset(qb, 0x55, (size_t)n + 64);
                    const float da = ref.quant(x, qa, n, off), db = k.quant(x, qb, n, off);
                    if (memcmp(&da, &db, 4) != 0 || memcmp(qa, qb, (size_t)n) != 0)
                        fail_msg("quant isa %d n %lld kind %d offset %d differs", isa, (long long)n, kind, off);
                    assert_int_equal((unsigned char)qb[n], 0x55); /* nothing written past n */
                    assert_true(da == ds);
                    for (int64_t j = 0; j < n; j++) /* offset bytes are the signed ones + 128 */
                        assert_int_equal((uint8_t)qa[j], (uint8_t)(qs[j] + (off ? 128 : 0)));
                }
                free(qs);
            }
            free(x);
            free(qa);
            free(qb);
        }
    }
}

/* Each ISA's GEMM gives the scalar GEMM's bits on odd row, token and column
 * counts (every tile shape and the column tails). */
static void test_gemm_variants(void **state)
{
    const int64_t ns[] = {1, 15, 16, 63, 64, 65, 130, 257};
    const int64_t nrs[] = {1, 3, 4, 5, 11, 70}, nts[] = {1, 2, 3, 5, 6, 7, 13};
    tn_w8a8_kernels ref, k;
    assert_true(tn_w8a8_kernels_of(0, &ref));
    for (int isa = 1; isa <= 2; isa++) {
        if (!tn_w8a8_kernels_of(isa, &k))
            continue;
        for (size_t a = 0; a < TN_ARRAY_LEN(ns); a++) {
            const int64_t n = ns[a], nr_max = 70, nt_max = 13;
            const size_t xrow = (size_t)n + 64;
            unsigned char *w = malloc(TN_W8A8_ROW(n) * (size_t)nr_max);
            float *x = malloc(sizeof(float) * (size_t)n), xd[13];
            int8_t *xs = malloc(xrow * (size_t)nt_max), *xk = malloc(xrow * (size_t)nt_max);
            const size_t ny = sizeof(float) * (size_t)((nr_max + 1) * nt_max);
            float *ya = malloc(ny), *yb = malloc(ny);
            for (int64_t r = 0; r < nr_max; r++) {
                for (int64_t j = 0; j < n; j++)
                    x[j] = frand();
                tn_w8a8_quantize_row(x, w + TN_W8A8_ROW(n) * (size_t)r, n);
            }
            for (int64_t t = 0; t < nt_max; t++) {
                for (int64_t j = 0; j < n; j++)
                    x[j] = frand() * 3.0f;
                xd[t] = ref.quant(x, xs + (size_t)t * xrow, n, false);
                k.quant(x, xk + (size_t)t * xrow, n, k.gemm_offset);
            }
            for (size_t b = 0; b < TN_ARRAY_LEN(nrs); b++)
                for (size_t c = 0; c < TN_ARRAY_LEN(nts); c++) {
                    const int64_t nr = nrs[b], nt = nts[c];
                    ref.gemm(w, TN_W8A8_ROW(n), nr, xs, xrow, xd, nt, n, ya, (size_t)nr + 1);
                    k.gemm(w, TN_W8A8_ROW(n), nr, xk, xrow, xd, nt, n, yb, (size_t)nr + 1);
                    for (int64_t t = 0; t < nt; t++)
                        if (memcmp(ya + t * (nr + 1), yb + t * (nr + 1), sizeof(float) * (size_t)nr) != 0)
                            fail_msg("gemm isa %d n %lld rows %lld tokens %lld: token %lld differs", isa, (long long)n,
                                     (long long)nr, (long long)nt, (long long)t);
                }
            /* the scalar GEMM itself against a 64-bit sum */
            for (int64_t r = 0; r < 5; r++) {
                const unsigned char *wr = w + TN_W8A8_ROW(n) * (size_t)r;
                float dw;
                memcpy(&dw, wr, 4);
                int64_t s = 0;
                for (int64_t j = 0; j < n; j++)
                    s += (int64_t)(int8_t)wr[4 + j] * xs[j];
                ref.gemm(w, TN_W8A8_ROW(n), 5, xs, xrow, xd, 1, n, ya, 5);
                assert_true(ya[r] == (float)s * (dw * xd[0]));
            }
            free(w), free(x), free(xs), free(xk), free(ya), free(yb);
        }
    }
}

static void test_quantize_rows(void **state)
{
    enum { N = 77 };
    float x[N], back[N];
    unsigned char row[N + 4];
    for (int j = 0; j < N; j++)
        x[j] = frand() * 3.0f;
    x[5] = -4.5f; /* the max magnitude, negative */
    tn_w8a8_quantize_row(x, row, N);
    float d;
    memcpy(&d, row, 4);
    assert_true(fabsf(d - 4.5f / 127.0f) < 1e-7f);
    assert_int_equal((int8_t)row[4 + 5], -127);
    tn_w8a8_dequantize_row(row, back, N);
    for (int j = 0; j < N; j++)
        assert_true(fabsf(back[j] - x[j]) <= 0.5f * d * 1.0001f);
    memset(x, 0, sizeof x);
    tn_w8a8_quantize_row(x, row, N);
    memcpy(&d, row, 4);
    assert_true(d == 0.0f);
}

/* matmul = sum over the quantized operands (double), and each token's row
 * is the same alone, in a batch, on 1 or 2 threads and on every ISA. */
static void test_matmul(void **state)
{
    const int64_t shapes[][3] = {{172, 64, 9}, {64, 172, 9}, {33, 5, 9}, {2048, 37, 9}, {4096, 13, 200}};
    tn_pool *pool;
    assert_int_equal(tn_pool_new(2, &pool), TN_OK);
    for (size_t s = 0; s < TN_ARRAY_LEN(shapes); s++) {
        const int64_t n_in = shapes[s][0], n_out = shapes[s][1], nt = shapes[s][2];
        unsigned char *w = malloc(TN_W8A8_ROW(n_in) * (size_t)n_out);
        float *wf = malloc(sizeof(float) * (size_t)(n_in * n_out)), *x = malloc(sizeof(float) * (size_t)(n_in * nt));
        float *y = malloc(sizeof(float) * (size_t)(n_out * nt)), *y1 = malloc(sizeof(float) * (size_t)n_out);
        for (int64_t r = 0; r < n_out; r++) {
            for (int64_t j = 0; j < n_in; j++)
                wf[r * n_in + j] = frand() * (1.0f + (float)(r % 3));
            tn_w8a8_quantize_row(wf + r * n_in, w + (size_t)r * TN_W8A8_ROW(n_in), n_in);
            tn_w8a8_dequantize_row(w + (size_t)r * TN_W8A8_ROW(n_in), wf + r * n_in, n_in);
        }
        for (int64_t i = 0; i < n_in * nt; i++)
            x[i] = frand() * 2.0f;
        void *wd = malloc(tn_w8a8_wsize(n_in, nt));
        tn_matmul(pool, w, TN_DTYPE_W8A8, n_in, n_out, x, nt, y, wd);
        int8_t *qx = malloc((size_t)n_in);
        for (int64_t t = 0; t < nt; t++) {
            float dx;
            tn_w8a8_quantize_act(x + t * n_in, qx, &dx, n_in);
            for (int64_t r = 0; r < n_out; r++) {
                double ref = 0;
                for (int64_t j = 0; j < n_in; j++)
                    ref += (double)wf[r * n_in + j] * dx * qx[j];
                assert_true(fabs(y[t * n_out + r] - ref) <= 1e-5 * (fabs(ref) + 1.0));
            }
            for (int isa = 0; isa <= 2; isa++) { /* alone, one thread, each ISA: same bits */
                if (!tn_kern_set_isa((tn_isa)isa))
                    continue;
                tn_matmul(NULL, w, TN_DTYPE_W8A8, n_in, n_out, x + t * n_in, 1, y1, wd);
                assert_memory_equal(y1, y + t * n_out, sizeof(float) * (size_t)n_out);
            }
            tn_kern_set_isa(tn_kern_init());
        }
        free(qx);
        free(wd);
        free(w);
        free(wf);
        free(x);
        free(y);
        free(y1);
    }
    tn_pool_free(pool);
}

/* Sylvester's H_b (entries ±1) by its definition, (-1)^popcount(i & j). */
static int sylvester(int64_t i, int64_t j) { return __builtin_popcountll((unsigned long long)(i & j)) % 2 ? -1 : 1; }

/* tn_hadamard is H_b·x/√b per block (b the largest power of two dividing
 * n, capped at 512) and its own inverse. */
static void test_hadamard(void **state)
{
    const int64_t cases[][2] = {{172, 4}, {768, 256}, {5632, 512}, {96, 32}, {40, 8}, {7, 1}, {1024, 512}};
    for (size_t c = 0; c < TN_ARRAY_LEN(cases); c++) {
        const int64_t n = cases[c][0], b = cases[c][1];
        assert_int_equal(tn_hadamard_block(n), b);
        float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
        for (int64_t i = 0; i < n; i++)
            x[i] = y[i] = frand() * (i % 17 == 3 ? 40.0f : 1.0f); /* with outliers */
        tn_hadamard(y, n);
        for (int64_t o = 0; o < n; o += b)
            for (int64_t i = 0; i < b; i++) {
                double ref = 0;
                for (int64_t j = 0; j < b; j++)
                    ref += sylvester(i, j) * (double)x[o + j];
                ref /= sqrt((double)b);
                assert_true(fabs(y[o + i] - ref) <= 1e-5 * (fabs(ref) + 1.0));
            }
        tn_hadamard(y, n);
        for (int64_t i = 0; i < n; i++)
            assert_true(fabsf(y[i] - x[i]) <= 1e-5f * (fabsf(x[i]) + 1.0f));
        free(x);
        free(y);
    }
}

/* W8A8_HAD: rows that hold W·H against rotated activations. The product
 * equals W8A8's on activations rotated beforehand, bit for bit, whatever the
 * token count, thread count and ISA; and it approximates X·Wᵀ of the
 * original W better than plain W8A8 does when a few channels carry outliers
 * that move from token to token. */
static void test_matmul_had(void **state)
{
    const int64_t n_in = 512, n_out = 37, nt = 23;
    tn_pool *pool;
    assert_int_equal(tn_pool_new(2, &pool), TN_OK);
    unsigned char *wh = malloc(TN_W8A8_ROW(n_in) * (size_t)n_out), *wp = malloc(TN_W8A8_ROW(n_in) * (size_t)n_out);
    float *wf = malloc(sizeof(float) * (size_t)(n_in * n_out)), *row = malloc(sizeof(float) * (size_t)n_in);
    float *x = malloc(sizeof(float) * (size_t)(n_in * nt)), *xr = malloc(sizeof(float) * (size_t)(n_in * nt));
    float *y = malloc(sizeof(float) * (size_t)(n_out * nt)), *yr = malloc(sizeof(float) * (size_t)(n_out * nt));
    float *yp = malloc(sizeof(float) * (size_t)(n_out * nt)), *y1 = malloc(sizeof(float) * (size_t)n_out);
    for (int64_t r = 0; r < n_out; r++) {
        for (int64_t j = 0; j < n_in; j++)
            row[j] = wf[r * n_in + j] = frand();
        tn_w8a8_quantize_row(row, wp + (size_t)r * TN_W8A8_ROW(n_in), n_in);
        tn_hadamard(row, n_in);
        tn_w8a8_quantize_row(row, wh + (size_t)r * TN_W8A8_ROW(n_in), n_in);
    }
    for (int64_t t = 0; t < nt; t++)
        for (int64_t j = 0; j < n_in; j++)
            x[t * n_in + j] = frand() * ((j * 7 + t * 13) % 101 == 0 ? 60.0f : 1.0f);
    memcpy(xr, x, sizeof(float) * (size_t)(n_in * nt));
    for (int64_t t = 0; t < nt; t++)
        tn_hadamard(xr + t * n_in, n_in);
    void *wd = malloc(tn_w8a8_had_wsize(n_in, nt));
    assert_true(tn_w8a8_had_wsize(n_in, nt) >= tn_w8a8_wsize(n_in, nt));
    assert_int_equal(tn_matmul_wsize(TN_DTYPE_W8A8_HAD, n_in, nt), tn_w8a8_had_wsize(n_in, nt));
    tn_matmul(pool, wh, TN_DTYPE_W8A8_HAD, n_in, n_out, x, nt, y, wd);
    tn_matmul(pool, wh, TN_DTYPE_W8A8, n_in, n_out, xr, nt, yr, wd);
    assert_memory_equal(y, yr, sizeof(float) * (size_t)(n_out * nt));
    tn_matmul(pool, wp, TN_DTYPE_W8A8, n_in, n_out, x, nt, yp, wd);
    double err_h = 0, err_p = 0;
    for (int64_t t = 0; t < nt; t++) {
        for (int64_t r = 0; r < n_out; r++) {
            double ref = 0;
            for (int64_t j = 0; j < n_in; j++)
                ref += (double)wf[r * n_in + j] * x[t * n_in + j];
            err_h += (y[t * n_out + r] - ref) * (y[t * n_out + r] - ref);
            err_p += (yp[t * n_out + r] - ref) * (yp[t * n_out + r] - ref);
        }
        for (int isa = 0; isa <= 2; isa++) {
            if (!tn_kern_set_isa((tn_isa)isa))
                continue;
            tn_matmul(NULL, wh, TN_DTYPE_W8A8_HAD, n_in, n_out, x + t * n_in, 1, y1, wd);
            assert_memory_equal(y1, y + t * n_out, sizeof(float) * (size_t)n_out);
        }
        tn_kern_set_isa(tn_kern_init());
    }
    assert_true(err_h < 0.5 * err_p); /* the outliers no longer set the step */
    free(wd);
    free(wh);
    free(wp);
    free(wf);
    free(row);
    free(x);
    free(xr);
    free(y);
    free(yr);
    free(yp);
    free(y1);
    tn_pool_free(pool);
}

int main(void)
{
    tn_kern_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idot_variants),
        cmocka_unit_test(test_quant_variants),
        cmocka_unit_test(test_gemm_variants),
        cmocka_unit_test(test_quantize_rows),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_hadamard),
        cmocka_unit_test(test_matmul_had),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
