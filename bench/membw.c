/*
 * membw.c — the machine's read bandwidth, and what it allows a decode step.
 *
 * Key idea: decoding one token reads every weight matrix once (DESIGN.md,
 * the batched forward), so on a CPU the fastest possible generation speed is
 *
 *     ceiling (tokens/s) = read bandwidth (bytes/s) / bytes read per token
 *
 * This program measures the first with the same thread pool tern computes
 * with (a streaming read of a buffer much larger than the last-level cache,
 * best of N runs), counts the second from a model's tensor table (every
 * matrix of every layer plus the output matrix and the norms; one row of the
 * embedding table; the KV cache is left out: at short contexts it is a few
 * MB), and — unless -n 0 — runs tern's own decode on the model to report
 * its share of the ceiling.
 *
 *   bench/membw [-t THREADS] [-s MIB] [-r REPS] [-m MODEL.gguf [-n TOKENS]]
 *
 * Build: the `membw` target of the CMake build (build/membw). Prints a
 * table; asserts nothing (a benchmark is not a test).
 *
 * LIMITATIONS: a VM shared with other jobs has a bandwidth that drifts by a
 * factor of two within minutes; run it right next to the measurement it
 * is compared with, and alternate.
 */
#include "base/pool.h"
#include "kern/repack.h"
#include "model/model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* --- the read kernel -------------------------------------------------------- */

typedef struct read_job {
    const char *buf;
    size_t bytes; /* a multiple of 256 * threads */
    uint64_t sink[64];
} read_job;

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static uint64_t read_avx512(const char *p, size_t n)
{
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t o = 0; o < n; o += 256) {
        s0 = _mm512_add_epi64(s0, _mm512_load_si512(p + o));
        s1 = _mm512_add_epi64(s1, _mm512_load_si512(p + o + 64));
        s2 = _mm512_add_epi64(s2, _mm512_load_si512(p + o + 128));
        s3 = _mm512_add_epi64(s3, _mm512_load_si512(p + o + 192));
    }
    return (uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3)));
}

__attribute__((target("avx2"))) static uint64_t read_avx2(const char *p, size_t n)
{
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t o = 0; o < n; o += 128) {
        s0 = _mm256_add_epi64(s0, _mm256_load_si256((const __m256i *)(p + o)));
        s1 = _mm256_add_epi64(s1, _mm256_load_si256((const __m256i *)(p + o + 32)));
        s2 = _mm256_add_epi64(s2, _mm256_load_si256((const __m256i *)(p + o + 64)));
        s3 = _mm256_add_epi64(s3, _mm256_load_si256((const __m256i *)(p + o + 96)));
    }
    s0 = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
    uint64_t v[4];
    memcpy(v, &s0, sizeof v);
    return v[0] + v[1] + v[2] + v[3];
}
#endif

static uint64_t read_scalar(const char *p, size_t n)
{
    uint64_t s = 0;
    for (size_t o = 0; o < n; o += 64) {
        uint64_t v;
        memcpy(&v, p + o, 8);
        s += v;
    }
    return s;
}

static uint64_t (*read_fn)(const char *, size_t) = read_scalar;

static void read_run(void *ctx, int ith, int nth)
{
    read_job *j = ctx;
    const size_t share = j->bytes / (size_t)nth;
    j->sink[ith % 64] += read_fn(j->buf + share * (size_t)ith, share);
}

/* Best-of-reps read bandwidth in bytes/s of a buffer of mib MiB. */
static double measure_bw(tn_pool *pool, size_t mib, int reps)
{
    const int nth = tn_pool_size(pool);
    const size_t unit = 256 * (size_t)nth;
    const size_t bytes = (mib << 20) / unit * unit;
    char *buf = tn_alloc_huge(bytes); /* the pages the repacked weights get (TERN_THP=0: 4 KiB) */
    if (!buf)
        return 0;
    memset(buf, 1, bytes); /* fault every page in before timing */
    read_job j = {.buf = buf, .bytes = bytes};
    tn_pool_run(pool, read_run, &j); /* warm: threads spinning */
    double best = 0;
    for (int r = 0; r < reps; r++) {
        const double t0 = tn_time_s();
        tn_pool_run(pool, read_run, &j);
        const double bw = (double)bytes / (tn_time_s() - t0);
        best = bw > best ? bw : best;
    }
    tn_free_aligned(buf);
    return best;
}

/* --- the model side -------------------------------------------------------------- */

static double wbytes(const tn_weight *w)
{
    if (!w->data)
        return 0;
    if (tn__dtype_is_x16(w->type)) /* repacked at load: 16-row groups, n_out padded */
        return (double)tn__x16_matrix_bytes(w->type, w->ne[0], w->ne[1]);
    return (double)tn_dtype_row_size(w->type, w->ne[0]) * (double)w->ne[1];
}

