/*
 * bench_w8a8.c — prefill matmul speed of W8A8 against Q8_0 on TinyLlama-1.1B
 * shapes, alternating them so all see the same machine load; the best of
 * each is printed (the figure least disturbed by other processes). Where
 * the ISA has the x16 kernels (AVX-512 VNNI) Q8_0 and W8A8 run in the x16
 * layouts the model loader gives them (kern/repack.h, kern/w8a8_x16.h),
 * and W8A8 also in its file layout (column w8a8f). Asserts nothing.
 *
 *   cmake --build build-rel --target tern_kern
 *   gcc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc bench/bench_w8a8.c \
 *       build-rel/libtern_kern.a build-rel/libtern_base.a -lpthread -lm -o /tmp/bench_w8a8
 *   /tmp/bench_w8a8 [n_tokens, default 512] [rounds, default 5] [threads, default all]
 *
 * With 1 thread the time is the thread's CPU time (robust on a loaded machine).
 */
#include "kern/kern_impl.h"
#include "kern/repack.h"
#include "kern/w8a8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* With one thread: CPU time of this thread, which leaves out the time other
 * processes of a loaded machine hold the core; else wall time. */
static bool g_cpu_clock;
static double now_s(void)
{
    if (!g_cpu_clock)
        return tn_time_s();
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float frand(uint64_t *s)
{
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return (float)((int)(*s >> 40 & 0xffff) - 32768) / 32768.0f;
}

int main(int argc, char **argv)
{
    const int64_t nt = argc > 1 ? atoi(argv[1]) : 512;
    const int rounds = argc > 2 ? atoi(argv[2]) : 5;
    const int threads = argc > 3 ? atoi(argv[3]) : tn_n_cores();
    tn_kern_init();
    g_cpu_clock = threads == 1;
    tn_pool *pool;
    if (tn_pool_new(threads, &pool) != TN_OK)
        return 1;
    /* TinyLlama-1.1B: q (2048x2048), k/v (2048->256), gate/up (2048->5632), down (5632->2048). */
    const int64_t shapes[][2] = {{2048, 2048}, {2048, 256}, {2048, 5632}, {5632, 2048}, {2048, 8}};
    printf("isa %s, %d threads, %lld tokens, best of %d alternations, %s (GOP/s = 2 n_in n_out n_tokens / s)\n",
           tn_isa_name(tn__kern_ops_cur()->isa), threads, (long long)nt, rounds,
           g_cpu_clock ? "thread CPU time" : "wall time");
    const tn_dtype qt = tn__x16_dtype_for(TN_DTYPE_Q8_0) != TN_DTYPE_COUNT ? TN_DTYPE_Q8_0X16 : TN_DTYPE_Q8_0;
    const tn_dtype wt = tn__x16_dtype_for(TN_DTYPE_W8A8) != TN_DTYPE_COUNT ? TN_DTYPE_W8A8X16 : TN_DTYPE_W8A8;
    printf("q8_0 as %s, w8a8 as %s\n", qt == TN_DTYPE_Q8_0 ? "q8_0" : "q8_0x16", wt == TN_DTYPE_W8A8 ? "w8a8" : "w8a8x16");
    printf("  n_in  n_out     q8_0   w8a8  w8a8f   w8a8/q8_0\n");
    uint64_t seed = 88172645463325252ull;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t n_in = shapes[s][0], n_out = shapes[s][1];
        float *wf = malloc(sizeof(float) * (size_t)n_in), *x = malloc(sizeof(float) * (size_t)(n_in * nt));
        float *y = malloc(sizeof(float) * (size_t)(n_out * nt));
        char *wq = malloc(tn_dtype_row_size(TN_DTYPE_Q8_0, n_in) * (size_t)n_out);
        char *w8 = malloc(TN_W8A8_ROW(n_in) * (size_t)n_out);
        for (int64_t r = 0; r < n_out; r++) {
            for (int64_t j = 0; j < n_in; j++)
                wf[j] = frand(&seed);
            if (tn_quantize_row(TN_DTYPE_Q8_0, wf, wq + tn_dtype_row_size(TN_DTYPE_Q8_0, n_in) * (size_t)r, n_in))
                return 1;
            tn_w8a8_quantize_row(wf, w8 + TN_W8A8_ROW(n_in) * (size_t)r, n_in);
        }
        for (int64_t i = 0; i < n_in * nt; i++)
            x[i] = frand(&seed);
        void *wqx = wq, *w8x = w8;
        if (qt != TN_DTYPE_Q8_0) {
            wqx = tn_alloc_aligned(tn__x16_matrix_bytes(qt, n_in, n_out), 64);
            tn__x16_repack(TN_DTYPE_Q8_0, wq, n_in, n_out, wqx);
        }
        if (wt != TN_DTYPE_W8A8) {
            w8x = tn_alloc_aligned(tn__x16_matrix_bytes(wt, n_in, n_out), 64);
            tn__x16_repack(TN_DTYPE_W8A8, w8, n_in, n_out, w8x);
        }
        const void *ws[3] = {wqx, w8x, w8};
        const tn_dtype ts[3] = {qt, wt, TN_DTYPE_W8A8};
        size_t wsz = 0;
        for (int v = 0; v < 3; v++)
            wsz = TN_MAX(wsz, tn_matmul_wsize(ts[v], n_in, nt));
        void *wd = tn_alloc_aligned(wsz, 64);
        double best[3] = {1e30, 1e30, 1e30};
        for (int k = 0; k < rounds; k++) {
            for (int v = 0; v < 3; v++) {
                double t0 = now_s();
                tn_matmul(pool, ws[v], ts[v], n_in, n_out, x, nt, y, wd);
                double dt = now_s() - t0;
                if (dt < best[v])
                    best[v] = dt;
            }
        }
        const double ops = 2.0 * (double)n_in * (double)n_out * (double)nt / 1e9;
        printf("  %5lld %6lld  %7.1f %6.1f %6.1f   %.2f\n", (long long)n_in, (long long)n_out, ops / best[0],
               ops / best[1], ops / best[2], best[0] / best[1]);
        if (wqx != wq)
            tn_free_aligned(wqx);
        if (w8x != w8)
            tn_free_aligned(w8x);
        free(wf), free(x), free(y), free(wq), free(w8);
        tn_free_aligned(wd);
    }
    tn_pool_free(pool);
    return 0;
}
