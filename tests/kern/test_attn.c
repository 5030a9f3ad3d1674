/*
 * test_attn.c — kern/attn.h's tiled online-softmax attention.
 *
 * What is asserted:
 *   - every ISA this machine runs, every row type (F32, F16, INT8), odd
 *     shapes (head_dim 1, 7, 64, 100; hd_k != hd_v as latent attention
 *     uses; groups of 1, 3, 8 and 11 heads, more than one block; 0, 1, 31,
 *     32, 33 and 100 rows, i.e. partial tiles): equal to a double-precision
 *     softmax(q·K) · V over the same widened rows, within TOL;
 *   - equal, within TOL, to attention's previous path (the materialized
 *     scores of tn_dot_*_rows, tn_softmax, tn_axpy_*_rows);
 *   - batch invariance at the kernel level, bit for bit, on every ISA: a
 *     query's output is the same whether its rows sit in other slots,
 *     whether its heads run in one group or one by one, whether it runs
 *     alone or in a block of queries sharing the tiles (tn_attn_block),
 *     whatever the scratch held before, and whether it runs alone or among
 *     many queries on 2 threads;
 *   - a huge score range (every row but one underflows) stays finite and
 *     picks the one row.
 */
#include "kern/attn.h"
#include "kern/kern.h"
#include "kern/kvrows.h"
#include "base/pool.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* |out - ref| <= TOL * max_j |v_j[d]| + 1e-7. The online form adds one
 * rounding per tile rescale and F32 sums of up to 100 terms; errors seen
 * are below 1e-6 relative; a wrong tile, head or row errs by O(1). */
#define TOL 2e-5

#define N_SLOTS 256

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}
static float frand(void) { return (float)((double)rng() / 65536.0 / 65536.0 * 2.0 - 1.0); }

/* A cache of N_SLOTS rows of width w in all three types, and the F32 values
 * the kernel widens them to. */
typedef struct cache {
    int w;
    float *f32;        /* (N_SLOTS, w) */
    uint16_t *f16;
    int8_t *i8;
    float *sc;         /* (N_SLOTS) int8 scales */
    float *wide[3];    /* what each type widens to: f32, f16 -> f32, i8 * scale */
} cache;

static void cache_init(cache *c, int w, float amp)
{
    c->w = w;
    size_t n = (size_t)N_SLOTS * w;
    c->f32 = malloc(n * sizeof(float));
    c->f16 = malloc(n * sizeof(uint16_t));
    c->i8 = malloc(n);
    c->sc = malloc(N_SLOTS * sizeof(float));
    for (int t = 0; t < 3; t++)
        c->wide[t] = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        c->f32[i] = frand() * amp;
        c->f16[i] = tn_fp32_to_fp16(c->f32[i]);
        c->wide[0][i] = c->f32[i];
        c->wide[1][i] = tn_fp16_to_fp32(c->f16[i]);
    }
    for (int r = 0; r < N_SLOTS; r++) {
        tn_quantize_row_kv_q8(c->f32 + (size_t)r * w, c->i8 + (size_t)r * w, &c->sc[r], w);
        for (int d = 0; d < w; d++)
            c->wide[2][(size_t)r * w + d] = (float)c->i8[(size_t)r * w + d] * c->sc[r];
    }
}

static void cache_free(cache *c)
{
    free(c->f32);
    free(c->f16);
    free(c->i8);
    free(c->sc);
    for (int t = 0; t < 3; t++)
        free(c->wide[t]);
}

static const tn_dtype types[3] = {TN_DTYPE_F32, TN_DTYPE_F16, TN_DTYPE_I8};

/* The kernel's view of K (cache k) and V (cache v) in type t. */
static tn_attn_kv view(int t, const cache *k, const cache *v, int hd_k, int hd_v)
{
    tn_attn_kv kv = {.type = types[t], .stride = (size_t)k->w, .sstride = 1, .hd_k = hd_k, .hd_v = hd_v};
    if (t == 0) {
        kv.k = k->f32;
        kv.v = v->f32;
    } else if (t == 1) {
        kv.k = k->f16;
        kv.v = v->f16;
    } else {
        kv.k = k->i8;
        kv.v = v->i8;
        kv.ks = k->sc;
        kv.vs = v->sc;
    }
    return kv;
}

/* softmax(q·K * scale) · V in double over the widened rows (K and V rows
 * hd_k apart; V uses the first hd_v values of its rows). */