/* Bytes one decode step reads from the weights. */
static double bytes_per_token(const tn_model *m)
{
    double b = wbytes(&m->output) + wbytes(&m->output_norm);
    b += (double)tn_dtype_row_size(m->tok_embd.type, m->tok_embd.ne[0]); /* one embedding row */
    for (int l = 0; l < m->hp.n_layer; l++) {
        const tn_layer *ly = &m->layers[l];
        const tn_weight *ws[] = {&ly->attn_norm, &ly->wq, &ly->wk,       &ly->wv,     &ly->bq,      &ly->bk,
                                 &ly->bv,        &ly->q_norm, &ly->k_norm, &ly->wo, &ly->ffn_norm, &ly->ffn_gate,
                                 &ly->ffn_up,    &ly->ffn_down};
        for (size_t i = 0; i < TN_ARRAY_LEN(ws); i++)
            b += wbytes(ws[i]);
    }
    return b;
}

/* tern's decode: n single-token steps from an empty cache (after one
 * untimed warm-up pass); tokens/s, or a negative value on failure. */
static double decode_tps(const tn_model *m, tn_pool *pool, int n)
{
    tn_kv_cache *kv = NULL;
    tn_forward *f = NULL;
    float *logits = malloc((size_t)m->hp.n_vocab * sizeof(float));
    double tps = -1;
    if (!logits || tn_kv_new(m, n, 1, &kv) != TN_OK || tn_forward_new(m, 1, &f) != TN_OK)
        goto out;
    for (int pass = 0; pass < 2; pass++) {
        tn_kv_clear(kv);
        const double t0 = tn_time_s();
        for (int32_t i = 0; i < n; i++) {
            const int32_t tok = (int32_t)((i * 2654435761u) % (uint32_t)m->hp.n_vocab), seq = 0;
            const bool want = true;
            tn_batch b = {.n_tokens = 1, .token = &tok, .pos = &i, .seq_id = &seq, .kv_slot = &i, .want_logits = &want};
            if (tn_forward_run(f, kv, pool, &b, logits) != TN_OK)
                goto out;
        }
        tps = n / (tn_time_s() - t0);
    }
out:
    tn_forward_free(f);
    tn_kv_free(kv);
    free(logits);
    return tps;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: membw [-t THREADS (2)] [-s MIB (1024)] [-r REPS (10)] [-m MODEL.gguf [-n TOKENS (32)]]\n");
}

int main(int argc, char **argv)
{
    int threads = 2, reps = 10, n_tok = 32;
    size_t mib = 1024;
    const char *model = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        const char *a = argv[i], *v = argv[++i];
        char *end;
        errno = 0;
        const long x = strtol(v, &end, 10);
        const bool num_ok = !errno && *end == 0 && x >= 0 && x <= (1L << 20);
        if (!strcmp(a, "-m")) {
            model = v;
        } else if (num_ok && !strcmp(a, "-t") && x >= 1) {
            threads = (int)x;
        } else if (num_ok && !strcmp(a, "-s") && x >= 1) {
            mib = (size_t)x;
        } else if (num_ok && !strcmp(a, "-r") && x >= 1) {
            reps = (int)x;
        } else if (num_ok && !strcmp(a, "-n")) {
            n_tok = (int)x;
        } else {
            fprintf(stderr, "membw: bad option %s %s\n", a, v);
            usage(stderr);
            return 2;
        }
    }
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f"))
        read_fn = read_avx512;
    else if (__builtin_cpu_supports("avx2"))
        read_fn = read_avx2;
#endif
    tn_pool *pool;
    if (tn_pool_new(threads, &pool) != TN_OK) {
        fprintf(stderr, "membw: %s\n", tn_last_error());
        return 1;
    }
    const double bw = measure_bw(pool, mib, reps);
    printf("read bandwidth: %.1f GB/s (%d threads, %zu MiB buffer, best of %d)\n", bw * 1e-9, tn_pool_size(pool),
           mib, reps);
    int rc = 0;
    if (model) {
        tn_model *m;
        if (tn_model_load(model, &m) != TN_OK) {
            fprintf(stderr, "membw: %s\n", tn_last_error());
            tn_pool_free(pool);
            return 1;
        }
        const double b = bytes_per_token(m);
        printf("model: %s: %.1f MB read per decoded token\n", model, b * 1e-6);
        printf("decode ceiling: %.1f tokens/s\n", bw / b);
        if (n_tok > 0) {
            const double tps = decode_tps(m, pool, n_tok);
            if (tps < 0) {
                fprintf(stderr, "membw: decode failed: %s\n", tn_last_error());
                rc = 1;
            } else {
                const double bw2 = measure_bw(pool, mib, reps); /* again: the VM drifts */
                printf("tern decode (tg%d): %.1f tokens/s = %.0f%% of the ceiling (%.0f%% against the bandwidth "
                       "re-measured right after: %.1f GB/s)\n",
                       n_tok, tps, 100 * tps / (bw / b), 100 * tps / (bw2 / b), bw2 * 1e-9);
            }
        }
        tn_model_free(m);
    }
    tn_pool_free(pool);
    return rc;
}
