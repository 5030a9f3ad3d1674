/*
 * test_kern.c — the kernels: every ISA this machine can run against the
 * scalar reference, and the scalar reference against straightforward double
 * computations.
 *
 * What is asserted:
 *   - matmul, each weight dtype, odd shapes: scalar vs double, and each ISA
 *     vs scalar, within |err| <= TOL * sum_k |w_k x_k| (TOL below);
 *   - within one ISA, every output is bit-identical whatever n_tokens and the
 *     thread count (the batch-invariance contract of kern.h);
 *   - activation quantization is bit-identical to tn_quantize_row(Q8_0) on
 *     every ISA (including roundf's ties);
 *   - dot kernels on lengths that exercise the scalar tails, and on Q8_0
 *     weights holding -128 (the one value |w| cannot represent as int8);
 *   - multi-row dot kernels give each row exactly the bits it gets alone;
 *   - rmsnorm, softmax, swiglu (every ISA), dot, axpy against double
 *     computations; attention's row loops equal loops over dot / axpy;
 *   - tn_get_row for every dtype against a hand dequantization;
 *   - TERN_ISA=scalar in the environment forces the scalar table.
 */
#include "kern/kern_impl.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Matmul tolerance, relative to L1 = sum_k |w_k x_k|. Summation in any
 * order errs by at most ~n·2^-24·L1 in the worst case (2.5e-4 for n = 4128),
 * but rounding errors of random sign grow like sqrt(n) times a typical term,
 * far below L1: the worst ratio seen on these shapes is ~4e-7. 5e-6 leaves
 * more than 10x room and still catches a wrong element, block or scale. */
#define TOL 5e-6

static const tn_dtype dtypes[] = {TN_DTYPE_F32, TN_DTYPE_F16, TN_DTYPE_BF16, TN_DTYPE_Q8_0, TN_DTYPE_Q4_0};
static const int64_t shapes_in[] = {32, 64, 96, 4096 + 32};
static const int64_t shapes_out[] = {1, 3, 17, 100};
static const int64_t shapes_tok[] = {1, 2, 5};

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}
static float rnd(void) { return (float)(rng() >> 8) / 8388608.0f - 1.0f; } /* [-1, 1) */

static void fill(float *x, int64_t n, float scale)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = rnd() * scale;
}

/* A weight matrix of type wt from random f32 values (rows get different
 * scales), plus its dequantized f32 copy. Caller frees both. */
static void make_weights(tn_dtype wt, int64_t n_in, int64_t n_out, void **w, float **wf)
{
    float *src = malloc(sizeof(float) * (size_t)(n_in * n_out));
    for (int64_t r = 0; r < n_out; r++)
        fill(src + r * n_in, n_in, 0.05f + (float)(r % 7));
    const size_t row = tn_dtype_row_size(wt, n_in);
    *w = malloc(row * (size_t)n_out);
    *wf = malloc(sizeof(float) * (size_t)(n_in * n_out));
    for (int64_t r = 0; r < n_out; r++) {
        assert_int_equal(tn_quantize_row(wt, src + r * n_in, (char *)*w + row * (size_t)r, n_in), TN_OK);
        assert_int_equal(tn_dequantize_row(wt, (char *)*w + row * (size_t)r, *wf + r * n_in, n_in), TN_OK);
    }
    free(src);
}

/* The activations a dtype's dot products see, as f32: X itself, or X
 * quantized to Q8_0 by the reference quantizer and dequantized. */
static void effective_x(tn_dtype wt, const float *x, int64_t n_in, int64_t n_tokens, float *xe)
{
    if (!tn__kern_act_q8_0(wt)) {
        memcpy(xe, x, sizeof(float) * (size_t)(n_in * n_tokens));
        return;
    }
    tn_block_q8_0 *q = malloc(tn_dtype_row_size(TN_DTYPE_Q8_0, n_in));
    for (int64_t t = 0; t < n_tokens; t++) {
        assert_int_equal(tn_quantize_row(TN_DTYPE_Q8_0, x + t * n_in, q, n_in), TN_OK);
        assert_int_equal(tn_dequantize_row(TN_DTYPE_Q8_0, q, xe + t * n_in, n_in), TN_OK);
    }
    free(q);
}

static void *wdata_for(tn_dtype wt, int64_t n_in, int64_t n_tokens)
{
    size_t sz = tn_matmul_wsize(wt, n_in, n_tokens);
    return tn_alloc_aligned(sz ? (sz + 63) / 64 * 64 : 64, 64);
}

