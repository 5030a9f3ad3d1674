/*
 * test_quants.c — the formats of src/kern/quants.h: Q4_1, Q5_0, Q5_1,
 * IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (and Q8_0/Q4_0 against the same
 * independent goldens).
 *
 * What is asserted:
 *   - tn_dequantize_row equals the numpy dequantizers of the gguf package
 *     bit for bit, on the committed goldens (tests/kern/quant_goldens, made
 *     by scripts/make_quant_goldens.py): random block bytes with zero,
 *     subnormal, negative and ordinary scales;
 *   - tn_quantize_row (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) produces exactly the
 *     blocks the gguf package's quantizers produce (an all-zero block and a
 *     constant block included), and its round trip errs by at most half a
 *     step;
 *   - the Q8_K activation quantizer: bsums are the sums of 16 quants, the
 *     largest magnitude maps to -127, an all-zero block is all zeros;
 *   - every dot kernel of every ISA this machine runs, against
 *     dequantize-then-dot in double on the quantized activations, on every
 *     block count up to 21 (32-blocks) or 5 (K-blocks), within
 *     TOL · Σ|w·x|;
 *   - multi-row dot calls (nr 1..9, a row stride longer than a row) give
 *     each row exactly the bits it gets alone;
 *   - tn_matmul with each new weight type: odd n_out, n_tokens 1/2/5/33,
 *     one thread, all threads and no pool give bit-identical outputs per
 *     token, and agree with the double reference;
 *   - the traits table: sizes equal the block structs, all computable.
 */
#include "kern/kern_impl.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 5e-6

typedef struct fmt {
    tn_dtype t;
    const char *file;
    int scale_off[2]; /* byte offsets of the f16 scales in a block (-1: none) */
} fmt;

static const fmt fmts[] = {
    {TN_DTYPE_Q4_1, "q4_1", {0, 2}},   {TN_DTYPE_Q5_0, "q5_0", {0, -1}},   {TN_DTYPE_Q5_1, "q5_1", {0, 2}},
    {TN_DTYPE_IQ4_NL, "iq4_nl", {0, -1}}, {TN_DTYPE_Q2_K, "q2_k", {80, 82}}, {TN_DTYPE_Q3_K, "q3_k", {108, -1}},
    {TN_DTYPE_Q4_K, "q4_k", {0, 2}},   {TN_DTYPE_Q5_K, "q5_k", {0, 2}},    {TN_DTYPE_Q6_K, "q6_k", {208, -1}},
};

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
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

/* n_rows rows of n elements of f's type: random bytes, with every f16
 * scale replaced by a sane one (magnitude 1e-3..1e-1, either sign).
 * Returns malloc'd memory, row after row (row size from the traits). */
static void *random_rows(const fmt *f, int64_t n_rows, int64_t n)
{
    const tn_dtype_traits *tr = tn_dtype_traits_of(f->t);
    const size_t row = tn_dtype_row_size(f->t, n), nb = (size_t)(n / tr->block_size) * (size_t)n_rows;
    uint8_t *p = malloc(row * (size_t)n_rows);
    for (size_t i = 0; i < row * (size_t)n_rows; i++)
        p[i] = (uint8_t)rng();
    for (size_t b = 0; b < nb; b++) {
        for (int k = 0; k < 2; k++) {
            if (f->scale_off[k] < 0)
                continue;
            const float v = powf(10.0f, -3.0f + 2.0f * (float)(rng() % 1000) / 1000.0f) * ((rng() & 1) ? 1.0f : -1.0f);
            const uint16_t h = tn_fp32_to_fp16(v);
            memcpy(p + b * tr->type_size + (size_t)f->scale_off[k], &h, 2);
        }
    }
    return p;
}

/* --- traits ----------------------------------------------------------------------- */

