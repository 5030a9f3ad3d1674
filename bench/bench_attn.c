/*
 * bench_attn.c — attention's kernels per ISA: the materialized path that
 * attention used before (tn_dot_*_rows, tn_softmax, tn_axpy_*_rows per
 * query head) against kern/attn.h's tiled online softmax (tn_attn_group
 * for one token, tn_attn_block for a block of prefill tokens). Prints a
 * table of microseconds of CPU time of the calling thread per call (one
 * thread; CLOCK_THREAD_CPUTIME_ID, so time the thread spends descheduled
 * on a loaded machine does not count). Asserts nothing.
 *
 * Shapes are TinyLlama's: head_dim 64, 8 query heads per K/V head; one
 * call covers one K/V head. "decode" is one token seeing n cells; "prefill"
 * is 8 consecutive tokens seeing n-7 .. n cells (per token in the table).
 *
 *   build/bench_attn [n cells, default 2048] [seconds per row, default 0.3]
 */
#include "kern/attn.h"
#include "kern/kern.h"
#include "kern/kvrows.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HD 64
#define G 8

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct ctx {
    int type; /* 0 f32, 1 f16, 2 q8 */
    int n;
    float *kf, *vf;
    uint16_t *kh, *vh;
    int8_t *ki, *vi;
    float *ks, *vs;
    int32_t *idx;
    float *q, *out, *sc, *scratch;
} ctx;

/* The materialized path for one token: G heads, scores of all n cells. */
static void old_path(ctx *c, int n, const float *q, float *out)
{
    for (int g = 0; g < G; g++) {
        const float *qg = q + g * HD;
        float *o = out + g * HD;
        if (c->type == 0) {
            tn_dot_f32_rows(qg, c->kf, c->idx, HD, n, HD, 0.125f, c->sc);
            tn_softmax(c->sc, n);
            tn_axpy_f32_rows(o, c->sc, c->vf, c->idx, HD, n, HD);
        } else if (c->type == 1) {
            tn_dot_f16_rows(qg, c->kh, c->idx, HD, n, HD, 0.125f, c->sc);
            tn_softmax(c->sc, n);
            tn_axpy_f16_rows(o, c->sc, c->vh, c->idx, HD, n, HD);
        } else {
            tn_dot_q8_rows(qg, c->ki, c->ks, c->idx, HD, 1, n, HD, 0.125f, c->sc);
            tn_softmax(c->sc, n);
            tn_axpy_q8_rows(o, c->sc, c->vi, c->vs, c->idx, HD, 1, n, HD);
        }
    }
}

static tn_attn_kv view(const ctx *c)
{
    tn_attn_kv kv = {.stride = HD, .sstride = 1, .hd_k = HD, .hd_v = HD};
    if (c->type == 0) {
        kv.type = TN_DTYPE_F32, kv.k = c->kf, kv.v = c->vf;
    } else if (c->type == 1) {
        kv.type = TN_DTYPE_F16, kv.k = c->kh, kv.v = c->vh;
    } else {
        kv.type = TN_DTYPE_I8, kv.k = c->ki, kv.v = c->vi, kv.ks = c->ks, kv.vs = c->vs;
    }
    return kv;
}

/* mode 0: old decode, 1: new decode, 2: old prefill (8 tokens), 3: new prefill. */
static void run(ctx *c, int mode)
{
    const tn_attn_kv kv = view(c);
    if (mode == 0) {
        old_path(c, c->n, c->q, c->out);
    } else if (mode == 1) {
        tn_attn_group(&kv, c->idx, c->n, c->q, HD, G, 0.125f, c->out, HD, c->scratch);
    } else if (mode == 2) {
        for (int i = 0; i < 8; i++)
            old_path(c, c->n - 7 + i, c->q + i * G * HD, c->out + i * G * HD);
    } else {
        int64_t nv[8];
        for (int i = 0; i < 8; i++)
            nv[i] = c->n - 7 + i;
        tn_attn_block(&kv, c->idx, nv, 8, c->q, G * HD, HD, G, 0.125f, c->out, G * HD, HD, c->scratch);
    }
}

