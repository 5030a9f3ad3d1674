/*
 * test_kx16.c — the K-quant x16 layouts (kern/repack_k.h): Q4_K and Q6_K
 * matrices repacked in groups of 16 rows.
 *
 * What is asserted:
 *   - repacking is lossless: tn_get_row on the repacked matrix gives every
 *     row bit-identical to tn_dequantize_row on the original (random block
 *     bytes, so every 6-bit scale / min encoding and every Q6_K int8
 *     scale, -128 included, occurs), n_out not a
 *     multiple of 16 included;
 *   - the scalar reference (on TN_ISA_SCALAR, through tn_matmul) against
 *     (a) a double computation from the original blocks' dequantized rows
 *     and the Q8_K-dequantized activations, and (b) tn_matmul on the
 *     original matrix (the block-format Q4_K / Q6_K path), both within
 *     TOL = 1e-6 of L1 = Σ_k (|d·sc·q_k| + |dmin·m|)·|x_k| (the mass before the
 *     scale and minimum terms cancel; the f32 steps round at 2^-24 of it),
 *     and (c) the double product of the dequantized weights and the
 *     unquantized f32 activations within TOL_ACT = 1e-2 of the same L1
 *     (Q8_K's rounding of the activations, at most 1/254 of each |x|);
 *   - every ISA's kernel is bit-identical to the scalar reference on odd
 *     shapes (n_in 256 and 768, n_out 1..100, n_tokens 1..37, 1 and 2
 *     threads), which is batch and thread invariance too: the reference is
 *     computed once with 37 tokens;
 *   - tn__x16_dtype_for repacks Q4_K / Q6_K only where the ISA has the kernel.
 */
#include "kern/kern_impl.h"
#include "kern/quants.h"
#include "kern/repack.h"
#include "kern/repack_k.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-6
#define TOL_ACT 1e-2

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}
static float rnd(void) { return (float)(rng() >> 8) / 8388608.0f - 1.0f; }

static const tn_dtype wts[] = {TN_DTYPE_Q4_K, TN_DTYPE_Q6_K};
static tn_dtype xt_of(tn_dtype wt) { return wt == TN_DTYPE_Q4_K ? TN_DTYPE_Q4_KX16 : TN_DTYPE_Q6_KX16; }

/* A (n_out, n_in) Q4_K / Q6_K matrix of random block bytes with finite d
 * (and dmin) of varied size and sign (row 3 mod 7: d = 0), and its
 * repacked copy (caller frees both). */
static void make(tn_dtype wt, int64_t n_in, int64_t n_out, uint8_t **w, void **wx)
{
    const int64_t nb = n_in / TN_QK_K;
    const size_t bs = tn_dtype_traits_of(wt)->type_size;
    *w = malloc((size_t)(nb * n_out) * bs);
    assert_non_null(*w);
    for (int64_t r = 0; r < n_out; r++)
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *p = *w + (size_t)(r * nb + b) * bs;
            for (size_t i = 0; i < bs; i++)
                p[i] = (uint8_t)(rng() >> 24);
            const float s = 1e-3f * (float)(1 + r % 5);
            const uint16_t d = tn_fp32_to_fp16(r % 7 == 3 ? 0.0f : s * (0.5f + 0.5f * rnd()));
            const uint16_t dmin = tn_fp32_to_fp16(s * rnd());
            if (wt == TN_DTYPE_Q4_K) {
                memcpy(p, &d, 2);
                memcpy(p + 2, &dmin, 2);
            } else {
                memcpy(p + 208, &d, 2);
            }
        }
    *wx = tn_alloc_aligned(tn__x16_matrix_bytes(xt_of(wt), n_in, n_out), 64);
    assert_non_null(*wx);
    tn__x16_repack(wt, *w, n_in, n_out, *wx);
}

/* |scale term| + |minimum term| of element k of a row (the L1 weights). */
static double mass(tn_dtype wt, const uint8_t *row, int64_t k)
{
    const int i = (int)(k % TN_QK_K);
    if (wt == TN_DTYPE_Q4_K) {
        const tn_block_q4_K *blk = (const tn_block_q4_K *)row + k / TN_QK_K;
        int sc, m;
        tn__q4_K_scale_min(blk->scales, i / 32, &sc, &m);
        return fabs((double)tn_fp16_to_fp32(blk->d) * sc * tn__q4_K_q(blk, i)) +
               fabs((double)tn_fp16_to_fp32(blk->dmin) * m);
    }
    const tn_block_q6_K *blk = (const tn_block_q6_K *)row + k / TN_QK_K;
    return fabs((double)tn_fp16_to_fp32(blk->d) * blk->scales[i / 16] * tn__q6_K_q(blk, i));
}

static const int64_t ins[] = {256, 768};
static const int64_t outs[] = {1, 15, 16, 17, 37, 100};