static void test_traits(void **state)
{
    (void)state;
    const size_t sizes[][2] = {
        {TN_DTYPE_Q4_1, sizeof(tn_block_q4_1)}, {TN_DTYPE_Q5_0, sizeof(tn_block_q5_0)},
        {TN_DTYPE_Q5_1, sizeof(tn_block_q5_1)}, {TN_DTYPE_IQ4_NL, sizeof(tn_block_iq4_nl)},
        {TN_DTYPE_Q2_K, sizeof(tn_block_q2_K)}, {TN_DTYPE_Q3_K, sizeof(tn_block_q3_K)},
        {TN_DTYPE_Q4_K, sizeof(tn_block_q4_K)}, {TN_DTYPE_Q5_K, sizeof(tn_block_q5_K)},
        {TN_DTYPE_Q6_K, sizeof(tn_block_q6_K)}, {TN_DTYPE_Q8_K, sizeof(tn_block_q8_K)},
    };
    for (size_t i = 0; i < TN_ARRAY_LEN(sizes); i++)
        assert_int_equal(tn_dtype_traits_of((int)sizes[i][0])->type_size, sizes[i][1]);
    for (size_t i = 0; i < TN_ARRAY_LEN(fmts); i++) {
        const tn_dtype_traits *tr = tn_dtype_traits_of(fmts[i].t);
        assert_true(tr->computable);
        assert_int_equal(tr->block_size, fmts[i].t >= TN_DTYPE_Q2_K && fmts[i].t <= TN_DTYPE_Q6_K ? 256 : 32);
        tn_dtype t;
        assert_true(tn_dtype_from_name(fmts[i].file, &t) && t == fmts[i].t);
        for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++) {
            const tn__kern_ops *ops = tn__kern_ops_of((tn_isa)isa);
            if (ops)
                assert_non_null(tn__kern_dot(ops, fmts[i].t));
        }
    }
    assert_false(tn_dtype_traits_of(TN_DTYPE_Q8_K)->computable); /* activations only */
    /* scratch for the activations: at least their Q8_K / Q8_0 rows */
    assert_true(tn_matmul_wsize(TN_DTYPE_Q4_K, 512, 3) >= 3 * 2 * 292);
    assert_true(tn_matmul_wsize(TN_DTYPE_Q5_1, 64, 1) >= 2 * 34);
}

/* --- goldens from the gguf package -------------------------------------------------- */