static void run_matmul(tn_pool *pool, const void *w, tn_dtype wt, int64_t n_in, int64_t n_out, const float *x,
                       int64_t n_tokens, float *y)
{
    void *wd = wdata_for(wt, n_in, n_tokens);
    tn_matmul(pool, w, wt, n_in, n_out, x, n_tokens, y, wd);
    tn_free_aligned(wd);
}

static tn_pool *pool_all;
static tn_pool *pool_one;

static int setup(void **state)
{
    (void)state;
    if (tn_pool_new(0, &pool_all) != TN_OK || tn_pool_new(1, &pool_one) != TN_OK)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tn_pool_free(pool_all);
    tn_pool_free(pool_one);
    tn_kern_set_isa(TN_ISA_SCALAR);
    return 0;
}

/* --- ISA selection ---------------------------------------------------------- */

/* main() sets TERN_ISA=scalar before the first kernel call. */
static void test_env_forces_scalar(void **state)
{
    (void)state;
    assert_int_equal(tn_kern_init(), TN_ISA_SCALAR);
    assert_int_equal(tn_kern_isa(), TN_ISA_SCALAR);
    assert_ptr_equal(tn__kern_ops_cur(), &tn__kern_ops_scalar);
}

static void test_isa_selection(void **state)
{
    (void)state;
    assert_non_null(tn__kern_ops_of(TN_ISA_SCALAR));
    assert_true(tn_kern_set_isa(TN_ISA_SCALAR));
    assert_false(tn_kern_set_isa((tn_isa)7));
    assert_string_equal(tn_isa_name(TN_ISA_AVX2), "avx2");
    assert_string_equal(tn_isa_name(TN_ISA_AVX512), "avx512");
    for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++) {
        const tn__kern_ops *ops = tn__kern_ops_of((tn_isa)isa);
        assert_int_equal(tn_kern_set_isa((tn_isa)isa), ops != NULL);
        if (ops) {
            assert_int_equal(ops->isa, isa);
            assert_int_equal(tn_kern_isa(), isa);
        }
        print_message("isa %-6s: %s\n", tn_isa_name((tn_isa)isa), ops ? "available" : "not available");
    }
    /* this project's development machines have AVX-512: make sure the
     * detection does not silently fall back when the CPU says it can */
    if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
        assert_non_null(tn__kern_ops_of(TN_ISA_AVX512));
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        assert_non_null(tn__kern_ops_of(TN_ISA_AVX2));
    tn_kern_set_isa(TN_ISA_SCALAR);
}

static void test_wsize(void **state)
{
    (void)state;
    assert_int_equal(tn_matmul_wsize(TN_DTYPE_F32, 4096, 7), 0);
    assert_int_equal(tn_matmul_wsize(TN_DTYPE_F16, 4096, 7), 0);
    assert_int_equal(tn_matmul_wsize(TN_DTYPE_BF16, 4096, 7), 0);
    /* the Q8_0 rows, and room for the packed copies of the VNNI path */
    assert_true(tn_matmul_wsize(TN_DTYPE_Q8_0, 4096, 7) >= 7 * (128 * 34 + tn__xpack_row_size(TN_DTYPE_Q8_0, 4096)));
    assert_true(tn_matmul_wsize(TN_DTYPE_Q4_0, 96, 1) >= 3 * 34 + tn__xpack_row_size(TN_DTYPE_Q4_0, 96));
    assert_int_equal(tn__xpack_row_size(TN_DTYPE_Q4_0, 4096), 32 * 256);
    assert_int_equal(tn__xpack_row_size(TN_DTYPE_Q8_0, 4096 + 96), 32 * 256 + 128); /* 3 tail blocks: 102 -> 128 */
}

/* --- activation quantization ------------------------------------------------ */

