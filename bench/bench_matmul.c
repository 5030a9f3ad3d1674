/*
 * bench_matmul.c — fork/join cost of the pool and matmul throughput per
 * ISA. Prints tables; asserts nothing (speed targets live here, not in tests).
 *
 * Build against a Release build of the libraries and run from the repo root:
 *
 *   cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release
 *   cmake --build build-rel --target tern_kern
 *   gcc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc bench/bench_matmul.c \
 *       build-rel/libtern_kern.a build-rel/libtern_base.a -lpthread -lm -o /tmp/bench_matmul
 *   /tmp/bench_matmul [seconds per measurement, default 0.3] [dtype|all] [isa|all] [x16]
 *
 * (x16: only the table of Q4_0/Q8_0/Q4_K/Q6_K/W8A8 in the file format
 * against the repacked x16 layout at n_tokens 1..512; x16cpu: the same on one thread,
 * timed by the thread's CPU time, for a loaded machine.)
 *
 * Decode (n_tokens = 1) streams every weight byte once per call, so its
 * figure of merit is GB/s of weights. "hot" repeats one matrix (it may sit in
 * the last-level cache); "cold" cycles through enough copies to exceed any
 * cache, which is what a model larger than the cache sees. Prefill rows
 * report GFLOP/s (2·n_in·n_out·n_tokens per call).
 */
#include "kern/kern_impl.h"
#include "kern/repack.h"
#include "kern/w8a8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double budget_s = 0.3;
static const char *only_dtype; /* optional filters from the command line */
static const char *only_isa;

/* --- pool ----------------------------------------------------------------- */

static void empty_fn(void *ctx, int ith, int nth) { (void)ctx, (void)ith, (void)nth; }

static void bench_pool(void)
{
    printf("pool fork/join (empty job)\n");
    printf("  threads   ns/job\n");
    for (int n = 1; n <= tn_n_cores(); n++) {
        tn_pool *pool;
        if (tn_pool_new(n, &pool) != TN_OK)
            return;
        for (int i = 0; i < 1000; i++) /* warm: workers spinning */
            tn_pool_run(pool, empty_fn, NULL);
        double best = 1e9;
        for (int rep = 0; rep < 5; rep++) {
            const int iters = 100000;
            const double t0 = tn_time_s();
            for (int i = 0; i < iters; i++)
                tn_pool_run(pool, empty_fn, NULL);
            const double ns = (tn_time_s() - t0) / iters * 1e9;
            best = ns < best ? ns : best;
        }
        printf("  %7d %8.0f\n", tn_pool_size(pool), best);
        tn_pool_free(pool);
    }
}

/* --- matmul --------------------------------------------------------------- */

/* Median seconds per call of fn over about budget_s. */
typedef struct mm_args {
    tn_pool *pool;
    const char *w;
    size_t w_bytes;
    int n_copies;
    tn_dtype wt;
    int64_t n_in, n_out, n_tok;
    const float *x;
    float *y;
    void *wdata;
} mm_args;

/* Row r of a matrix of type wt from src: quantized where tn_quantize_row
 * has a quantizer, else (the K-quants, IQ4_NL) random block bytes with
 * small finite f16 scales, which time the same as real ones. */
static bool make_row(tn_dtype wt, const float *src, int64_t n_in, char *out, uint32_t *s)
{
    if (tn_quantize_row(wt, src, out, n_in) == TN_OK)
        return true;
    const tn_dtype_traits *tr = tn_dtype_traits_of(wt);
    int off[2] = {-1, -1};
    switch (wt) {
    case TN_DTYPE_Q4_K:
    case TN_DTYPE_Q5_K: off[0] = 0, off[1] = 2; break;
    case TN_DTYPE_Q6_K: off[0] = 208; break;
    case TN_DTYPE_Q2_K: off[0] = 80, off[1] = 82; break;
    case TN_DTYPE_Q3_K: off[0] = 108; break;
    case TN_DTYPE_IQ4_NL: off[0] = 0; break;
    default: return false;
    }
    const size_t row = tn_dtype_row_size(wt, n_in);
    for (size_t i = 0; i < row; i++) {
        *s = *s * 1664525u + 1013904223u;
        out[i] = (char)(*s >> 24);
    }
    for (int64_t b = 0; b < n_in / tr->block_size; b++)
        for (int k = 0; k < 2; k++)
            if (off[k] >= 0) {
                const uint16_t h = tn_fp32_to_fp16(1e-3f);
                memcpy(out + (size_t)b * tr->type_size + (size_t)off[k], &h, 2);
            }
    return true;
}