static uint32_t rd32(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void check_golden(const char *name, tn_dtype t)
{
    char path[256];
    snprintf(path, sizeof path, "tests/kern/quant_goldens/%s.bin", name);
    size_t len;
    char *buf = tn_test_read_file(path, &len);
    if (!buf)
        fail_msg("cannot read %s (run from the repository root)", path);
    assert_true(len >= 24 && memcmp(buf, "TNQUANTG", 8) == 0);
    assert_int_equal(rd32(buf + 8), 1);
    assert_int_equal(rd32(buf + 12), (uint32_t)t);
    const tn_dtype_traits *tr = tn_dtype_traits_of(t);
    const size_t nd = rd32(buf + 16), nq = rd32(buf + 20), bs = (size_t)tr->block_size, ts = tr->type_size;
    assert_int_equal(len, 24 + nd * (ts + bs * 4) + nq * (bs * 4 + ts));
    const char *p = buf + 24;

    float *got = malloc(nd * bs * 4 + 4);
    assert_int_equal(tn_dequantize_row(t, p, got, (int64_t)(nd * bs)), TN_OK);
    const char *want = p + nd * ts;
    for (size_t i = 0; i < nd * bs; i++) {
        float w;
        memcpy(&w, want + 4 * i, 4);
        if (memcmp(&got[i], &w, 4) != 0)
            fail_msg("%s: element %zu (block %zu) dequantizes to %.9g, gguf says %.9g", name, i, i / bs, (double)got[i],
                     (double)w);
    }
    free(got);
    p = want + nd * bs * 4;

    if (nq) {
        float *x = malloc(nq * bs * 4);
        char *q = malloc(nq * ts);
        memcpy(x, p, nq * bs * 4);
        assert_int_equal(tn_quantize_row(t, x, q, (int64_t)(nq * bs)), TN_OK);
        for (size_t b = 0; b < nq; b++)
            if (memcmp(q + b * ts, p + nq * bs * 4 + b * ts, ts) != 0)
                fail_msg("%s: quantized block %zu differs from gguf's", name, b);
        /* round trip within half a step (plus the f16 rounding of the scale) */
        float *y = malloc(nq * bs * 4);
        assert_int_equal(tn_dequantize_row(t, q, y, (int64_t)(nq * bs)), TN_OK);
        for (size_t b = 0; b < nq; b++) {
            float lo = x[b * bs], hi = x[b * bs];
            for (size_t i = 0; i < bs; i++)
                lo = fminf(lo, x[b * bs + i]), hi = fmaxf(hi, x[b * bs + i]);
            /* the step; symmetric formats map the largest magnitude to the
             * most negative level, so the other end may err a whole step */
            const float amax = fmaxf(fabsf(lo), fabsf(hi));
            float step, bound;
            switch (t) {
            case TN_DTYPE_Q8_0: step = amax / 127.0f, bound = 0.5f * step; break;
            case TN_DTYPE_Q4_0: step = amax / 8.0f, bound = step; break;
            case TN_DTYPE_Q5_0: step = amax / 16.0f, bound = step; break;
            case TN_DTYPE_Q4_1: step = (hi - lo) / 15.0f, bound = 0.5f * step; break;
            default: step = (hi - lo) / 31.0f, bound = 0.5f * step; break;
            }
            for (size_t i = 0; i < bs; i++)
                if (!(fabsf(y[b * bs + i] - x[b * bs + i]) <= bound + amax * 2e-3f))
                    fail_msg("%s: block %zu element %zu: %g round-trips to %g (step %g)", name, b, i,
                             (double)x[b * bs + i], (double)y[b * bs + i], (double)step);
        }
        free(y);
        free(x);
        free(q);
    }
    free(buf);
}

static void test_goldens(void **state)
{
    (void)state;
    check_golden("q8_0", TN_DTYPE_Q8_0);
    check_golden("q4_0", TN_DTYPE_Q4_0);
    for (size_t i = 0; i < TN_ARRAY_LEN(fmts); i++)
        check_golden(fmts[i].file, fmts[i].t);
}

/* --- Q8_K activations ---------------------------------------------------------------- */

static void test_q8_K(void **state)
{
    (void)state;
    enum { N = 256 * 4 };
    static float x[N], y[N];
    static tn_block_q8_K q[N / 256];
    fill(x, N, 3.0f);
    memset(x + 256, 0, 256 * sizeof(float)); /* block 1: zeros */
    x[600] = 50.0f;                          /* block 2: a positive outlier */
    x[900] = -7.0f;                          /* block 3: a negative one; both map to -127 */
    assert_int_equal(tn_quantize_row(TN_DTYPE_Q8_K, x, q, N), TN_OK);
    assert_true(q[1].d == 0.0f);
    for (int i = 0; i < 256; i++)
        assert_int_equal(q[1].qs[i], 0);
    assert_int_equal(q[2].qs[600 - 512], -127);
    assert_int_equal(q[3].qs[900 - 768], -127);
    for (int b = 0; b < N / 256; b++) {
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int i = 0; i < 16; i++)
                s += q[b].qs[16 * j + i];
            assert_int_equal(q[b].bsums[j], s);
        }
    }
    assert_int_equal(tn_dequantize_row(TN_DTYPE_Q8_K, q, y, N), TN_OK);
    for (int i = 0; i < N; i++)
        assert_true(fabsf(y[i] - x[i]) <= fabsf(q[i / 256].d) * 0.5001f);
}

/* --- dot kernels ------------------------------------------------------------------------ */

/* x (n floats) in fmt's activation format, into buf; xe gets its dequantized values. */
static void quantize_act(tn_dtype wt, const float *x, int64_t n, void *buf, float *xe)
{
    const tn_dtype at = tn__kern_act_q8_K(wt) ? TN_DTYPE_Q8_K : TN_DTYPE_Q8_0;
    assert_int_equal(tn_quantize_row(at, x, buf, n), TN_OK);
    assert_int_equal(tn_dequantize_row(at, buf, xe, n), TN_OK);
}

static float dot1(tn__dot_fn f, const void *w, const void *x, int64_t n)
{
    float y;
    f(w, 0, 1, x, n, &y);
    return y;
}

