/*
 * test_w8a8_x16.c — the W8A8 x16 layout (kern/w8a8_x16.h): W8A8 and
 * W8A8_HAD matrices repacked in groups of 16 rows.
 *
 * What is asserted:
 *   - repacking is lossless: tn_get_row on the repacked matrix gives every
 *     row bit-identical to tn_w8a8_dequantize_row on the original, for
 *     n_in not a multiple of 4 and n_out not a multiple of 16;
 *   - tn_matmul on the repacked matrix, on every ISA (the AVX-512 kernel
 *     and the scalar reference of the layout), 1 and 2 threads, n_tokens
 *     1..37, equals tn_matmul on the file's rows with the scalar ISA (the
 *     W8A8 reference, which test_w8a8.c checks against a double sum of the
 *     quantized operands) bit for bit; so a token's outputs do not depend
 *     on the token count or the thread count either;
 *   - the repack routes (tn__x16_dtype_for, matrix bytes, file dtype) and
 *     repacks only where the ISA has the kernel.
 */
#include "kern/kern_impl.h"
#include "kern/repack.h"
#include "kern/w8a8.h"
#include "kern/w8a8_x16.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}
static float rnd(void) { return (float)(rng() >> 8) / 8388608.0f - 1.0f; }

/* A (n_out, n_in) W8A8 matrix with rows of different scales (some with an
 * extreme, so q reaches ±127) and its repacked copy (caller frees both). */
static void make(tn_dtype wt, int64_t n_in, int64_t n_out, unsigned char **w, void **wx)
{
    const size_t row = TN_W8A8_ROW(n_in);
    float *f = malloc((size_t)n_in * sizeof(float));
    *w = malloc(row * (size_t)n_out);
    assert_non_null(f);
    assert_non_null(*w);
    for (int64_t r = 0; r < n_out; r++) {
        const float s = 0.1f + (float)(r % 7);
        for (int64_t i = 0; i < n_in; i++)
            f[i] = rnd() * s;
        if (r % 5 == 3)
            f[r % n_in] = -4.0f * s;
        tn_w8a8_quantize_row(f, *w + row * (size_t)r, n_in);
    }
    const tn_dtype xt = wt == TN_DTYPE_W8A8 ? TN_DTYPE_W8A8X16 : TN_DTYPE_W8A8_HADX16;
    *wx = tn_alloc_aligned(tn__x16_matrix_bytes(xt, n_in, n_out), 64);
    assert_non_null(*wx);
    tn__x16_repack(wt, *w, n_in, n_out, *wx);
    free(f);
}

static const int64_t outs[] = {1, 15, 16, 17, 37, 100};

static void test_roundtrip(void **state)
{
    (void)state;
    const int64_t ins[] = {1, 3, 5, 64, 67, 172, 2048 + 5};
    for (size_t i = 0; i < TN_ARRAY_LEN(ins); i++)
        for (size_t o = 0; o < TN_ARRAY_LEN(outs); o++) {
            const int64_t n_in = ins[i], n_out = outs[o];
            assert_int_equal(tn__x16_matrix_bytes(TN_DTYPE_W8A8X16, n_in, n_out),
                             (size_t)((n_out + 15) / 16) * (64 * (size_t)((n_in + 3) / 4) + 64));
            unsigned char *w;
            void *wx;
            make(TN_DTYPE_W8A8, n_in, n_out, &w, &wx);
            float *a1 = malloc((size_t)n_in * sizeof(float)), *a2 = malloc((size_t)n_in * sizeof(float));
            assert_true(a1 && a2);
            for (int64_t r = 0; r < n_out; r++) {
                tn_w8a8_dequantize_row(w + TN_W8A8_ROW(n_in) * (size_t)r, a1, n_in);
                tn_get_row(wx, TN_DTYPE_W8A8X16, n_in, r, a2);
                if (memcmp(a1, a2, (size_t)n_in * sizeof(float)) != 0)
                    fail_msg("n_in %lld n_out %lld: row %lld differs after repacking", (long long)n_in,
                             (long long)n_out, (long long)r);
            }
            free(a1), free(a2), free(w);
            tn_free_aligned(wx);
        }
}

/* y = X · Wᵀ through tn_matmul on the current ISA and the given pool. */
static void mm(tn_pool *pool, const void *w, tn_dtype t, int64_t n_in, int64_t n_out, const float *x, int64_t nt,
               float *y)
{
    void *wd = tn_alloc_aligned(TN_MAX(tn_matmul_wsize(t, n_in, nt), (size_t)64), 64);
    assert_non_null(wd);
    tn_matmul(pool, w, t, n_in, n_out, x, nt, y, wd);
    tn_free_aligned(wd);
}