static int cmp_d(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Seconds of wall clock, or with cpu_time of the calling thread's CPU (a
 * one-thread pool: the figure then barely depends on what else the machine
 * runs). */
static bool cpu_time;
static double now_s(void)
{
    if (!cpu_time)
        return tn_time_s();
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double time_matmul(const mm_args *a)
{
    enum { MAX_SAMPLES = 4096 };
    static double t[MAX_SAMPLES];
    int n = 0, copy = 0;
    tn_matmul(a->pool, a->w, a->wt, a->n_in, a->n_out, a->x, a->n_tok, a->y, a->wdata); /* warm */
    const double start = now_s();
    while (n < MAX_SAMPLES && (n < 3 || now_s() - start < budget_s)) {
        const double t0 = now_s();
        tn_matmul(a->pool, a->w + a->w_bytes * (size_t)copy, a->wt, a->n_in, a->n_out, a->x, a->n_tok, a->y, a->wdata);
        t[n++] = now_s() - t0;
        copy = (copy + 1) % a->n_copies;
    }
    qsort(t, (size_t)n, sizeof(double), cmp_d);
    return t[n / 2];
}

static void bench_matmul(void)
{
    const int64_t n_in = 4096, n_out = 4096;
    const tn_dtype types[] = {TN_DTYPE_Q4_0, TN_DTYPE_Q8_0, TN_DTYPE_Q4_1, TN_DTYPE_Q5_0, TN_DTYPE_Q5_1,
                              TN_DTYPE_IQ4_NL, TN_DTYPE_Q2_K, TN_DTYPE_Q3_K, TN_DTYPE_Q4_K, TN_DTYPE_Q5_K,
                              TN_DTYPE_Q6_K, TN_DTYPE_F16, TN_DTYPE_BF16, TN_DTYPE_F32};
    const size_t cold_bytes = (size_t)768 << 20; /* well above the 260 MiB L3 of the dev machine */
    tn_pool *pool;
    if (tn_pool_new(0, &pool) != TN_OK)
        return;

    float *src = malloc(sizeof(float) * (size_t)(n_in * n_out));
    uint32_t s = 1;
    for (int64_t i = 0; i < n_in * n_out; i++) {
        s = s * 1664525u + 1013904223u;
        src[i] = (float)(s >> 8) / 8388608.0f - 1.0f;
    }
    const int64_t tok_max = 64;
    float *x = malloc(sizeof(float) * (size_t)(n_in * tok_max));
    float *y = malloc(sizeof(float) * (size_t)(n_out * tok_max));
    memcpy(x, src, sizeof(float) * (size_t)(n_in * tok_max));
    const size_t ws0 = tn_matmul_wsize(TN_DTYPE_Q8_0, n_in, tok_max), wsk = tn_matmul_wsize(TN_DTYPE_Q4_K, n_in, tok_max);
    void *wdata = tn_alloc_aligned(TN_MAX(ws0, wsk) + 64, 64);

    printf("\nmatmul %lldx%lld, %d threads; decode = n_tokens 1, GB/s of weights (median call)\n",
           (long long)n_out, (long long)n_in, tn_pool_size(pool));
    printf("  dtype  isa      MiB    hot GB/s  cold GB/s   cold us/call\n");
    for (size_t ti = 0; ti < TN_ARRAY_LEN(types); ti++) {
        const tn_dtype wt = types[ti];
        if (only_dtype && strcmp(only_dtype, tn_dtype_traits_of(wt)->name) != 0)
            continue;
        const size_t row = tn_dtype_row_size(wt, n_in), bytes = row * (size_t)n_out;
        const int n_copies = (int)(cold_bytes / bytes) + 1;
        char *w = malloc(bytes * (size_t)n_copies);
        for (int64_t r = 0; r < n_out; r++)
            if (!make_row(wt, src + r * n_in, n_in, w + row * (size_t)r, &s))
                return;
        for (int c = 1; c < n_copies; c++)
            memcpy(w + bytes * (size_t)c, w, bytes);
        for (int isa = TN_ISA_AVX512; isa >= TN_ISA_SCALAR; isa--) {
            if ((only_isa && strcmp(only_isa, tn_isa_name((tn_isa)isa)) != 0) || !tn_kern_set_isa((tn_isa)isa))
                continue;
            mm_args a = {pool, w, bytes, 1, wt, n_in, n_out, 1, x, y, wdata};
            const double hot = time_matmul(&a);
            a.n_copies = n_copies;
            const double cold = time_matmul(&a);
            printf("  %-5s  %-6s %6.1f   %9.1f  %9.1f   %12.0f\n", tn_dtype_traits_of(wt)->name, tn_isa_name((tn_isa)isa),
                   bytes / 1048576.0, bytes / hot * 1e-9, bytes / cold * 1e-9, cold * 1e6);
        }
        free(w);
    }

    printf("\nprefill, the same matrix (hot), n_tokens %lld: GFLOP/s\n", (long long)tok_max);
    printf("  dtype  isa     GFLOP/s\n");
    for (size_t ti = 0; ti < TN_ARRAY_LEN(types); ti++) {
        const tn_dtype wt = types[ti];
        if (only_dtype && strcmp(only_dtype, tn_dtype_traits_of(wt)->name) != 0)
            continue;
        const size_t row = tn_dtype_row_size(wt, n_in);
        char *w = malloc(row * (size_t)n_out);
        for (int64_t r = 0; r < n_out; r++)
            if (!make_row(wt, src + r * n_in, n_in, w + row * (size_t)r, &s))
                return;
        for (int isa = TN_ISA_AVX512; isa >= TN_ISA_AVX2; isa--) {
            if ((only_isa && strcmp(only_isa, tn_isa_name((tn_isa)isa)) != 0) || !tn_kern_set_isa((tn_isa)isa))
                continue;
            mm_args a = {pool, w, row * (size_t)n_out, 1, wt, n_in, n_out, tok_max, x, y, wdata};
            const double t = time_matmul(&a);
            printf("  %-5s  %-6s %8.1f\n", tn_dtype_traits_of(wt)->name, tn_isa_name((tn_isa)isa),
                   2.0 * (double)(n_in * n_out * tok_max) / t * 1e-9);
        }
        free(w);
    }
    tn_free_aligned(wdata);
    free(src);
    free(x);
    free(y);
    tn_pool_free(pool);
}

/* Q4_0 / Q8_0 / Q4_K / Q6_K in llama.cpp's block format and W8A8 in its
 * row format against the x16 layouts (kern/repack.h, kern/repack_k.h,
 * kern/w8a8_x16.h) at several n_tokens, the two alternating per cell, on
 * one ISA (each has its file-format kernels and, for the types it repacks,
 * its x16 kernel). */
static void bench_x16(tn_isa isa)
{
    const int64_t n_in = 4096, n_out = 4096, tok_max = 512;
    const int64_t toks[] = {1, 2, 4, 8, 16, 64, 512};
    const tn_dtype types[] = {TN_DTYPE_Q4_0, TN_DTYPE_Q8_0, TN_DTYPE_Q4_K, TN_DTYPE_Q6_K, TN_DTYPE_W8A8};
    if ((only_isa && strcmp(only_isa, tn_isa_name(isa)) != 0) || !tn_kern_set_isa(isa))
        return;
    tn_pool *pool;
    if (tn_pool_new(cpu_time ? 1 : 0, &pool) != TN_OK)
        return;
    float *src = malloc(sizeof(float) * (size_t)(n_in * n_out));
    float *x = malloc(sizeof(float) * (size_t)(n_in * tok_max));
    float *y = malloc(sizeof(float) * (size_t)(n_out * tok_max));
    uint32_t s = 7;
    for (int64_t i = 0; i < n_in * n_out; i++) {
        s = s * 1664525u + 1013904223u;
        src[i] = (float)(s >> 8) / 8388608.0f - 1.0f;
    }
    memcpy(x, src, sizeof(float) * (size_t)(n_in * tok_max));
    size_t ws = 0;
    for (size_t ti = 0; ti < TN_ARRAY_LEN(types); ti++)
        ws = TN_MAX(ws, TN_MAX(tn_matmul_wsize(types[ti], n_in, tok_max),
                               tn_matmul_wsize(tn__x16_dtype_for(types[ti]), n_in, tok_max)));
    void *wdata = tn_alloc_aligned(ws + 64, 64);
    printf("\n%s: Q4_0/Q8_0/Q4_K/Q6_K/W8A8 %lldx%lld, %d threads, hot: file format vs x16 layout, GFLOP/s "
           "(median call, %s)\n",
           tn_isa_name(isa), (long long)n_out, (long long)n_in, tn_pool_size(pool),
           cpu_time ? "thread CPU time" : "wall clock");
    printf("  dtype  n_tokens    block      x16   x16/block\n");
    for (size_t ti = 0; ti < TN_ARRAY_LEN(types); ti++) {
        const tn_dtype wt = types[ti], xt = tn__x16_dtype_for(wt);
        if ((only_dtype && strcmp(only_dtype, tn_dtype_traits_of(wt)->name) != 0) || xt == TN_DTYPE_COUNT)
            continue;
        const bool w8 = wt == TN_DTYPE_W8A8;
        const size_t row = w8 ? TN_W8A8_ROW(n_in) : tn_dtype_row_size(wt, n_in);
        char *w = malloc(row * (size_t)n_out);
        for (int64_t r = 0; r < n_out; r++) {
            if (w8)
                tn_w8a8_quantize_row(src + r * n_in, w + row * (size_t)r, n_in);
            else if (!make_row(wt, src + r * n_in, n_in, w + row * (size_t)r, &s))
                return;
        }
        char *wx = tn_alloc_aligned(tn__x16_matrix_bytes(xt, n_in, n_out), 64);
        tn__x16_repack(wt, w, n_in, n_out, wx);
        for (size_t k = 0; k < TN_ARRAY_LEN(toks); k++) {
            mm_args a = {pool, w, row * (size_t)n_out, 1, wt, n_in, n_out, toks[k], x, y, wdata};
            mm_args b = {pool, wx, tn__x16_matrix_bytes(xt, n_in, n_out), 1, xt, n_in, n_out, toks[k], x, y, wdata};
            double ta = 1e30, tb = 1e30;
            for (int rep = 0; rep < 3; rep++) { /* alternate: the machine is shared */
                ta = TN_MIN(ta, time_matmul(&a));
                tb = TN_MIN(tb, time_matmul(&b));
            }
            const double fl = 2.0 * (double)(n_in * n_out * toks[k]) * 1e-9;
            printf("  %-5s  %8lld %8.1f %8.1f %8.2fx\n", tn_dtype_traits_of(wt)->name, (long long)toks[k], fl / ta,
                   fl / tb, ta / tb);
        }
        /* decode from a working set far above the caches */
        const size_t cold_bytes = (size_t)768 << 20, bw = row * (size_t)n_out,
                     bx = tn__x16_matrix_bytes(xt, n_in, n_out);
        const int nc = (int)(cold_bytes / bw) + 1;
        char *cw = malloc(bw * (size_t)nc), *cx = tn_alloc_aligned(bx * (size_t)nc, 64);
        for (int c = 0; c < nc; c++) {
            memcpy(cw + bw * (size_t)c, w, bw);
            memcpy(cx + bx * (size_t)c, wx, bx);
        }
        mm_args a = {pool, cw, bw, nc, wt, n_in, n_out, 1, x, y, wdata};
        mm_args b = {pool, cx, bx, nc, xt, n_in, n_out, 1, x, y, wdata};
        double ta = 1e30, tb = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            ta = TN_MIN(ta, time_matmul(&a));
            tb = TN_MIN(tb, time_matmul(&b));
        }
        printf("  %-5s  decode cold, GB/s of weights: block %.1f, x16 %.1f (%.2fx)\n", tn_dtype_traits_of(wt)->name,
               (double)bw / ta * 1e-9, (double)bx / tb * 1e-9, ta / tb);
        free(cw);
        tn_free_aligned(cx);
        free(w);
        tn_free_aligned(wx);
    }
    tn_free_aligned(wdata);
    free(src), free(x), free(y);
    tn_pool_free(pool);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        budget_s = atof(argv[1]);
    if (argc > 2 && strcmp(argv[2], "all") != 0)
        only_dtype = argv[2];
    if (argc > 3 && strcmp(argv[3], "all") != 0)
        only_isa = argv[3];
    printf("kern: best isa %s, %d cores\n\n", tn_isa_name(tn_kern_init()), tn_n_cores());
    if (argc > 4 && strncmp(argv[4], "x16", 3) == 0) { /* only the layout comparison */
        cpu_time = strcmp(argv[4], "x16cpu") == 0;
        bench_x16(TN_ISA_AVX512);
        bench_x16(TN_ISA_AVX2);
        return 0;
    }
    bench_pool();
    bench_matmul();
    bench_x16(TN_ISA_AVX512);
    bench_x16(TN_ISA_AVX2);
    return 0;
}