static void test_quantize_act_matches_reference(void **state)
{
    (void)state;
    enum { N = 32 * 64 };
    static float x[N];
    static tn_block_q8_0 want[N / 32], got[N / 32];
    for (int b = 0; b < N / 32; b++) {
        float *xb = x + b * 32;
        switch (b % 8) {
        case 0: /* amax 127 gives d = 1: x * id is exact, many exact .5 ties */
            for (int j = 0; j < 32; j++)
                xb[j] = (float)((int)(rng() % 254) - 127) + ((rng() & 1) ? 0.5f : 0.0f);
            xb[0] = (b & 8) ? 127.0f : -127.0f;
            break;
        case 1: /* all zeros: d = 0 */
            memset(xb, 0, 32 * sizeof(float));
            break;
        case 2: /* tiny values: f16 scale is subnormal */
            fill(xb, 32, 1e-6f);
            break;
        case 3: /* large values */
            fill(xb, 32, 3e4f);
            break;
        case 4: /* one outlier */
            fill(xb, 32, 0.01f);
            xb[rng() % 32] = 50.0f;
            break;
        default:
            fill(xb, 32, 1.0f + (float)b);
        }
    }
    assert_int_equal(tn_quantize_row(TN_DTYPE_Q8_0, x, want, N), TN_OK);
    for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++) {
        const tn__kern_ops *ops = tn__kern_ops_of((tn_isa)isa);
        if (!ops)
            continue;
        memset(got, 0x55, sizeof(got));
        ops->quantize_q8_0(x, got, N);
        for (int b = 0; b < N / 32; b++)
            if (memcmp(&got[b], &want[b], sizeof(tn_block_q8_0)) != 0)
                fail_msg("isa %s: activation block %d differs from the reference quantizer", tn_isa_name((tn_isa)isa), b);
    }
}

/* --- dot kernels --------------------------------------------------------------- */

/* One row through a table's (multi-row) dot kernel. */
static float dot1(tn__dot_fn f, const void *w, const void *x, int64_t n)
{
    float y;
    f(w, 0, 1, x, n, &y);
    return y;
}

/* Each ISA's dot kernels against double on lengths that leave every
 * possible remainder for the vector loops' scalar tails. */
static void test_dot_kernels_tails(void **state)
{
    (void)state;
    enum { NMAX = 32 * 21 };
    static float wf[NMAX], x[NMAX], xe[NMAX];
    static uint16_t h[NMAX], bf[NMAX];
    static tn_block_q8_0 w8[NMAX / 32], x8[NMAX / 32];
    static tn_block_q4_0 w4[NMAX / 32];
    fill(wf, NMAX, 1.0f);
    fill(x, NMAX, 1.0f);
    assert_int_equal(tn_quantize_row(TN_DTYPE_F16, wf, h, NMAX), TN_OK);
    assert_int_equal(tn_quantize_row(TN_DTYPE_BF16, wf, bf, NMAX), TN_OK);
    assert_int_equal(tn_quantize_row(TN_DTYPE_Q8_0, wf, w8, NMAX), TN_OK);
    assert_int_equal(tn_quantize_row(TN_DTYPE_Q4_0, wf, w4, NMAX), TN_OK);
    assert_int_equal(tn_quantize_row(TN_DTYPE_Q8_0, x, x8, NMAX), TN_OK);
    /* -128 never comes out of the quantizer but is a valid int8 in a file */
    for (int b = 0; b < NMAX / 32; b += 3)
        w8[b].qs[b % 32] = -128;
    assert_int_equal(tn_dequantize_row(TN_DTYPE_Q8_0, x8, xe, NMAX), TN_OK);

    for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++) {
        const tn__kern_ops *ops = tn__kern_ops_of((tn_isa)isa);
        if (!ops)
            continue;
        for (int64_t n = 1; n <= NMAX; n++) {
            double e32 = 0, e16 = 0, eb = 0, l32 = 0, l16 = 0, lb = 0;
            for (int64_t i = 0; i < n; i++) {
                const double w16 = tn_fp16_to_fp32(h[i]), wb = tn_bf16_to_fp32(bf[i]);
                e32 += (double)wf[i] * x[i], l32 += fabs((double)wf[i] * x[i]);
                e16 += w16 * x[i], l16 += fabs(w16 * x[i]);
                eb += wb * x[i], lb += fabs(wb * x[i]);
            }
            assert_true(fabs(dot1(ops->dot_f32, wf, x, n) - e32) <= TOL * l32 + 1e-30);
            assert_true(fabs(dot1(ops->dot_f16, h, x, n) - e16) <= TOL * l16 + 1e-30);
            assert_true(fabs(dot1(ops->dot_bf16, bf, x, n) - eb) <= TOL * lb + 1e-30);
            if (n % 32)
                continue;
            double e8 = 0, e4 = 0, l8 = 0, l4 = 0;
            for (int64_t b = 0; b < n / 32; b++) {
                float w8f[32], w4f[32];
                assert_int_equal(tn_dequantize_row(TN_DTYPE_Q8_0, &w8[b], w8f, 32), TN_OK);
                assert_int_equal(tn_dequantize_row(TN_DTYPE_Q4_0, &w4[b], w4f, 32), TN_OK);
                for (int j = 0; j < 32; j++) {
                    e8 += (double)w8f[j] * xe[b * 32 + j], l8 += fabs((double)w8f[j] * xe[b * 32 + j]);
                    e4 += (double)w4f[j] * xe[b * 32 + j], l4 += fabs((double)w4f[j] * xe[b * 32 + j]);
                }
            }
            const float g8 = dot1(ops->dot_q8_0, w8, x8, n), g4 = dot1(ops->dot_q4_0, w4, x8, n);
            if (!(fabs(g8 - e8) <= TOL * l8))
                fail_msg("isa %s q8_0 n=%lld: %g vs %g", tn_isa_name((tn_isa)isa), (long long)n, (double)g8, e8);
            if (!(fabs(g4 - e4) <= TOL * l4))
                fail_msg("isa %s q4_0 n=%lld: %g vs %g", tn_isa_name((tn_isa)isa), (long long)n, (double)g4, e4);
        }
    }
}