static void test_dot_kernels(void **state)
{
    (void)state;
    for (size_t fi = 0; fi < TN_ARRAY_LEN(fmts); fi++) {
        const fmt *f = &fmts[fi];
        const int bs = tn_dtype_traits_of(f->t)->block_size;
        const int nbmax = bs == 32 ? 21 : 5;
        const int64_t nmax = (int64_t)bs * nbmax;
        void *w = random_rows(f, 1, nmax);
        float *wf = malloc(sizeof(float) * (size_t)nmax), *x = malloc(sizeof(float) * (size_t)nmax);
        float *xe = malloc(sizeof(float) * (size_t)nmax);
        void *xq = malloc(tn_dtype_row_size(TN_DTYPE_Q8_K, 256 * 5) + tn_dtype_row_size(TN_DTYPE_Q8_0, 32 * 21));
        assert_int_equal(tn_dequantize_row(f->t, w, wf, nmax), TN_OK);
        fill(x, nmax, 2.0f);
        x[3] = 30.0f; /* an outlier: one block with a large scale */
        for (int nb = 1; nb <= nbmax; nb++) {
            const int64_t n = (int64_t)nb * bs;
            /* activations quantized for this length (a prefix of the row) */
            quantize_act(f->t, x, n, xq, xe);
            double e = 0, l1 = 0;
            for (int64_t i = 0; i < n; i++)
                e += (double)wf[i] * xe[i], l1 += fabs((double)wf[i] * xe[i]);
            for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++) {
                const tn__kern_ops *ops = tn__kern_ops_of((tn_isa)isa);
                if (!ops)
                    continue;
                const float g = dot1(tn__kern_dot(ops, f->t), w, xq, n);
                if (!(fabs(g - e) <= TOL * l1 + 1e-30))
                    fail_msg("isa %s %s n=%lld: %.9g vs double %.9g (L1 %g)", tn_isa_name((tn_isa)isa), f->file,
                             (long long)n, (double)g, e, l1);
            }
        }
        free(w);
        free(wf);
        free(x);
        free(xe);
        free(xq);
    }
}

static void test_dot_rows_bit_identical(void **state)
{
    (void)state;
    enum { NR = 9 };
    for (size_t fi = 0; fi < TN_ARRAY_LEN(fmts); fi++) {
        const fmt *f = &fmts[fi];
        const tn_dtype_traits *tr = tn_dtype_traits_of(f->t);
        for (int64_t n = tr->block_size; n <= tr->block_size * 11; n += tr->block_size * 5) {
            /* rows of n elements at a stride of n + 2 blocks */
            const int64_t nw = n + 2 * tr->block_size;
            const size_t ws = tn_dtype_row_size(f->t, nw);
            char *w = random_rows(f, NR, nw);
            float *x = malloc(sizeof(float) * (size_t)n), *xe = malloc(sizeof(float) * (size_t)n);
            void *xq = malloc(tn_dtype_row_size(TN_DTYPE_Q8_K, 256 * 11));
            fill(x, n, 1.0f);
            quantize_act(f->t, x, n, xq, xe);
            for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++) {
                const tn__kern_ops *ops = tn__kern_ops_of((tn_isa)isa);
                if (!ops)
                    continue;
                const tn__dot_fn fn = tn__kern_dot(ops, f->t);
                float one[NR], many[NR];
                for (int r = 0; r < NR; r++)
                    one[r] = dot1(fn, w + ws * (size_t)r, xq, n);
                for (int nr = 1; nr <= NR; nr++) {
                    memset(many, 0, sizeof(many));
                    fn(w, ws, nr, xq, n, many);
                    if (memcmp(many, one, sizeof(float) * (size_t)nr) != 0)
                        fail_msg("isa %s %s n=%lld: %d rows together differ from rows alone", tn_isa_name((tn_isa)isa),
                                 f->file, (long long)n, nr);
                }
            }
            free(w);
            free(x);
            free(xe);
            free(xq);
        }
    }
}

/* --- matmul ------------------------------------------------------------------------------ */

static tn_pool *pool_all, *pool_one;

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

static void run_matmul(tn_pool *pool, const void *w, tn_dtype wt, int64_t n_in, int64_t n_out, const float *x,
                       int64_t n_tok, float *y)
{
    const size_t sz = tn_matmul_wsize(wt, n_in, n_tok);
    void *wd = tn_alloc_aligned(sz ? (sz + 63) / 64 * 64 : 64, 64);
    tn_matmul(pool, w, wt, n_in, n_out, x, n_tok, y, wd);
    tn_free_aligned(wd);
}