/* Every ISA on the repacked matrix vs the scalar W8A8 kernel on the file's. */
static void test_isas(void **state)
{
    (void)state;
    tn_pool *pool2;
    assert_int_equal(tn_pool_new(2, &pool2), TN_OK);
    const int64_t nt_max = 37;
    const int64_t ins[] = {1, 5, 67, 172, 2048 + 5};
    const tn_dtype wts[] = {TN_DTYPE_W8A8, TN_DTYPE_W8A8_HAD};
    int n_checked = 0;
    for (size_t a = 0; a < TN_ARRAY_LEN(wts); a++)
        for (size_t i = 0; i < TN_ARRAY_LEN(ins); i++)
            for (size_t o = 0; o < TN_ARRAY_LEN(outs); o++) {
                const tn_dtype wt = wts[a], xt = wt == TN_DTYPE_W8A8 ? TN_DTYPE_W8A8X16 : TN_DTYPE_W8A8_HADX16;
                const int64_t n_in = ins[i], n_out = outs[o];
                unsigned char *w;
                void *wx;
                make(wt, n_in, n_out, &w, &wx);
                const size_t ny = (size_t)(nt_max * n_out);
                float *x = malloc((size_t)(nt_max * n_in) * sizeof(float));
                float *ref = malloc(ny * sizeof(float)), *y = malloc(ny * sizeof(float));
                assert_true(x && ref && y);
                for (int64_t k = 0; k < nt_max * n_in; k++) /* a few large values: the sums pass 2^24 */
                    x[k] = rnd() * (k % 97 == 5 ? 50.0f : 1.0f);
                assert_true(tn_kern_set_isa(TN_ISA_SCALAR));
                mm(NULL, w, wt, n_in, n_out, x, nt_max, ref);
                for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++) {
                    if (!tn_kern_set_isa((tn_isa)isa))
                        continue;
                    for (int64_t nt = 1; nt <= nt_max; nt += (nt < 18 ? 1 : 19)) {
                        for (int th = 0; th < 2; th++) {
                            for (size_t k = 0; k < ny; k++)
                                y[k] = NAN;
                            mm(th ? pool2 : NULL, wx, xt, n_in, n_out, x, nt, y);
                            if (memcmp(y, ref, (size_t)(nt * n_out) * sizeof(float)) != 0)
                                fail_msg("%s %s n_in %lld n_out %lld n_tokens %lld threads %d: differs from the "
                                         "scalar W8A8 kernel with %lld tokens",
                                         tn_isa_name((tn_isa)isa), tn_dtype_traits_of(wt)->name, (long long)n_in,
                                         (long long)n_out, (long long)nt, th + 1, (long long)nt_max);
                            n_checked++;
                        }
                    }
                }
                free(x), free(ref), free(y), free(w);
                tn_free_aligned(wx);
            }
    tn_kern_set_isa(tn_kern_init());
    tn_pool_free(pool2);
    assert_true(n_checked > 0);
}

/* Large sums: every weight and activation at ±127 over many columns, the
 * int32 sum far past 2^24 (so its conversion to float rounds) and its
 * partial sums with the +128 offset past 2^31 in the unsigned wrap. */
static void test_extremes(void **state)
{
    (void)state;
    const int64_t n_in = 70001, n_out = 19, nt = 3;
    unsigned char *w = malloc(TN_W8A8_ROW(n_in) * (size_t)n_out);
    float *f = malloc((size_t)n_in * sizeof(float)), *x = malloc((size_t)(nt * n_in) * sizeof(float));
    float *ref = malloc((size_t)(nt * n_out) * sizeof(float)), *y = malloc((size_t)(nt * n_out) * sizeof(float));
    assert_true(w && f && x && ref && y);
    for (int64_t r = 0; r < n_out; r++) {
        for (int64_t i = 0; i < n_in; i++)
            f[i] = (r % 2 ? -1.0f : 1.0f) * (i % 3 ? 1.0f : 0.999f);
        tn_w8a8_quantize_row(f, w + TN_W8A8_ROW(n_in) * (size_t)r, n_in);
    }
    for (int64_t k = 0; k < nt * n_in; k++)
        x[k] = (k / n_in == 1) ? -1.0f : 1.0f;
    void *wx = tn_alloc_aligned(tn__x16_matrix_bytes(TN_DTYPE_W8A8X16, n_in, n_out), 64);
    assert_non_null(wx);
    tn__x16_repack(TN_DTYPE_W8A8, w, n_in, n_out, wx);
    assert_true(tn_kern_set_isa(TN_ISA_SCALAR));
    mm(NULL, w, TN_DTYPE_W8A8, n_in, n_out, x, nt, ref);
    assert_true(fabsf(ref[0]) > 60000.0f); /* ~ n_in: the int sum is ~127² n_in > 2^30 */
    for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++) {
        if (!tn_kern_set_isa((tn_isa)isa))
            continue;
        mm(NULL, wx, TN_DTYPE_W8A8X16, n_in, n_out, x, nt, y);
        assert_memory_equal(y, ref, (size_t)(nt * n_out) * sizeof(float));
    }
    tn_kern_set_isa(tn_kern_init());
    free(w), free(f), free(x), free(ref), free(y);
    tn_free_aligned(wx);
}

static void test_dtype_for(void **state)
{
    (void)state;
    const tn_isa isa = tn_kern_init();
    for (int i = TN_ISA_SCALAR; i <= TN_ISA_AVX512; i++) {
        if (!tn_kern_set_isa((tn_isa)i))
            continue;
        const bool has = i >= TN_ISA_AVX512;
        assert_int_equal(tn__x16_dtype_for(TN_DTYPE_W8A8), has ? TN_DTYPE_W8A8X16 : TN_DTYPE_COUNT);
        assert_int_equal(tn__x16_dtype_for(TN_DTYPE_W8A8_HAD), has ? TN_DTYPE_W8A8_HADX16 : TN_DTYPE_COUNT);
    }
    assert_true(tn_kern_set_isa(isa));
    assert_true(tn__dtype_is_x16(TN_DTYPE_W8A8X16) && tn__dtype_is_x16(TN_DTYPE_W8A8_HADX16));
    assert_int_equal(tn__x16_file_dtype(TN_DTYPE_W8A8X16), TN_DTYPE_W8A8);
    assert_int_equal(tn__x16_file_dtype(TN_DTYPE_W8A8_HADX16), TN_DTYPE_W8A8_HAD);
    /* the HAD scratch holds the rotated rows on top of the plain one */
    assert_true(tn_matmul_wsize(TN_DTYPE_W8A8_HADX16, 100, 5) >=
                tn_matmul_wsize(TN_DTYPE_W8A8X16, 100, 5) + 100 * 5 * sizeof(float));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_isas),
        cmocka_unit_test(test_extremes),
        cmocka_unit_test(test_dtype_for),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