/* Rows computed together (nr up to 9: groups of TN__DOT_ROWS and single
 * rows) give exactly the bits each row gives alone, for every dtype, ISA
 * and a range of lengths (vector loops, scalar tails, block groups). */
static void test_dot_rows_bit_identical(void **state)
{
    (void)state;
    enum { NR = 9, NMAX = 32 * 19 };
    static float src[NR * NMAX], x[NMAX];
    static char w[NR * (NMAX + 3) * 4];
    static tn_block_q8_0 xq[NMAX / 32];
    fill(src, NR * NMAX, 1.0f);
    fill(x, NMAX, 1.0f);
    assert_int_equal(tn_quantize_row(TN_DTYPE_Q8_0, x, xq, NMAX), TN_OK);
    for (size_t di = 0; di < TN_ARRAY_LEN(dtypes); di++) {
        const tn_dtype wt = dtypes[di];
        const int bs = tn_dtype_traits_of(wt)->block_size;
        for (int64_t n = bs; n <= NMAX; n += bs * (n < 320 ? 1 : 7)) {
            const size_t ws = tn_dtype_row_size(wt, n) + 3 * tn_dtype_traits_of(wt)->type_size; /* longer than a row */
            for (int r = 0; r < NR; r++)
                assert_int_equal(tn_quantize_row(wt, src + r * n, w + ws * (size_t)r, n), TN_OK);
            const void *xa = tn__kern_act_q8_0(wt) ? (const void *)xq : (const void *)x;
            for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++) {
                const tn__kern_ops *ops = tn__kern_ops_of((tn_isa)isa);
                if (!ops)
                    continue;
                const tn__dot_fn f = tn__kern_dot(ops, wt);
                float one[NR], many[NR];
                for (int r = 0; r < NR; r++)
                    one[r] = dot1(f, w + ws * (size_t)r, xa, n);
                for (int nr = 1; nr <= NR; nr++) {
                    memset(many, 0, sizeof(many));
                    f(w, ws, nr, xa, n, many);
                    if (memcmp(many, one, sizeof(float) * (size_t)nr) != 0)
                        fail_msg("isa %s dtype %s n=%lld: %d rows together differ from rows alone", tn_isa_name((tn_isa)isa),
                                 tn_dtype_traits_of(wt)->name, (long long)n, nr);
                }
            }
        }
    }
}

/* --- matmul ---------------------------------------------------------------------- */

typedef struct case_data {
    tn_dtype wt;
    int64_t n_in, n_out, n_tok;
    void *w;
    float *wf, *x, *xe, *y_ref; /* y_ref: the scalar ISA's output */
} case_data;

static double worst_ratio[3][TN_DTYPE_COUNT]; /* per ISA and dtype: max |err| / L1 seen */

