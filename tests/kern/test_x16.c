/*
 * test_x16.c — the x16 layout (kern/repack.h): Q4_0 / Q8_0 matrices
 * repacked in groups of 16 rows.
 *
 * What is asserted:
 *   - repacking is lossless: tn_get_row on the repacked matrix gives every
 *     row bit-identical to tn_dequantize_row on the original, n_out not a
 *     multiple of 16 included;
 *   - the scalar reference against a double computation from the original
 *     blocks and the Q8_0-quantized activations (so the layout, the nibble
 *     order, the -8 / -128 bias and the scales are all checked against
 *     something not written for the layout), and against tn_matmul on the
 *     original matrix (llama.cpp's block format) within TOL of L1;
 *   - every ISA's kernel is bit-identical to the scalar reference, on odd
 *     shapes (n_out 1..100, n_tokens 1..37, 1 and 2 threads); on AVX2 both
 *     the plain kernel (kern_avx2_x16.c) and the AVX-VNNI one, each
 *     skipped (with a message) only on a CPU without its instructions;
 *   - worst-case operands (weight bytes 0x00/0xFF, i.e. Q8_0 quants
 *     -128/127 and Q4_0 nibbles 0/15; activations -128/127) through each
 *     kernel called directly: bit-identical to the reference, and the
 *     reference to a sum formed from the original blocks without the
 *     layout's bias (so an int16 saturation in the AVX2 kernel's vpmaddubsw
 *     path, or a wrong bias, cannot pass);
 *   - batch invariance: a token's outputs do not depend on n_tokens or on
 *     the thread count (bit for bit);
 *   - tn__x16_dtype_for repacks only where the ISA has a kernel (AVX2 and
 *     up).
 */
#include "kern/kern_impl.h"
#include "kern/repack.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 5e-6

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}
static float rnd(void) { return (float)(rng() >> 8) / 8388608.0f - 1.0f; }

/* A (n_out, n_in) matrix of type wt with rows of different scales, and its
 * repacked copy (caller frees both). */
static void make(tn_dtype wt, int64_t n_in, int64_t n_out, void **w, void **wx)
{
    const size_t row = tn_dtype_row_size(wt, n_in);
    float *f = malloc((size_t)n_in * sizeof(float));
    *w = malloc(row * (size_t)n_out);
    assert_non_null(f);
    assert_non_null(*w);
    for (int64_t r = 0; r < n_out; r++) {
        const float s = 0.1f + (float)(r % 7);
        for (int64_t i = 0; i < n_in; i++)
            f[i] = rnd() * s;
        if (r % 5 == 3) /* a row with an extreme: Q8_0 gets -127/127, Q4_0 -8 */
            f[r % n_in] = -4.0f * s;
        assert_int_equal(tn_quantize_row(wt, f, (char *)*w + row * (size_t)r, n_in), TN_OK);
    }
    const tn_dtype xt = wt == TN_DTYPE_Q4_0 ? TN_DTYPE_Q4_0X16 : TN_DTYPE_Q8_0X16;
    *wx = tn_alloc_aligned(tn__x16_matrix_bytes(xt, n_in, n_out), 64);
    assert_non_null(*wx);
    tn__x16_repack(wt, *w, n_in, n_out, *wx);
    free(f);
}

static const tn_dtype wts[] = {TN_DTYPE_Q4_0, TN_DTYPE_Q8_0};
static const int64_t ins[] = {32, 96, 256, 2048 + 32};
static const int64_t outs[] = {1, 15, 16, 17, 37, 100};

static void test_roundtrip(void **state)
{
    (void)state;
    for (size_t a = 0; a < 2; a++)
        for (size_t i = 0; i < 3; i++)
            for (size_t o = 0; o < TN_ARRAY_LEN(outs); o++) {
                const tn_dtype wt = wts[a], xt = wt == TN_DTYPE_Q4_0 ? TN_DTYPE_Q4_0X16 : TN_DTYPE_Q8_0X16;
                const int64_t n_in = ins[i], n_out = outs[o];
                void *w, *wx;
                make(wt, n_in, n_out, &w, &wx);
                float *a1 = malloc((size_t)n_in * sizeof(float)), *a2 = malloc((size_t)n_in * sizeof(float));
                assert_non_null(a1);
                assert_non_null(a2);
                for (int64_t r = 0; r < n_out; r++) {
                    assert_int_equal(
                        tn_dequantize_row(wt, (char *)w + tn_dtype_row_size(wt, n_in) * (size_t)r, a1, n_in), TN_OK);
                    tn_get_row(wx, xt, n_in, r, a2);
                    if (memcmp(a1, a2, (size_t)n_in * sizeof(float)) != 0)
                        fail_msg("%s n_in %lld n_out %lld: row %lld differs after repacking",
                                 tn_dtype_traits_of(wt)->name, (long long)n_in, (long long)n_out, (long long)r);
                }
                free(a1);
                free(a2);
                free(w);
                tn_free_aligned(wx);
            }
}