static void ref_attn(const float *kw, const float *vw, const int32_t *idx, int n, const float *q, int hd_k, int hd_v,
                     float scale, double *out)
{
    double *s = malloc((size_t)(n ? n : 1) * sizeof(double)), mx = -INFINITY, sum = 0;
    for (int j = 0; j < n; j++) {
        double d = 0;
        for (int e = 0; e < hd_k; e++)
            d += (double)q[e] * kw[(size_t)idx[j] * hd_k + e];
        s[j] = d * scale;
        mx = fmax(mx, s[j]);
    }
    for (int j = 0; j < n; j++)
        sum += (s[j] = exp(s[j] - mx));
    for (int e = 0; e < hd_v; e++) {
        double acc = 0;
        for (int j = 0; j < n; j++)
            acc += s[j] * vw[(size_t)idx[j] * hd_k + e];
        out[e] = n ? acc / sum : 0.0;
    }
    free(s);
}

static float *scratch_new(int hd_k, int hd_v)
{
    float *s = tn_alloc_aligned(tn_attn_scratch_floats(hd_k, hd_v) * sizeof(float), 64);
    assert_non_null(s);
    return s;
}

static void check_close(const float *got, const double *ref, int hd_v, double vmax, const char *what)
{
    for (int e = 0; e < hd_v; e++)
        if (!(fabs(got[e] - ref[e]) <= TOL * vmax + 1e-7))
            fail_msg("%s: out[%d] = %.9g, want %.9g", what, e, got[e], ref[e]);
}

/* --- against double, every ISA, every type, odd shapes -------------------- */

static void test_vs_double(void **state)
{
    static const int hds[][2] = {{1, 1}, {7, 7}, {64, 64}, {100, 100}, {72, 40}};
    static const int groups[] = {1, 3, 8, 11};
    static const int ns[] = {0, 1, 31, 32, 33, 100};
    const tn_isa best = tn_kern_isa();
    int checked = 0;
    for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++) {
        if (!tn_kern_set_isa((tn_isa)isa))
            continue;
        for (size_t h = 0; h < TN_ARRAY_LEN(hds); h++) {
            const int hd_k = hds[h][0], hd_v = hds[h][1];
            cache k, v;
            cache_init(&k, hd_k, 1.0f);
            cache_init(&v, hd_k, 3.0f); /* rows as wide as K's: the kernel has one stride */
            float *scratch = scratch_new(hd_k, hd_v);
            int32_t idx[100];
            for (int j = 0; j < 100; j++)
                idx[j] = (int32_t)(rng() % N_SLOTS);
            for (int t = 0; t < 3; t++) {
                const tn_attn_kv kv = view(t, &k, &v, hd_k, hd_v);
                for (size_t gi = 0; gi < TN_ARRAY_LEN(groups); gi++) {
                    const int G = groups[gi];
                    float *q = malloc((size_t)G * hd_k * sizeof(float));
                    float *out = malloc((size_t)G * hd_v * sizeof(float));
                    double *ref = malloc((size_t)hd_v * sizeof(double));
                    for (int i = 0; i < G * hd_k; i++)
                        q[i] = frand() * 4.0f; /* scores of a few units: a peaked softmax */
                    const float scale = 1.0f / sqrtf((float)hd_k);
                    for (size_t ni = 0; ni < TN_ARRAY_LEN(ns); ni++) {
                        const int n = ns[ni];
                        tn_attn_group(&kv, idx, n, q, (size_t)hd_k, G, scale, out, (size_t)hd_v, scratch);
                        for (int g = 0; g < G; g++) {
                            char what[96];
                            snprintf(what, sizeof what, "%s type %d hd %d/%d G %d n %d head %d",
                                     tn_isa_name((tn_isa)isa), t, hd_k, hd_v, G, n, g);
                            ref_attn(k.wide[t], v.wide[t], idx, n, q + (size_t)g * hd_k, hd_k, hd_v, scale, ref);
                            check_close(out + (size_t)g * hd_v, ref, hd_v, 3.0, what);
                            checked++;
                        }
                    }
                    free(q);
                    free(out);
                    free(ref);
                }
            }
            tn_free_aligned(scratch);
            cache_free(&k);
            cache_free(&v);
        }
    }
    assert_true(tn_kern_set_isa(best));
    assert_true(checked > 1000);
}

/* --- against the previous path: materialized scores ------------------------ */