/* Checks one ISA on one case; y_ref must already hold the scalar output. */
static void check_isa_case(tn_isa isa, const case_data *c)
{
    const int64_t n_in = c->n_in, n_out = c->n_out, n_tok = c->n_tok;
    float *y = malloc(sizeof(float) * (size_t)(n_out * n_tok));
    float *y1 = malloc(sizeof(float) * (size_t)n_out);
    assert_true(tn_kern_set_isa(isa));

    /* the full batch on all threads, against the scalar reference */
    run_matmul(pool_all, c->w, c->wt, n_in, n_out, c->x, n_tok, y);
    for (int64_t t = 0; t < n_tok; t++) {
        for (int64_t r = 0; r < n_out; r++) {
            double l1 = 0;
            for (int64_t k = 0; k < n_in; k++)
                l1 += fabs((double)c->wf[r * n_in + k] * c->xe[t * n_in + k]);
            const double err = fabs((double)y[t * n_out + r] - c->y_ref[t * n_out + r]);
            if (!(err <= TOL * l1 + 1e-30))
                fail_msg("isa %s dtype %s n_in=%lld n_out=%lld n_tok=%lld: y[%lld][%lld] = %.9g, scalar %.9g (L1 %g)",
                         tn_isa_name(isa), tn_dtype_traits_of(c->wt)->name, (long long)n_in, (long long)n_out,
                         (long long)n_tok, (long long)t, (long long)r, (double)y[t * n_out + r],
                         (double)c->y_ref[t * n_out + r], l1);
            if (l1 > 0 && err / l1 > worst_ratio[isa][c->wt])
                worst_ratio[isa][c->wt] = err / l1;
        }
    }

    /* bit-identical for every token alone, on one thread and on all, and
     * with no pool at all */
    tn_pool *pools[] = {pool_all, pool_one, NULL};
    for (int64_t t = 0; t < n_tok; t++) {
        for (size_t p = 0; p < TN_ARRAY_LEN(pools); p++) {
            run_matmul(pools[p], c->w, c->wt, n_in, n_out, c->x + t * n_in, 1, y1);
            if (memcmp(y1, y + t * n_out, sizeof(float) * (size_t)n_out) != 0)
                fail_msg("isa %s dtype %s n_in=%lld n_out=%lld: token %lld alone (pool %zu) differs from the batch of %lld",
                         tn_isa_name(isa), tn_dtype_traits_of(c->wt)->name, (long long)n_in, (long long)n_out,
                         (long long)t, p, (long long)n_tok);
        }
    }
    /* and the batch on one thread */
    float *y2 = malloc(sizeof(float) * (size_t)(n_out * n_tok));
    run_matmul(pool_one, c->w, c->wt, n_in, n_out, c->x, n_tok, y2);
    assert_memory_equal(y2, y, sizeof(float) * (size_t)(n_out * n_tok));
    free(y2);
    free(y);
    free(y1);
}

static void test_matmul_all(void **state)
{
    (void)state;
    for (size_t di = 0; di < TN_ARRAY_LEN(dtypes); di++) {
        for (size_t ii = 0; ii < TN_ARRAY_LEN(shapes_in); ii++) {
            for (size_t oi = 0; oi < TN_ARRAY_LEN(shapes_out); oi++) {
                for (size_t ti = 0; ti < TN_ARRAY_LEN(shapes_tok); ti++) {
                    case_data c = {.wt = dtypes[di], .n_in = shapes_in[ii], .n_out = shapes_out[oi], .n_tok = shapes_tok[ti]};
                    const int64_t n_in = c.n_in, n_out = c.n_out, n_tok = c.n_tok;
                    make_weights(c.wt, n_in, n_out, &c.w, &c.wf);
                    c.x = malloc(sizeof(float) * (size_t)(n_in * n_tok));
                    c.xe = malloc(sizeof(float) * (size_t)(n_in * n_tok));
                    c.y_ref = malloc(sizeof(float) * (size_t)(n_out * n_tok));
                    fill(c.x, n_in * n_tok, 2.0f);
                    c.x[0] = 40.0f; /* an outlier: one block with a large scale */
                    effective_x(c.wt, c.x, n_in, n_tok, c.xe);

                    /* scalar vs double */
                    assert_true(tn_kern_set_isa(TN_ISA_SCALAR));
                    run_matmul(pool_all, c.w, c.wt, n_in, n_out, c.x, n_tok, c.y_ref);
                    for (int64_t t = 0; t < n_tok; t++) {
                        for (int64_t r = 0; r < n_out; r++) {
                            double e = 0, l1 = 0;
                            for (int64_t k = 0; k < n_in; k++) {
                                const double p = (double)c.wf[r * n_in + k] * c.xe[t * n_in + k];
                                e += p, l1 += fabs(p);
                            }
                            if (!(fabs(c.y_ref[t * n_out + r] - e) <= TOL * l1 + 1e-30))
                                fail_msg("scalar dtype %s n_in=%lld: y[%lld][%lld] = %.9g, double %.9g",
                                         tn_dtype_traits_of(c.wt)->name, (long long)n_in, (long long)t,
                                         (long long)r, (double)c.y_ref[t * n_out + r], e);
                        }
                    }
                    for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++)
                        if (tn__kern_ops_of((tn_isa)isa))
                            check_isa_case((tn_isa)isa, &c);
                    free(c.w);
                    free(c.wf);
                    free(c.x);
                    free(c.xe);
                    free(c.y_ref);
                }
            }
        }
    }
    for (int isa = TN_ISA_AVX2; isa <= TN_ISA_AVX512; isa++)
        for (size_t di = 0; di < TN_ARRAY_LEN(dtypes); di++)
            if (tn__kern_ops_of((tn_isa)isa))
                print_message("%-6s vs scalar, %-4s: worst |err| / L1 = %.2e (tolerance %.0e)\n", tn_isa_name((tn_isa)isa),
                              tn_dtype_traits_of(dtypes[di])->name, worst_ratio[isa][dtypes[di]], TOL);
    tn_kern_set_isa(TN_ISA_SCALAR);
}