static void test_matmul(void **state)
{
    (void)state;
    static const int64_t toks[] = {1, 2, 5, 33};
    for (size_t fi = 0; fi < TN_ARRAY_LEN(fmts); fi++) {
        const fmt *f = &fmts[fi];
        const int64_t n_in = tn_dtype_traits_of(f->t)->block_size == 32 ? 32 * 23 : 256 * 3, n_out = 37;
        void *w = random_rows(f, n_out, n_in);
        float *wf = malloc(sizeof(float) * (size_t)(n_in * n_out));
        for (int64_t r = 0; r < n_out; r++)
            assert_int_equal(tn_dequantize_row(f->t, (char *)w + tn_dtype_row_size(f->t, n_in) * (size_t)r, wf + r * n_in,
                                               n_in),
                             TN_OK);
        for (size_t ti = 0; ti < TN_ARRAY_LEN(toks); ti++) {
            const int64_t n_tok = toks[ti];
            float *x = malloc(sizeof(float) * (size_t)(n_in * n_tok)), *xe = malloc(sizeof(float) * (size_t)n_in);
            float *y = malloc(sizeof(float) * (size_t)(n_out * n_tok)), *y1 = malloc(sizeof(float) * (size_t)n_out);
            void *xq = malloc(tn_dtype_row_size(TN_DTYPE_Q8_K, 256 * 3) + tn_dtype_row_size(TN_DTYPE_Q8_0, 32 * 23));
            fill(x, n_in * n_tok, 1.5f);
            for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++) {
                if (!tn_kern_set_isa((tn_isa)isa))
                    continue;
                run_matmul(pool_all, w, f->t, n_in, n_out, x, n_tok, y);
                for (int64_t t = 0; t < n_tok; t++) {
                    quantize_act(f->t, x + t * n_in, n_in, xq, xe);
                    for (int64_t r = 0; r < n_out; r++) {
                        double e = 0, l1 = 0;
                        for (int64_t k = 0; k < n_in; k++)
                            e += (double)wf[r * n_in + k] * xe[k], l1 += fabs((double)wf[r * n_in + k] * xe[k]);
                        if (!(fabs(y[t * n_out + r] - e) <= TOL * l1 + 1e-30))
                            fail_msg("isa %s %s n_tok=%lld: y[%lld][%lld] = %.9g, double %.9g", tn_isa_name((tn_isa)isa),
                                     f->file, (long long)n_tok, (long long)t, (long long)r, (double)y[t * n_out + r], e);
                    }
                    tn_pool *pools[] = {pool_all, pool_one, NULL};
                    for (size_t p = 0; p < TN_ARRAY_LEN(pools); p++) {
                        run_matmul(pools[p], w, f->t, n_in, n_out, x + t * n_in, 1, y1);
                        if (memcmp(y1, y + t * n_out, sizeof(float) * (size_t)n_out) != 0)
                            fail_msg("isa %s %s: token %lld alone (pool %zu) differs from the batch of %lld",
                                     tn_isa_name((tn_isa)isa), f->file, (long long)t, p, (long long)n_tok);
                    }
                }
            }
            free(x);
            free(xe);
            free(y);
            free(y1);
            free(xq);
        }
        free(w);
        free(wf);
    }
    tn_kern_set_isa(TN_ISA_SCALAR);
}

/* tn_get_row of a K-quant table is its dequantized row. */
static void test_get_row(void **state)
{
    (void)state;
    const fmt *f = &fmts[6]; /* q4_k */
    assert_int_equal(f->t, TN_DTYPE_Q4_K);
    char *w = random_rows(f, 3, 512);
    float a[512], b[512];
    tn_get_row(w, f->t, 512, 2, a);
    assert_int_equal(tn_dequantize_row(f->t, w + 2 * tn_dtype_row_size(f->t, 512), b, 512), TN_OK);
    assert_memory_equal(a, b, sizeof(a));
    free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traits),
        cmocka_unit_test(test_goldens),
        cmocka_unit_test(test_q8_K),
        cmocka_unit_test(test_dot_kernels),
        cmocka_unit_test(test_dot_rows_bit_identical),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_get_row),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