/* CPU microseconds per call, best of 3 timings of budget/3 each. */
static double time_us(ctx *c, int mode, double budget)
{
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        int calls = 0;
        const double t0 = cpu_s();
        double t;
        do {
            run(c, mode);
            calls++;
        } while ((t = cpu_s() - t0) < budget / 3);
        best = t / calls < best ? t / calls : best;
    }
    return best * 1e6;
}

int main(int argc, char **argv)
{
    const int n = argc > 1 ? atoi(argv[1]) : 2048;
    const double budget = argc > 2 ? atof(argv[2]) : 0.3;
    if (n < 8) {
        fprintf(stderr, "bench_attn: n must be >= 8\n");
        return 2;
    }
    ctx c = {.n = n};
    const size_t rows = (size_t)n * HD;
    c.kf = malloc(rows * 4), c.vf = malloc(rows * 4);
    c.kh = malloc(rows * 2), c.vh = malloc(rows * 2);
    c.ki = malloc(rows), c.vi = malloc(rows);
    c.ks = malloc((size_t)n * 4), c.vs = malloc((size_t)n * 4);
    c.idx = malloc((size_t)n * 4);
    c.q = malloc(8 * G * HD * 4), c.out = malloc(8 * G * HD * 4), c.sc = malloc((size_t)n * 4);
    c.scratch = tn_alloc_aligned(tn_attn_scratch_floats(HD, HD) * 4, 64);
    if (!c.kf || !c.vf || !c.kh || !c.vh || !c.ki || !c.vi || !c.ks || !c.vs || !c.idx || !c.q || !c.out || !c.sc ||
        !c.scratch) {
        fprintf(stderr, "bench_attn: out of memory\n");
        return 1;
    }
    uint32_t s = 1;
    for (size_t i = 0; i < rows; i++) {
        s = s * 1664525u + 1013904223u;
        c.kf[i] = (float)((s >> 8) & 0xffff) / 32768.0f - 1.0f;
        s = s * 1664525u + 1013904223u;
        c.vf[i] = (float)((s >> 8) & 0xffff) / 32768.0f - 1.0f;
        c.kh[i] = tn_fp32_to_fp16(c.kf[i]);
        c.vh[i] = tn_fp32_to_fp16(c.vf[i]);
    }
    for (int r = 0; r < n; r++) {
        tn_quantize_row_kv_q8(c.kf + (size_t)r * HD, c.ki + (size_t)r * HD, &c.ks[r], HD);
        tn_quantize_row_kv_q8(c.vf + (size_t)r * HD, c.vi + (size_t)r * HD, &c.vs[r], HD);
        c.idx[r] = r;
    }
    for (int i = 0; i < 8 * G * HD; i++)
        c.q[i] = (float)(i % 17) / 17.0f - 0.5f;

    static const char *tn[] = {"f32", "f16", "q8"};
    printf("n = %d cells, head_dim %d, %d query heads per K/V head; CPU us per K/V head and token\n\n", n, HD, G);
    printf("| isa    | kv  | decode old | decode new | ratio | prefill old | prefill new | ratio |\n");
    printf("|--------|-----|-----------:|-----------:|------:|------------:|------------:|------:|\n");
    for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++) {
        if (!tn_kern_set_isa((tn_isa)isa))
            continue;
        for (int t = 0; t < 3; t++) {
            c.type = t;
            const double d0 = time_us(&c, 0, budget), d1 = time_us(&c, 1, budget);
            const double p0 = time_us(&c, 2, budget) / 8, p1 = time_us(&c, 3, budget) / 8;
            printf("| %-6s | %-3s | %10.1f | %10.1f | %5.2f | %11.1f | %11.1f | %5.2f |\n", tn_isa_name((tn_isa)isa),
                   tn[t], d0, d1, d0 / d1, p0, p1, p0 / p1);
            fflush(stdout);
        }
    }
    return 0;
}