/* y = X · Wᵀ through tn_matmul on the given ISA and pool. */
static void mm(tn_pool *pool, const void *w, tn_dtype t, int64_t n_in, int64_t n_out, const float *x, int64_t nt,
               float *y)
{
    void *wd = tn_alloc_aligned(TN_MAX(tn_matmul_wsize(t, n_in, nt), (size_t)64), 64);
    assert_non_null(wd);
    tn_matmul(pool, w, t, n_in, n_out, x, nt, y, wd);
    tn_free_aligned(wd);
}

static void test_reference(void **state)
{
    (void)state;
    assert_true(tn_kern_set_isa(TN_ISA_SCALAR));
    const int64_t nt = 5;
    for (size_t a = 0; a < 2; a++)
        for (size_t i = 0; i < TN_ARRAY_LEN(ins); i++)
            for (size_t o = 0; o < TN_ARRAY_LEN(outs); o++) {
                const tn_dtype wt = wts[a], xt = wt == TN_DTYPE_Q4_0 ? TN_DTYPE_Q4_0X16 : TN_DTYPE_Q8_0X16;
                const int64_t n_in = ins[i], n_out = outs[o], nb = n_in / 32;
                void *w, *wx;
                make(wt, n_in, n_out, &w, &wx);
                float *x = malloc((size_t)(nt * n_in) * sizeof(float));
                float *y = malloc((size_t)(nt * n_out) * sizeof(float)), *y0 = malloc((size_t)(nt * n_out) * sizeof(float));
                float *wr = malloc((size_t)n_in * sizeof(float));
                tn_block_q8_0 *xq = malloc((size_t)nb * sizeof *xq);
                assert_true(x && y && y0 && wr && xq);
                for (int64_t k = 0; k < nt * n_in; k++)
                    x[k] = rnd() * (float)(1 + k % 3);
                mm(NULL, wx, xt, n_in, n_out, x, nt, y);
                mm(NULL, w, wt, n_in, n_out, x, nt, y0);
                for (int64_t t = 0; t < nt; t++) {
                    assert_int_equal(tn_quantize_row(TN_DTYPE_Q8_0, x + t * n_in, xq, n_in), TN_OK);
                    for (int64_t r = 0; r < n_out; r++) {
                        assert_int_equal(
                            tn_dequantize_row(wt, (char *)w + tn_dtype_row_size(wt, n_in) * (size_t)r, wr, n_in), TN_OK);
                        double ref = 0.0, l1 = 0.0;
                        for (int64_t k = 0; k < n_in; k++) {
                            const double xv = (double)tn_fp16_to_fp32(xq[k / 32].d) * xq[k / 32].qs[k % 32];
                            ref += (double)wr[k] * xv;
                            l1 += fabs((double)wr[k] * xv);
                        }
                        const float got = y[t * n_out + r], old = y0[t * n_out + r];
                        if (!(fabs(got - ref) <= TOL * l1 + 1e-30) || !(fabs(got - old) <= TOL * l1 + 1e-30))
                            fail_msg("%s n_in %lld n_out %lld token %lld row %lld: x16 %.9g, double %.9g, "
                                     "block-format %.9g (L1 %.3g)",
                                     tn_dtype_traits_of(wt)->name, (long long)n_in, (long long)n_out, (long long)t,
                                     (long long)r, (double)got, ref, (double)old, l1);
                    }
                }
                free(x), free(y), free(y0), free(wr), free(xq), free(w);
                tn_free_aligned(wx);
            }
    tn_kern_set_isa(tn_kern_init());
}