/* A larger batch that crosses several row tiles and a parallel activation
 * quantization: every token's outputs equal its single-token outputs. */
static void test_matmul_batch_invariance_large(void **state)
{
    (void)state;
    const int64_t n_in = 512, n_out = 301, n_tok = 160;
    float *x = malloc(sizeof(float) * (size_t)(n_in * n_tok));
    float *y = malloc(sizeof(float) * (size_t)(n_out * n_tok));
    float *y1 = malloc(sizeof(float) * (size_t)n_out);
    fill(x, n_in * n_tok, 1.0f);
    for (size_t di = 0; di < TN_ARRAY_LEN(dtypes); di++) {
        void *w;
        float *wf;
        make_weights(dtypes[di], n_in, n_out, &w, &wf);
        for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++) {
            if (!tn_kern_set_isa((tn_isa)isa))
                continue;
            run_matmul(pool_all, w, dtypes[di], n_in, n_out, x, n_tok, y);
            for (int64_t t = 0; t < n_tok; t += 7) {
                run_matmul(pool_one, w, dtypes[di], n_in, n_out, x + t * n_in, 1, y1);
                assert_memory_equal(y1, y + t * n_out, sizeof(float) * (size_t)n_out);
            }
        }
        free(w);
        free(wf);
    }
    tn_kern_set_isa(TN_ISA_SCALAR);
    free(x);
    free(y);
    free(y1);
}

/* --- tn_get_row ------------------------------------------------------------------ */

static void test_get_row(void **state)
{
    (void)state;
    const int64_t n_embd = 96, n_rows = 5;
    float src[96 * 5];
    fill(src, n_embd * n_rows, 3.0f);
    for (size_t di = 0; di < TN_ARRAY_LEN(dtypes); di++) {
        const tn_dtype wt = dtypes[di];
        const size_t row = tn_dtype_row_size(wt, n_embd);
        char *w = malloc(row * (size_t)n_rows);
        for (int64_t r = 0; r < n_rows; r++)
            assert_int_equal(tn_quantize_row(wt, src + r * n_embd, w + row * (size_t)r, n_embd), TN_OK);
        for (int64_t r = 0; r < n_rows; r++) {
            float out[96], want[96];
            const char *p = w + row * (size_t)r;
            for (int64_t k = 0; k < n_embd; k++) {
                switch (wt) {
                case TN_DTYPE_F32: want[k] = src[r * n_embd + k]; break;
                case TN_DTYPE_F16: want[k] = tn_fp16_to_fp32(((const uint16_t *)p)[k]); break;
                case TN_DTYPE_BF16: want[k] = tn_bf16_to_fp32(((const uint16_t *)p)[k]); break;
                case TN_DTYPE_Q8_0: {
                    const tn_block_q8_0 *b = (const tn_block_q8_0 *)p + k / 32;
                    want[k] = tn_fp16_to_fp32(b->d) * b->qs[k % 32];
                    break;
                }
                case TN_DTYPE_Q4_0: {
                    const tn_block_q4_0 *b = (const tn_block_q4_0 *)p + k / 32;
                    const int j = (int)(k % 32);
                    const int q = j < 16 ? (b->qs[j] & 15) : (b->qs[j - 16] >> 4);
                    want[k] = tn_fp16_to_fp32(b->d) * (float)(q - 8);
                    break;
                }
                default: fail();
                }
            }
            tn_get_row(w, wt, n_embd, r, out);
            assert_memory_equal(out, want, sizeof(want));
            /* and close to the source */
            for (int64_t k = 0; k < n_embd; k++)
                assert_true(fabsf(out[k] - src[r * n_embd + k]) <= 3.0f * (wt == TN_DTYPE_Q4_0 ? 0.2f : 0.02f));
        }
        free(w);
    }
}