static void test_roundtrip(void **state)
{
    (void)state;
    for (size_t a = 0; a < TN_ARRAY_LEN(wts); a++)
        for (size_t i = 0; i < TN_ARRAY_LEN(ins); i++)
            for (size_t o = 0; o < TN_ARRAY_LEN(outs); o++) {
                const tn_dtype wt = wts[a];
                const int64_t n_in = ins[i], n_out = outs[o];
                const size_t row = tn_dtype_row_size(wt, n_in);
                uint8_t *w;
                void *wx;
                make(wt, n_in, n_out, &w, &wx);
                float *a1 = malloc((size_t)n_in * sizeof(float)), *a2 = malloc((size_t)n_in * sizeof(float));
                assert_true(a1 && a2);
                for (int64_t r = 0; r < n_out; r++) {
                    assert_int_equal(tn_dequantize_row(wt, w + row * (size_t)r, a1, n_in), TN_OK);
                    tn_get_row(wx, xt_of(wt), n_in, r, a2);
                    if (memcmp(a1, a2, (size_t)n_in * sizeof(float)) != 0)
                        fail_msg("%s n_in %lld n_out %lld: row %lld differs after repacking",
                                 tn_dtype_traits_of(wt)->name, (long long)n_in, (long long)n_out, (long long)r);
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

static void test_reference(void **state)
{
    (void)state;
    assert_true(tn_kern_set_isa(TN_ISA_SCALAR));
    const int64_t nt = 5;
    for (size_t a = 0; a < TN_ARRAY_LEN(wts); a++) {
        double worst[3] = {0, 0, 0}; /* |error| / L1 against (a), (b), (c) */
        const tn_dtype wt = wts[a];
        for (size_t i = 0; i < TN_ARRAY_LEN(ins); i++)
            for (size_t o = 0; o < TN_ARRAY_LEN(outs); o++) {
                const int64_t n_in = ins[i], n_out = outs[o], nb = n_in / TN_QK_K;
                const size_t rs = tn_dtype_row_size(wt, n_in);
                uint8_t *w;
                void *wx;
                make(wt, n_in, n_out, &w, &wx);
                float *x = malloc((size_t)(nt * n_in) * sizeof(float)), *xd = malloc((size_t)n_in * sizeof(float));
                float *y = malloc((size_t)(nt * n_out) * sizeof(float)),
                      *y0 = malloc((size_t)(nt * n_out) * sizeof(float));
                float *wr = malloc((size_t)n_in * sizeof(float));
                tn_block_q8_K *xq = malloc((size_t)nb * sizeof *xq);
                assert_true(x && xd && y && y0 && wr && xq);
                for (int64_t k = 0; k < nt * n_in; k++)
                    x[k] = rnd() * (float)(1 + k % 3);
                mm(NULL, wx, xt_of(wt), n_in, n_out, x, nt, y);
                mm(NULL, w, wt, n_in, n_out, x, nt, y0);
                for (int64_t t = 0; t < nt; t++) {
                    assert_int_equal(tn_quantize_row(TN_DTYPE_Q8_K, x + t * n_in, xq, n_in), TN_OK);
                    assert_int_equal(tn_dequantize_row(TN_DTYPE_Q8_K, xq, xd, n_in), TN_OK);
                    for (int64_t r = 0; r < n_out; r++) {
                        const uint8_t *row = w + rs * (size_t)r;
                        assert_int_equal(tn_dequantize_row(wt, row, wr, n_in), TN_OK);
                        double ref = 0.0, refx = 0.0, l1 = 0.0;
                        for (int64_t k = 0; k < n_in; k++) {
                            ref += (double)wr[k] * xd[k];
                            refx += (double)wr[k] * x[t * n_in + k];
                            l1 += mass(wt, row, k) * fabs((double)x[t * n_in + k]);
                        }
                        const double got = y[t * n_out + r], old = y0[t * n_out + r];
                        const double e[3] = {fabs(got - ref), fabs(got - old), fabs(got - refx)};
                        for (int k = 0; k < 3; k++)
                            if (l1 > 0)
                                worst[k] = fmax(worst[k], e[k] / l1);
                        if (!(e[0] <= TOL * l1) || !(e[1] <= TOL * l1) || !(e[2] <= TOL_ACT * l1))
                            fail_msg("%s n_in %lld n_out %lld token %lld row %lld: x16 %.9g, double %.9g, "
                                     "block-format %.9g, f32 activations %.9g (L1 %.3g)",
                                     tn_dtype_traits_of(wt)->name, (long long)n_in, (long long)n_out, (long long)t,
                                     (long long)r, got, ref, old, refx, l1);
                    }
                }
                free(x), free(xd), free(y), free(y0), free(wr), free(xq), free(w);
                tn_free_aligned(wx);
            }
        printf("%s worst |error| / L1: vs double on Q8_K activations %.3g, vs the block format %.3g, vs f32 "
               "activations %.3g\n",
               tn_dtype_traits_of(wt)->name, worst[0], worst[1], worst[2]);
    }
    tn_kern_set_isa(tn_kern_init());
}

/* Every ISA vs the scalar reference, and batch / thread invariance. */
static void test_isas(void **state)
{
    (void)state;
    tn_pool *pool2;
    assert_int_equal(tn_pool_new(2, &pool2), TN_OK);
    const int64_t nt_max = 37;
    int n_checked = 0, n_avx512 = 0;
    for (size_t a = 0; a < TN_ARRAY_LEN(wts); a++)
        for (size_t i = 0; i < TN_ARRAY_LEN(ins); i++)
            for (size_t o = 0; o < TN_ARRAY_LEN(outs); o++) {
                const tn_dtype wt = wts[a], xt = xt_of(wt);
                const int64_t n_in = ins[i], n_out = outs[o];
                uint8_t *w;
                void *wx;
                make(wt, n_in, n_out, &w, &wx);
                const size_t ny = (size_t)(nt_max * n_out);
                float *x = malloc((size_t)(nt_max * n_in) * sizeof(float));
                float *ref = malloc(ny * sizeof(float)), *y = malloc(ny * sizeof(float));
                assert_true(x && ref && y);
                for (int64_t k = 0; k < nt_max * n_in; k++)
                    x[k] = rnd() * (k % 11 == 0 ? 8.0f : 1.0f);
                assert_true(tn_kern_set_isa(TN_ISA_SCALAR));
                mm(NULL, wx, xt, n_in, n_out, x, nt_max, ref);
                for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++) {
                    if (!tn_kern_set_isa((tn_isa)isa))
                        continue;
                    for (int64_t nt = 1; nt <= nt_max;) {
                        for (int th = 0; th < 2; th++) {
                            for (size_t k = 0; k < ny; k++)
                                y[k] = NAN;
                            mm(th ? pool2 : NULL, wx, xt, n_in, n_out, x, nt, y);
                            if (memcmp(y, ref, (size_t)(nt * n_out) * sizeof(float)) != 0)
                                fail_msg("%s %s n_in %lld n_out %lld n_tokens %lld threads %d: differs from the "
                                         "scalar reference with %lld tokens",
                                         tn_isa_name((tn_isa)isa), tn_dtype_traits_of(wt)->name, (long long)n_in,
                                         (long long)n_out, (long long)nt, th + 1, (long long)nt_max);
                            n_checked++;
                            n_avx512 += isa == TN_ISA_AVX512;
                        }
                        /* the reference kernel (scalar, AVX2) at a few sizes; the AVX-512 one at every tile size */
                        nt = isa == TN_ISA_AVX512 ? (nt < 18 ? nt + 1 : nt + 19) : (nt == 1 ? 17 : nt + 20);
                    }
                }
                free(x), free(ref), free(y), free(w);
                tn_free_aligned(wx);
            }
    tn_kern_set_isa(tn_kern_init());
    tn_pool_free(pool2);
    assert_true(n_checked > 0);
    if (tn_kern_set_isa(TN_ISA_AVX512)) {
        assert_true(n_avx512 > 0);
        tn_kern_set_isa(tn_kern_init());
    }
}

static void test_dtype_for(void **state)
{
    (void)state;
    const tn_isa isa = tn_kern_init();
    for (int i = TN_ISA_SCALAR; i <= TN_ISA_AVX512; i++) {
        if (!tn_kern_set_isa((tn_isa)i))
            continue;
        assert_int_equal(tn__x16_dtype_for(TN_DTYPE_Q4_K), i >= TN_ISA_AVX512 ? TN_DTYPE_Q4_KX16 : TN_DTYPE_COUNT);
        assert_int_equal(tn__x16_dtype_for(TN_DTYPE_Q6_K), i >= TN_ISA_AVX512 ? TN_DTYPE_Q6_KX16 : TN_DTYPE_COUNT);
        assert_int_equal(tn__x16_dtype_for(TN_DTYPE_Q5_K), TN_DTYPE_COUNT);
    }
    assert_true(tn__dtype_is_x16(TN_DTYPE_Q4_KX16));
    assert_int_equal(tn__x16_file_dtype(TN_DTYPE_Q4_KX16), TN_DTYPE_Q4_K);
    assert_true(tn__dtype_is_x16(TN_DTYPE_Q6_KX16));
    assert_int_equal(tn__x16_file_dtype(TN_DTYPE_Q6_KX16), TN_DTYPE_Q6_K);
    assert_true(tn_kern_set_isa(isa));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_reference),
        cmocka_unit_test(test_isas),
        cmocka_unit_test(test_dtype_for),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