static void test_vs_materialized(void **state)
{
    const int hd = 64, G = 4, n = 150;
    cache k, v;
    cache_init(&k, hd, 1.0f);
    cache_init(&v, hd, 2.0f);
    int32_t idx[150];
    for (int j = 0; j < n; j++)
        idx[j] = (int32_t)(rng() % N_SLOTS);
    float q[4 * 64], out[4 * 64], old[64], sc[150];
    for (int i = 0; i < G * hd; i++)
        q[i] = frand() * 3.0f;
    const float scale = 0.125f;
    float *scratch = scratch_new(hd, hd);
    for (int t = 0; t < 3; t++) {
        const tn_attn_kv kv = view(t, &k, &v, hd, hd);
        tn_attn_group(&kv, idx, n, q, hd, G, scale, out, hd, scratch);
        for (int g = 0; g < G; g++) {
            const float *qg = q + g * hd;
            if (t == 0) {
                tn_dot_f32_rows(qg, k.f32, idx, hd, n, hd, scale, sc);
                tn_softmax(sc, n);
                tn_axpy_f32_rows(old, sc, v.f32, idx, hd, n, hd);
            } else if (t == 1) {
                tn_dot_f16_rows(qg, k.f16, idx, hd, n, hd, scale, sc);
                tn_softmax(sc, n);
                tn_axpy_f16_rows(old, sc, v.f16, idx, hd, n, hd);
            } else {
                tn_dot_q8_rows(qg, k.i8, k.sc, idx, hd, 1, n, hd, scale, sc);
                tn_softmax(sc, n);
                tn_axpy_q8_rows(old, sc, v.i8, v.sc, idx, hd, 1, n, hd);
            }
            for (int e = 0; e < hd; e++)
                if (!(fabsf(out[g * hd + e] - old[e]) <= TOL * 2.0f))
                    fail_msg("type %d head %d: out[%d] = %.9g, materialized path %.9g", t, g, e, out[g * hd + e],
                             old[e]);
        }
    }
    tn_free_aligned(scratch);
    cache_free(&k);
    cache_free(&v);
}

/* --- batch invariance, bit for bit -------------------------------------- */

#define NQ 40 /* queries of one sequence: query i sees rows 0..i*5+1 */

typedef struct many_job {
    const tn_attn_kv *kv;
    const int32_t *idx;
    const float *q; /* (NQ, G, hd) */
    float *out;     /* (NQ, G, hd) */
    float *scratch; /* (2, scratch floats) */
    size_t sfl;
    int G, hd;
} many_job;

/* Queries dealt round-robin over the threads, each thread on its scratch. */
static void many_run(void *ctx, int ith, int nth)
{
    const many_job *j = ctx;
    for (int i = ith; i < NQ; i += nth)
        tn_attn_group(j->kv, j->idx, i * 5 + 1, j->q + (size_t)i * j->G * j->hd, (size_t)j->hd, j->G, 0.1f,
                      j->out + (size_t)i * j->G * j->hd, (size_t)j->hd, j->scratch + (size_t)ith * j->sfl);
}