/* --- small operators --------------------------------------------------------------- */

static void test_rmsnorm(void **state)
{
    (void)state;
    enum { N = 1000 };
    float x[N], w[N], out[N], out2[N];
    fill(x, N, 3.0f);
    fill(w, N, 2.0f);
    double ss = 0;
    for (int i = 0; i < N; i++)
        ss += (double)x[i] * x[i];
    const double scale = 1.0 / sqrt(ss / N + 1e-5);
    tn_rmsnorm(out, x, w, N, 1e-5f);
    tn_rmsnorm(out2, x, NULL, N, 1e-5f);
    for (int i = 0; i < N; i++) {
        assert_true(fabs(out[i] - x[i] * scale * w[i]) <= 1e-6 * fabs(x[i] * scale * w[i]) + 1e-7);
        assert_true(fabs(out2[i] - x[i] * scale) <= 1e-6 * fabs(x[i] * scale) + 1e-7);
    }
    /* in place */
    memcpy(out2, x, sizeof(x));
    tn_rmsnorm(out2, out2, w, N, 1e-5f);
    assert_memory_equal(out2, out, sizeof(out));
    /* all zeros stay zeros (eps keeps the scale finite) */
    float z[8] = {0};
    tn_rmsnorm(z, z, NULL, 8, 1e-6f);
    for (int i = 0; i < 8; i++)
        assert_true(z[i] == 0.0f);
}

/* tn_softmax and tn_swiglu on the current ISA; the tests below run them on
 * every ISA this machine has. */
static void softmax_once(void)
{
    enum { N = 777 };
    float x[N];
    double e[N];
    fill(x, N, 30.0f);
    x[5] = 1000.0f; /* would overflow expf without the max shift */
    x[6] = -INFINITY; /* a masked position */
    double max = -INFINITY, sum = 0;
    for (int i = 0; i < N; i++)
        max = fmax(max, x[i]);
    for (int i = 0; i < N; i++)
        sum += (e[i] = exp((double)x[i] - max));
    tn_softmax(x, N);
    double total = 0;
    for (int i = 0; i < N; i++) {
        assert_true(fabs(x[i] - e[i] / sum) <= 1e-6 * (e[i] / sum) + 1e-12);
        total += x[i];
    }
    assert_true(fabs(total - 1.0) < 1e-5);
    assert_true(x[6] == 0.0f);

    float y[4] = {1, 2, 3, 4};
    tn_softmax(y, 4);
    const double s = exp(-3.0) + exp(-2.0) + exp(-1.0) + 1.0;
    assert_true(fabs(y[3] - 1.0 / s) < 1e-6 && fabs(y[0] - exp(-3.0) / s) < 1e-7);

    float m[3] = {-INFINITY, -INFINITY, -INFINITY};
    tn_softmax(m, 3);
    assert_true(m[0] == 0.0f && m[1] == 0.0f && m[2] == 0.0f);
}

static void swiglu_once(void)
{
    enum { N = 513 };
    float g[N], u[N], g0[N];
    fill(g, N, 12.0f);
    fill(u, N, 3.0f);
    g[0] = -100.0f, g[1] = 100.0f, g[2] = 0.0f;
    memcpy(g0, g, sizeof(g));
    tn_swiglu(g, u, N);
    for (int i = 0; i < N; i++) {
        const double want = (double)g0[i] / (1.0 + exp(-(double)g0[i])) * u[i];
        assert_true(fabs(g[i] - want) <= 1e-6 * fabs(want) + 1e-30);
    }
    assert_true(g[2] == 0.0f && fabsf(g[0]) < 1e-30f && g[1] == 100.0f * u[1]);
}

static void test_softmax(void **state)
{
    (void)state;
    for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++)
        if (tn_kern_set_isa((tn_isa)isa)) {
            softmax_once();
            /* lengths around the vector width, and the masked tails */
            for (int n = 1; n <= 40; n++) {
                float x[40];
                double e[40], sum = 0;
                fill(x, n, 20.0f);
                for (int i = 0; i < n; i++)
                    sum += (e[i] = exp((double)x[i]));
                tn_softmax(x, n);
                for (int i = 0; i < n; i++)
                    assert_true(fabs(x[i] - e[i] / sum) <= 1e-6 * (e[i] / sum) + 1e-12);
            }
        }
    tn_kern_set_isa(TN_ISA_SCALAR);
}