/* Every ISA vs the scalar reference, and batch invariance within each. */
static void test_isas(void **state)
{
    (void)state;
    tn_pool *pool2;
    assert_int_equal(tn_pool_new(2, &pool2), TN_OK);
    const int64_t nt_max = 37;
    const int64_t in2[] = {32, 96, 2048 + 32};
    int n_checked = 0;
    const bool vnni0 = tn__kern_avx_vnni();
    if (!tn__kern_ops_of(TN_ISA_AVX2))
        print_message("test_x16: this CPU lacks AVX2 (or the OS its state): the AVX2 x16 kernel is not run\n");
    for (size_t a = 0; a < 2; a++)
        for (size_t i = 0; i < TN_ARRAY_LEN(in2); i++)
            for (size_t o = 0; o < TN_ARRAY_LEN(outs); o++) {
                const tn_dtype wt = wts[a], xt = wt == TN_DTYPE_Q4_0 ? TN_DTYPE_Q4_0X16 : TN_DTYPE_Q8_0X16;
                const int64_t n_in = in2[i], n_out = outs[o];
                void *w, *wx;
                make(wt, n_in, n_out, &w, &wx);
                const size_t ny = (size_t)(nt_max * n_out);
                float *x = malloc((size_t)(nt_max * n_in) * sizeof(float));
                float *ref = malloc(ny * sizeof(float)), *y = malloc(ny * sizeof(float));
                assert_true(x && ref && y);
                for (int64_t k = 0; k < nt_max * n_in; k++)
                    x[k] = rnd();
                assert_true(tn_kern_set_isa(TN_ISA_SCALAR));
                mm(NULL, wx, xt, n_in, n_out, x, nt_max, ref);
                /* variant: the ISA, and for AVX2 the plain and the AVX-VNNI kernel */
                for (int v = 0; v <= TN_ISA_AVX512 + 1; v++) {
                    const int isa = v <= TN_ISA_AVX2 ? v : v - 1;
                    const bool vnni = v == TN_ISA_AVX2 + 1;
                    if (!tn_kern_set_isa((tn_isa)isa) || !tn__kern_set_avx_vnni(vnni))
                        continue;
                    const char *name = vnni ? "avx-vnni" : tn_isa_name((tn_isa)isa);
                    for (int64_t nt = 1; nt <= nt_max; nt += (nt < 18 ? 1 : 19)) {
                        for (int th = 0; th < 2; th++) {
                            for (size_t k = 0; k < ny; k++)
                                y[k] = NAN;
                            mm(th ? pool2 : NULL, wx, xt, n_in, n_out, x, nt, y);
                            if (memcmp(y, ref, (size_t)(nt * n_out) * sizeof(float)) != 0)
                                fail_msg("%s %s n_in %lld n_out %lld n_tokens %lld threads %d: differs from the "
                                         "scalar reference with %lld tokens",
                                         name, tn_dtype_traits_of(wt)->name, (long long)n_in,
                                         (long long)n_out, (long long)nt, th + 1, (long long)nt_max);
                            n_checked++;
                        }
                    }
                }
                free(x), free(ref), free(y), free(w);
                tn_free_aligned(wx);
            }
    tn_kern_set_isa(tn_kern_init());
    tn__kern_set_avx_vnni(vnni0);
    tn_pool_free(pool2);
    assert_true(n_checked > 0);
}

/* Extreme int8 value of pattern p for element j (0: all lo, 1: all hi,
 * 2: alternating, 3: random extremes, 4: random anything). */
static int extreme(int p, int j, int lo, int hi)
{
    switch (p) {
    case 0: return lo;
    case 1: return hi;
    case 2: return j % 2 ? lo : hi;
    case 3: return rng() % 2 ? lo : hi;
    default: return lo + (int)(rng() % (uint32_t)(hi - lo + 1));
    }
}

