/*
 * test_w8a8.c — tern's W8A8 type: the integer dot kernel of every ISA this
 * CPU runs against the scalar reference on odd shapes (bit for bit: the sums
 * are exact), the threaded matmul against a double-precision reference of
 * the same quantized operands, batch and thread invariance, and row
 * quantization bounds.
 */
#include "kern/kern.h"
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
    tn_w8a8_idot_fn ref = tn_w8a8_idot_of(0);
    assert_non_null(ref);
    int n_variants = 0;
    for (int isa = 1; isa <= 2; isa++) {
        tn_w8a8_idot_fn f = tn_w8a8_idot_of(isa);
        if (!f)
            continue;
        n_variants++;
        for (size_t k = 0; k < TN_ARRAY_LEN(ns); k++) {
            const int64_t n = ns[k];
            const size_t stride = (size_t)n + 4 + (size_t)(rnd() % 5); /* rows need not be aligned */
            int8_t *w = malloc(4 * stride), *x = malloc((size_t)n);
            for (size_t i = 0; i < 4 * stride; i++)
                w[i] = (int8_t)((int)(rnd() % 255) - 127);
            for (int64_t i = 0; i < n; i++)
                x[i] = (int8_t)((int)(rnd() % 255) - 127);
            if (n > 4)
                x[0] = 127, x[1] = -127, w[0] = -127, w[1] = -127; /* extremes */
            for (int nr = 1; nr <= 4; nr++) {
                int32_t a[4], b[4];
                ref(w + 1, stride, nr, x, n, a);
                f(w + 1, stride, nr, x, n, b);
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
    const int64_t shapes[][2] = {{172, 64}, {64, 172}, {33, 5}, {2048, 37}};
    tn_pool *pool;
    assert_int_equal(tn_pool_new(2, &pool), TN_OK);
    for (size_t s = 0; s < TN_ARRAY_LEN(shapes); s++) {
        const int64_t n_in = shapes[s][0], n_out = shapes[s][1], nt = 9;
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

int main(void)
{
    tn_kern_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idot_variants),
        cmocka_unit_test(test_quantize_rows),
        cmocka_unit_test(test_matmul),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