static void test_swiglu(void **state)
{
    (void)state;
    for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++)
        if (tn_kern_set_isa((tn_isa)isa))
            swiglu_once();
    tn_kern_set_isa(TN_ISA_SCALAR);
}

/* Attention's row loops equal the loops over tn_dot_f32 / tn_axpy_f32 bit
 * for bit on every ISA (rows picked by index, lengths with tails). */
static void test_rows_loops(void **state)
{
    (void)state;
    enum { ROWS = 37, STRIDE = 150 };
    static float base[ROWS * STRIDE], q[STRIDE], p[ROWS], out[ROWS], y[STRIDE], y2[STRIDE];
    int32_t idx[ROWS];
    fill(base, ROWS * STRIDE, 1.0f);
    fill(q, STRIDE, 1.0f);
    fill(p, ROWS, 1.0f);
    for (int i = 0; i < ROWS; i++)
        idx[i] = (int32_t)((i * 7 + 3) % ROWS);
    for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++) {
        if (!tn_kern_set_isa((tn_isa)isa))
            continue;
        for (int n = 1; n <= 140; n += (n < 70 ? 1 : 23)) {
            tn_dot_f32_rows(q, base, idx, STRIDE, ROWS, n, 0.125f, out);
            for (int i = 0; i < ROWS; i++) {
                const float d = tn_dot_f32(q, base + (size_t)idx[i] * STRIDE, n) * 0.125f;
                if (memcmp(&d, &out[i], sizeof d) != 0)
                    fail_msg("isa %s n=%d: tn_dot_f32_rows row %d differs from tn_dot_f32", tn_isa_name((tn_isa)isa), n, i);
            }
            tn_axpy_f32_rows(y, p, base, idx, STRIDE, ROWS, n);
            memset(y2, 0, sizeof(y2));
            for (int i = 0; i < ROWS; i++)
                tn_axpy_f32(y2, p[i], base + (size_t)idx[i] * STRIDE, n);
            assert_memory_equal(y, y2, sizeof(float) * (size_t)n);
        }
    }
    tn_kern_set_isa(TN_ISA_SCALAR);
}

static void test_dot_axpy(void **state)
{
    (void)state;
    enum { NMAX = 300 };
    float a[NMAX], b[NMAX], y[NMAX], y0[NMAX];
    fill(a, NMAX, 1.0f);
    fill(b, NMAX, 1.0f);
    fill(y0, NMAX, 1.0f);
    for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++) {
        if (!tn_kern_set_isa((tn_isa)isa))
            continue;
        for (int n = 0; n <= NMAX; n += (n < 40 ? 1 : 37)) {
            double e = 0, l1 = 0;
            for (int i = 0; i < n; i++)
                e += (double)a[i] * b[i], l1 += fabs((double)a[i] * b[i]);
            const float d = tn_dot_f32(a, b, n);
            assert_true(fabs(d - e) <= 1e-6 * l1 + 1e-30);
            assert_true(tn_dot_f32(a, b, n) == d); /* same inputs, same bits */

            memcpy(y, y0, sizeof(y));
            tn_axpy_f32(y, 0.75f, a, n);
            for (int i = 0; i < NMAX; i++) {
                const double want = i < n ? (double)y0[i] + 0.75 * a[i] : y0[i];
                assert_true(fabs(y[i] - want) <= 1e-7 * (fabs(y0[i]) + fabs(0.75 * a[i])));
            }
        }
    }
    tn_kern_set_isa(TN_ISA_SCALAR);
}

int main(void)
{
    setenv("TERN_ISA", "scalar", 1); /* checked by test_env_forces_scalar */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_env_forces_scalar),
        cmocka_unit_test(test_isa_selection),
        cmocka_unit_test(test_wsize),
        cmocka_unit_test(test_quantize_act_matches_reference),
        cmocka_unit_test(test_dot_kernels_tails),
        cmocka_unit_test(test_dot_rows_bit_identical),
        cmocka_unit_test(test_matmul_all),
        cmocka_unit_test(test_matmul_batch_invariance_large),
        cmocka_unit_test(test_get_row),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_dot_axpy),
        cmocka_unit_test(test_rows_loops),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