/* The x16 kernels of the ISAs this CPU runs, the reference first. */
static int kernels(tn__x16_gemm_fn *fns, const char **names)
{
    int n = 0;
    fns[n] = tn__x16_gemm_ref, names[n++] = "scalar";
    if (tn__kern_ops_of(TN_ISA_AVX2))
        fns[n] = tn__x16_gemm_avx2, names[n++] = "avx2";
    else
        print_message("test_x16: this CPU lacks AVX2 (or the OS its state): the AVX2 x16 kernel is not run\n");
    const bool vnni = tn__kern_avx_vnni();
    if (tn__kern_set_avx_vnni(true))
        fns[n] = tn__x16_gemm_avxvnni, names[n++] = "avx-vnni";
    else
        print_message("test_x16: this CPU lacks AVX-VNNI: the AVX-VNNI x16 kernel is not run\n");
    tn__kern_set_avx_vnni(vnni);
    if (tn__kern_ops_of(TN_ISA_AVX512))
        fns[n] = tn__x16_gemm_avx512, names[n++] = "avx512";
    return n;
}

static void test_worst_case(void **state)
{
    (void)state;
    tn__x16_gemm_fn fns[4];
    const char *names[4];
    const int nk = kernels(fns, names);
    const int64_t n_out = 37, nt = 37, ins3[] = {32, 256, 2048 + 32};
    for (size_t a = 0; a < 2; a++)
        for (size_t i = 0; i < TN_ARRAY_LEN(ins3); i++)
            for (int wp = 0; wp < 5; wp++)
                for (int xpat = 0; xpat < 5; xpat++) {
                    const tn_dtype wt = wts[a], xt = wt == TN_DTYPE_Q4_0 ? TN_DTYPE_Q4_0X16 : TN_DTYPE_Q8_0X16;
                    const int64_t n_in = ins3[i], nb = n_in / 32, ntile = (nt + TN__X16 - 1) / TN__X16;
                    const size_t row = tn_dtype_row_size(wt, n_in);
                    uint8_t *w = malloc(row * (size_t)n_out);
                    tn_block_q8_0 *xq = malloc((size_t)(nt * nb) * sizeof *xq);
                    uint8_t *wx = tn_alloc_aligned(tn__x16_matrix_bytes(xt, n_in, n_out), 64);
                    uint8_t *xp = tn_alloc_aligned(tn__x16_xtile_bytes(n_in) * (size_t)ntile, 64);
                    float *ref = malloc((size_t)(nt * n_out) * sizeof(float)), *y = malloc((size_t)(nt * n_out) * sizeof(float));
                    assert_true(w && xq && wx && xp && ref && y);
                    /* Weights: the pattern on every row, scales of different sizes. */
                    for (int64_t r = 0; r < n_out; r++)
                        for (int64_t b = 0; b < nb; b++) {
                            const uint16_t d = tn_fp32_to_fp16(0.001f * (float)(1 + (r * 7 + b) % 50));
                            if (wt == TN_DTYPE_Q4_0) {
                                tn_block_q4_0 *blk = (tn_block_q4_0 *)(w + row * (size_t)r) + b;
                                blk->d = d;
                                for (int j = 0; j < 16; j++)
                                    blk->qs[j] = (uint8_t)(extreme(wp, j, 0, 15) | extreme(wp, j + 1, 0, 15) << 4);
                            } else {
                                tn_block_q8_0 *blk = (tn_block_q8_0 *)(w + row * (size_t)r) + b;
                                blk->d = d;
                                for (int j = 0; j < 32; j++)
                                    blk->qs[j] = (int8_t)extreme(wp, j, -128, 127);
                            }
                        }
                    tn__x16_repack(wt, w, n_in, n_out, wx);
                    /* Activations: the pattern on every token (-128 included,
                     * which the quantizer never makes but the kernels accept). */
                    memset(xp, 0, tn__x16_xtile_bytes(n_in) * (size_t)ntile);
                    for (int64_t t = 0; t < nt; t++) {
                        for (int64_t b = 0; b < nb; b++) {
                            xq[t * nb + b].d = tn_fp32_to_fp16(0.01f * (float)(1 + (t + 3 * b) % 17));
                            for (int j = 0; j < 32; j++)
                                xq[t * nb + b].qs[j] = (int8_t)extreme(xpat, j + (int)t, -128, 127);
                        }
                        tn__x16_xpack(xt, xq + t * nb, n_in, t, xp);
                    }
                    const size_t gs = tn__x16_group_bytes(xt, n_in);
                    const int64_t ng = (n_out + TN__X16 - 1) / TN__X16;
                    /* The reference against the plain per-block sums of the original blocks. */
                    fns[0](xt, wx, gs, ng, n_out, xp, nt, nb, ref, (size_t)n_out);
                    for (int64_t t = 0; t < nt; t++)
                        for (int64_t r = 0; r < n_out; r++) {
                            float acc = 0.0f;
                            for (int64_t b = 0; b < nb; b++) {
                                const tn_block_q8_0 *x = &xq[t * nb + b];
                                int32_t isum = 0;
                                uint16_t d;
                                if (wt == TN_DTYPE_Q4_0) {
                                    const tn_block_q4_0 *blk = (const tn_block_q4_0 *)(w + row * (size_t)r) + b;
                                    d = blk->d;
                                    for (int j = 0; j < 16; j++)
                                        isum += ((blk->qs[j] & 15) - 8) * x->qs[j] + ((blk->qs[j] >> 4) - 8) * x->qs[j + 16];
                                } else {
                                    const tn_block_q8_0 *blk = (const tn_block_q8_0 *)(w + row * (size_t)r) + b;
                                    d = blk->d;
                                    for (int j = 0; j < 32; j++)
                                        isum += blk->qs[j] * x->qs[j];
                                }
                                acc = fmaf((float)isum, tn_fp16_to_fp32(d) * tn_fp16_to_fp32(x->d), acc);
                            }
                            if (memcmp(&acc, &ref[t * n_out + r], sizeof acc) != 0)
                                fail_msg("%s n_in %lld weights %d activations %d token %lld row %lld: reference %.9g, "
                                         "plain block sums %.9g",
                                         tn_dtype_traits_of(wt)->name, (long long)n_in, wp, xpat, (long long)t,
                                         (long long)r, (double)ref[t * n_out + r], (double)acc);
                        }
                    /* Every kernel, all tokens at once and token by token. */
                    for (int k = 1; k < nk; k++)
                        for (int whole = 0; whole < 2; whole++) {
                            for (int64_t e = 0; e < nt * n_out; e++)
                                y[e] = NAN;
                            if (whole)
                                fns[k](xt, wx, gs, ng, n_out, xp, nt, nb, y, (size_t)n_out);
                            else
                                for (int64_t g = 0; g < ng; g++) /* group by group, as the driver's chunks */
                                    fns[k](xt, wx + (size_t)g * gs, gs, 1, n_out - g * TN__X16, xp, nt, nb,
                                           y + g * TN__X16, (size_t)n_out);
                            for (int64_t e = 0; e < nt * n_out; e++)
                                if (memcmp(&y[e], &ref[e], sizeof(float)) != 0)
                                    fail_msg("%s %s n_in %lld weights %d activations %d token %lld row %lld: %.9g, "
                                             "reference %.9g",
                                             names[k], tn_dtype_traits_of(wt)->name, (long long)n_in, wp, xpat,
                                             (long long)(e / n_out), (long long)(e % n_out), (double)y[e],
                                             (double)ref[e]);
                        }
                    free(w), free(xq), free(ref), free(y);
                    tn_free_aligned(wx);
                    tn_free_aligned(xp);
                }
}

static void test_dtype_for(void **state)
{
    (void)state;
    const tn_isa isa = tn_kern_init();
    for (int i = TN_ISA_SCALAR; i <= TN_ISA_AVX512; i++) {
        if (!tn_kern_set_isa((tn_isa)i))
            continue;
        const bool has = i >= TN_ISA_AVX2;
        assert_int_equal(tn__x16_dtype_for(TN_DTYPE_Q4_0), has ? TN_DTYPE_Q4_0X16 : TN_DTYPE_COUNT);
        assert_int_equal(tn__x16_dtype_for(TN_DTYPE_Q8_0), has ? TN_DTYPE_Q8_0X16 : TN_DTYPE_COUNT);
        assert_int_equal(tn__x16_dtype_for(TN_DTYPE_Q4_K), i >= TN_ISA_AVX512 ? TN_DTYPE_Q4_KX16 : TN_DTYPE_COUNT);
        assert_int_equal(tn__x16_dtype_for(TN_DTYPE_F16), TN_DTYPE_COUNT);
    }
    assert_true(tn_kern_set_isa(isa));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_reference),
        cmocka_unit_test(test_isas),
        cmocka_unit_test(test_worst_case),
        cmocka_unit_test(test_dtype_for),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