static void test_invariance(void **state)
{
    const int hd = 48, G = 6, n_max = (NQ - 1) * 5 + 1;
    cache k, v;
    cache_init(&k, hd, 1.0f);
    cache_init(&v, hd, 1.0f);
    int32_t idx[N_SLOTS], idx2[N_SLOTS];
    for (int j = 0; j < N_SLOTS; j++)
        idx[j] = j;
    for (int j = N_SLOTS - 1; j > 0; j--) { /* a shuffled slot order */
        int r = (int)(rng() % (uint32_t)(j + 1));
        int32_t x = idx[j];
        idx[j] = idx[r];
        idx[r] = x;
    }
    float *q = malloc((size_t)NQ * G * hd * sizeof(float));
    float *alone = malloc((size_t)NQ * G * hd * sizeof(float));
    float *many = malloc((size_t)NQ * G * hd * sizeof(float));
    for (int i = 0; i < NQ * G * hd; i++)
        q[i] = frand() * 3.0f;
    const size_t sfl = tn_attn_scratch_floats(hd, hd);
    float *scratch = tn_alloc_aligned(2 * sfl * sizeof(float), 64);
    tn_pool *pool;
    assert_int_equal(tn_pool_new(2, &pool), TN_OK);
    const tn_isa best = tn_kern_isa();
    for (int it = 0; it < 3 * 3; it++) {
        const int t = it % 3;
        if (!tn_kern_set_isa((tn_isa)(it / 3)))
            continue;
        const tn_attn_kv kv = view(t, &k, &v, hd, hd);
        /* alone: one query at a time, heads one by one, scratch refilled with garbage */
        for (int i = 0; i < NQ; i++)
            for (int g = 0; g < G; g++) {
                for (size_t e = 0; e < sfl; e++)
                    scratch[e] = (float)rng();
                const size_t o = ((size_t)i * G + g) * hd;
                tn_attn_group(&kv, idx, i * 5 + 1, q + o, hd, 1, 0.1f, alone + o, hd, scratch);
            }
        /* many: all queries, whole groups, on 2 threads */
        many_job j = {.kv = &kv, .idx = idx, .q = q, .out = many, .scratch = scratch, .sfl = sfl, .G = G, .hd = hd};
        tn_pool_run(pool, many_run, &j);
        if (memcmp(alone, many, (size_t)NQ * G * hd * sizeof(float)) != 0)
            fail_msg("%s type %d: grouped, threaded queries differ from single-head ones", tn_isa_name(it / 3), t);
        /* blocks of 7 queries (the last one of 5) sharing the tiles: the same bits */
        memset(many, 0, (size_t)NQ * G * hd * sizeof(float));
        for (int i0 = 0; i0 < NQ; i0 += 7) {
            const int nq = NQ - i0 < 7 ? NQ - i0 : 7;
            int64_t nv[7];
            for (int i = 0; i < nq; i++)
                nv[i] = (i0 + i) * 5 + 1;
            const size_t o = (size_t)i0 * G * hd;
            tn_attn_block(&kv, idx, nv, nq, q + o, (size_t)G * hd, hd, G, 0.1f, many + o, (size_t)G * hd, hd, scratch);
        }
        if (memcmp(alone, many, (size_t)NQ * G * hd * sizeof(float)) != 0)
            fail_msg("%s type %d: queries in blocks differ from single ones", tn_isa_name(it / 3), t);
        /* the same rows copied to other slots: the same bits */
        tn_attn_kv moved = kv;
        cache k2, v2;
        cache_init(&k2, hd, 1.0f);
        cache_init(&v2, hd, 1.0f);
        for (int r = 0; r < n_max; r++) {
            idx2[r] = (int32_t)(N_SLOTS - 1 - r);
            memcpy(k2.f32 + (size_t)idx2[r] * hd, k.f32 + (size_t)idx[r] * hd, hd * sizeof(float));
            memcpy(v2.f32 + (size_t)idx2[r] * hd, v.f32 + (size_t)idx[r] * hd, hd * sizeof(float));
            memcpy(k2.f16 + (size_t)idx2[r] * hd, k.f16 + (size_t)idx[r] * hd, hd * sizeof(uint16_t));
            memcpy(v2.f16 + (size_t)idx2[r] * hd, v.f16 + (size_t)idx[r] * hd, hd * sizeof(uint16_t));
            memcpy(k2.i8 + (size_t)idx2[r] * hd, k.i8 + (size_t)idx[r] * hd, hd);
            memcpy(v2.i8 + (size_t)idx2[r] * hd, v.i8 + (size_t)idx[r] * hd, hd);
            k2.sc[idx2[r]] = k.sc[idx[r]];
            v2.sc[idx2[r]] = v.sc[idx[r]];
        }
        moved = view(t, &k2, &v2, hd, hd);
        j.kv = &moved;
        j.idx = idx2;
        memset(many, 0, (size_t)NQ * G * hd * sizeof(float));
        tn_pool_run(pool, many_run, &j);
        if (memcmp(alone, many, (size_t)NQ * G * hd * sizeof(float)) != 0)
            fail_msg("%s type %d: the same rows in other slots give other bits", tn_isa_name(it / 3), t);
        cache_free(&k2);
        cache_free(&v2);
    }
    assert_true(tn_kern_set_isa(best));
    tn_pool_free(pool);
    tn_free_aligned(scratch);
    free(q);
    free(alone);
    free(many);
    cache_free(&k);
    cache_free(&v);
}

/* --- extreme scores ------------------------------------------------------ */

static void test_extreme(void **state)
{
    const tn_isa best = tn_kern_isa();
    const int hd = 16, n = 70;
    float kf[70 * 16], vf[70 * 16], q[16], out[16];
    int32_t idx[70];
    for (int j = 0; j < n; j++) {
        idx[j] = j;
        for (int e = 0; e < hd; e++) {
            kf[j * hd + e] = j == 45 ? 50.0f : -50.0f; /* row 45 wins by a score gap of ~10^4 */
            vf[j * hd + e] = (float)(j * 100 + e);
        }
    }
    for (int e = 0; e < hd; e++)
        q[e] = 10.0f;
    float *scratch = scratch_new(hd, hd);
    const tn_attn_kv kv = {.type = TN_DTYPE_F32, .k = kf, .v = vf, .stride = hd, .hd_k = hd, .hd_v = hd};
    for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++) {
        if (!tn_kern_set_isa((tn_isa)isa))
            continue;
        tn_attn_group(&kv, idx, n, q, hd, 1, 1.0f, out, hd, scratch);
        for (int e = 0; e < hd; e++)
            if (out[e] != (float)(4500 + e))
                fail_msg("%s: out[%d] = %g, want %d", tn_isa_name((tn_isa)isa), e, out[e], 4500 + e);
    }
    assert_true(tn_kern_set_isa(best));
    tn_free_aligned(scratch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vs_double),
        cmocka_unit_test(test_vs_materialized),
        cmocka_unit_test(test_invariance),
        cmocka_unit_test(test_extreme),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
