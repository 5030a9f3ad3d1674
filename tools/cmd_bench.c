/*
 * cmd_bench.c — `tern bench`: prompt-processing and text-generation speed
 * of one or more models, in llama-bench's terms.
 *
 * Key idea: the two numbers that matter on a CPU, measured the way
 * llama-bench measures them so the two tools can be put side by side
 * (bench/compare-llamacpp.sh):
 *
 *   pp N  one forward call with a batch of N prompt tokens (only the last
 *         token's logits), from an empty cache: arithmetic-bound;
 *   tg N  N forward calls of one token each, from an empty cache:
 *         bound by memory bandwidth (every weight is read once per token).
 *
 * With -d D (llama-bench's -d) both tests start from a cache that already
 * holds D tokens of the sequence (pp D+1.., tg at positions D..): attention
 * at long context. The D tokens are prefilled untimed once per test, and
 * each run rewinds the cache to them (tn_kv_seq_truncate). The test is
 * then named e.g. "pp512 @ d2048", as llama-bench names it.
 *
 * Each test runs once untimed (warm-up: page cache, the pool's threads, the
 * CPU's clocks), then -r times; the table shows mean ± sample standard
 * deviation of tokens/s over the runs. Token ids are drawn from a fixed
 * pseudo-random sequence (the speed does not depend on them).
 *
 * Output: a Markdown table (default) or JSON (-o json) on stdout; progress
 * and errors on stderr. Exit codes: 0 ok, 1 failure, 2 usage error.
 */
#include "args.h"
#include "ep_tool.h"
#include "tools.h"

#include "base/pool.h"
#include "kern/repack.h"
#include "model/model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MODELS 16

typedef struct bench_opts {
    const char *models[MAX_MODELS];
    int n_models;
    int32_t n_prompt;  /* 0: no pp test */
    int32_t n_gen;     /* 0: no tg test */
    int32_t n_reps;
    int32_t n_threads; /* 0: all cores */
    tn_kv_type kv_type; /* --kv-type (default F32) */
    bool json;
    int32_t n_seqs;    /* tg: sequences decoded together (per rank under --ep) */
    int32_t depth;     /* -d: tokens already in the cache when a test starts */
    ep_opts ep;
} bench_opts;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tern bench -m MODEL.gguf [-m MODEL2.gguf ...] [options]\n"
            "\n"
            "Measures prompt processing (pp: one batch of P tokens) and text\n"
            "generation (tg: N single-token decode steps) in tokens/s, mean ± sd\n"
            "over R runs after one warm-up run, like llama-bench.\n"
            "\n"
            "  -m, --model PATH      GGUF model (repeatable, up to %d)\n"
            "  -p, --n-prompt P      prompt tokens (default 512; 0: skip pp)\n"
            "  -n, --n-gen N         generated tokens (default 128; 0: skip tg)\n"
            "  -r, --repetitions R   timed runs per test (default 5)\n"
            "  -d, --n-depth D       tokens already in the cache (context) when each\n"
            "                        test starts (default 0; prefilled untimed)\n"
            "  -t, --threads T       compute threads (default: all cores)\n"
            "      --kv-type T       KV-cache storage: f32 (default), f16, q8\n"
            "  -o, --output FMT      md (default) or json\n"
            "      --seqs S          tg: S sequences decode together, one token each\n"
            "                        per step (default 1; per rank under --ep)\n",
            MAX_MODELS);
    ep_usage(out);
    fprintf(out, "  -h, --help            this text\n"
                 "\n"
                 "With --ep N (under mpirun -np N) every rank runs the same tests on its own\n"
                 "sequences in lockstep (data-parallel attention, experts spread over the\n"
                 "ranks); rank 0 prints t/s summed over the ranks, every rank its resident\n"
                 "memory and the time its MoE layers spent in exchanges and in experts.\n");
}

/* 0 go on, 2 usage error (printed), -1 help printed. */
static int parse_args(int argc, char **argv, bench_opts *o)
{
    memset(o, 0, sizeof *o);
    o->n_prompt = 512;
    o->n_gen = 128;
    o->n_reps = 5;
    o->n_seqs = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return -1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tern bench: %s '%s'\n\n", a[0] == '-' ? "missing value after" : "unexpected argument", a);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        bool ok = true;
        const char *want = NULL;
        int epf = ep_parse_flag("tern bench", a, v, &o->ep);
        if (epf == 2)
            return 2;
        if (epf == 1)
            continue;
        if (!strcmp(a, "--seqs")) {
            if (!tn_arg_i32(v, 1, 4096, &o->n_seqs)) {
                fprintf(stderr, "tern bench: bad value '%s' for --seqs: want an integer in [1, 4096]\n", v);
                return 2;
            }
            continue;
        }
#define FLAG(s, l) (!strcmp(a, s) || !strcmp(a, l))
        if (FLAG("-m", "--model")) {
            ok = o->n_models < MAX_MODELS;
            want = "at most 16 models";
            if (ok)
                o->models[o->n_models++] = v;
        } else if (FLAG("-p", "--n-prompt")) {
            ok = tn_arg_i32(v, 0, 1 << 16, &o->n_prompt);
            want = "an integer in [0, 65536]";
        } else if (FLAG("-n", "--n-gen")) {
            ok = tn_arg_i32(v, 0, 1 << 16, &o->n_gen);
            want = "an integer in [0, 65536]";
        } else if (FLAG("-d", "--n-depth")) {
            ok = tn_arg_i32(v, 0, 1 << 20, &o->depth);
            want = "an integer in [0, 1048576]";
        } else if (FLAG("-r", "--repetitions")) {
            ok = tn_arg_i32(v, 1, 1000, &o->n_reps);
            want = "an integer in [1, 1000]";
        } else if (FLAG("-t", "--threads")) {
            ok = tn_arg_i32(v, 1, 4096, &o->n_threads);
            want = "an integer >= 1";
        } else if (!strcmp(a, "--kv-type")) {
            ok = tn_kv_type_from_name(v, &o->kv_type);
            want = "f32, f16 or q8";
        } else if (FLAG("-o", "--output")) {
            ok = !strcmp(v, "md") || !strcmp(v, "json");
            o->json = !strcmp(v, "json");
            want = "md or json";
        } else {
            fprintf(stderr, "tern bench: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
#undef FLAG
        if (!ok) {
            fprintf(stderr, "tern bench: bad value '%s' for %s: want %s\n", v, a, want);
            return 2;
        }
    }
    if (o->n_models == 0) {
        fprintf(stderr, "tern bench: -m MODEL is required\n\n");
        usage(stderr);
        return 2;
    }
    if (o->n_prompt == 0 && o->n_gen == 0) {
        fprintf(stderr, "tern bench: -p 0 and -n 0 leave nothing to measure\n");
        return 2;
    }
    return 0;
}

/* --- one model ---------------------------------------------------------------- */

typedef struct bench_model {
    tn_model *model;
    tn_pool *pool;
    tn_kv_cache *kv;
    tn_forward *fwd;
    int32_t *tok;             /* (n_ctx + n_seqs) */
    int32_t *pos, *seq, *kslot; /* (n_batch) */
    int32_t *slot;            /* (n_seqs) */
    bool *want;               /* (n_batch) */
    float *logits;            /* (n_seqs, n_vocab) */
    int32_t n_batch;
    int32_t n_ctx;            /* cache slots per sequence (depth + the longer test) */
    int32_t depth;            /* tokens of each sequence prefilled before a test */
    int32_t n_seqs;           /* tg sequences */
    ep_ctx ep;
} bench_model;

static void bench_model_free(bench_model *b)
{
    tn_forward_free(b->fwd);
    tn_kv_free(b->kv);
    tn_pool_free(b->pool);
    ep_leave(&b->ep);
    tn_model_free(b->model);
    free(b->tok);
    free(b->pos);
    free(b->seq);
    free(b->kslot);
    free(b->slot);
    free(b->want);
    free(b->logits);
    memset(b, 0, sizeof *b);
}

/* One forward call of tokens [start, start + n) of b->tok at positions
 * start.. of sequence seq (cache slots seq * n_ctx + pos), last token's
 * logits only. */
static tn_status step_seq(bench_model *b, int32_t seq, int32_t start, int32_t n)
{
    for (int32_t i = 0; i < n; i++) {
        b->pos[i] = start + i;
        b->seq[i] = seq;
        b->kslot[i] = seq * b->n_ctx + start + i;
        b->want[i] = i == n - 1;
    }
    tn_batch batch = {
        .n_tokens = n,
        .token = b->tok + start,
        .pos = b->pos,
        .seq_id = b->seq,
        .kv_slot = b->kslot,
        .want_logits = b->want,
    };
    return tn_forward_run(b->fwd, b->kv, b->pool, &batch, b->logits);
}

/* One decode step of b->n_seqs sequences: sequence s's token at position
 * pos (cache slot s * n_ctx + pos), every row's logits. */
static tn_status step_seqs(bench_model *b, int32_t pos)
{
    for (int32_t s = 0; s < b->n_seqs; s++) {
        b->pos[s] = pos;
        b->seq[s] = s;
        b->slot[s] = s * b->n_ctx + pos;
        b->want[s] = true;
    }
    tn_batch batch = {
        .n_tokens = b->n_seqs,
        .token = b->tok + pos,
        .pos = b->pos,
        .seq_id = b->seq,
        .kv_slot = b->slot,
        .want_logits = b->want,
    };
    return tn_forward_run(b->fwd, b->kv, b->pool, &batch, b->logits);
}

/* Seconds of one pp (gen == false: one batch of n) or tg (n steps of
 * n_seqs tokens) run from an empty cache; negative on failure (message in
 * tn_last_error). Under --ep the ranks start together (a barrier). */
static double run_test(bench_model *b, bool gen, int32_t n)
{
    const int32_t d = b->depth;
    for (int32_t s = 0; s < b->n_seqs; s++)
        tn_kv_seq_truncate(b->kv, s, d); /* back to the prefilled depth (an empty cache without -d) */
    if (b->ep.comm && tn_comm_barrier(b->ep.comm) != TN_OK)
        return -1;
    double t0 = tn_time_s();
    if (!gen) {
        if (step_seq(b, 0, d, n) != TN_OK)
            return -1;
    } else {
        for (int32_t i = 0; i < n; i++)
            if ((b->n_seqs > 1 ? step_seqs(b, d + i) : step_seq(b, 0, d + i, 1)) != TN_OK)
                return -1;
    }
    return tn_time_s() - t0;
}

/* Fills sequence 0 (pp) or all n_seqs sequences (tg) with the first depth
 * tokens, n_batch at a time, untimed. */
static tn_status prefill_depth(bench_model *b, bool gen)
{
    tn_kv_clear(b->kv);
    for (int32_t s = 0; s < (gen ? b->n_seqs : 1); s++)
        for (int32_t at = 0; at < b->depth; at += b->n_batch) {
            tn_status st = step_seq(b, s, at, TN_MIN(b->n_batch, b->depth - at));
            if (st != TN_OK)
                return st;
        }
    return TN_OK;
}

/* Model description for the table: "llama 1.1B q4_0", size, params. */
static void describe(const tn_model *m, char *name, size_t cap, double *gib, double *params)
{
    uint64_t bytes = 0, n = 0;
    for (int64_t i = 0; i < tn_gguf_n_tensors(m->gguf); i++) {
        const tn_gguf_tensor *t = tn_gguf_tensor_at(m->gguf, i);
        uint64_t ne = 1;
        for (int d = 0; d < t->n_dims; d++)
            ne *= (uint64_t)t->ne[d];
        bytes += t->nbytes;
        n += ne;
    }
    *gib = (double)bytes / (1024.0 * 1024.0 * 1024.0);
    *params = (double)n;
    const tn_dtype_traits *tr = tn_dtype_traits_of(tn__x16_file_dtype(m->layers[0].ffn_gate.type));
    if (n >= 1000000000ull)
        snprintf(name, cap, "%s %.1fB %s", m->hp.arch_name, (double)n / 1e9, tr ? tr->name : "?");
    else
        snprintf(name, cap, "%s %.0fM %s", m->hp.arch_name, (double)n / 1e6, tr ? tr->name : "?");
}

typedef struct result {
    char model[96];
    const char *path;
    double gib, params;
    const char *isa;
    int threads;
    char test[32];
    int32_t depth;
    int32_t n_tokens;
    double mean, sd; /* tokens/s */
    double *samples; /* (n_reps) tokens/s */
} result;

static void print_md_header(void)
{
    printf("| %-24s | %9s | %9s | %-10s | %7s | %8s | %20s |\n", "model", "size", "params", "backend", "threads", "test",
           "t/s");
    printf("| %-24s | %9s | %9s | %-10s | %7s | %8s | %20s |\n", "------------------------", "--------:", "--------:",
           "----------", "------:", "-------:", "-------------------:");
}

static void print_md_row(const result *r)
{
    char sz[32], pr[32], ts[48];
    snprintf(sz, sizeof sz, "%.2f GiB", r->gib);
    snprintf(pr, sizeof pr, "%.2f B", r->params / 1e9);
    snprintf(ts, sizeof ts, "%.2f ± %.2f", r->mean, r->sd);
    char be[24];
    snprintf(be, sizeof be, "CPU %s", r->isa);
    printf("| %-24s | %9s | %9s | %-10s | %7d | %8s | %20s |\n", r->model, sz, pr, be, r->threads, r->test, ts);
    fflush(stdout);
}

static void print_json_row(const result *r, int n_reps, bool first)
{
    printf("%s  {\"model\": \"%s\", \"model_path\": \"", first ? "" : ",\n", r->model);
    for (const char *p = r->path; *p; p++) {
        if (*p == '"' || *p == '\\')
            putchar('\\');
        putchar(*p);
    }
    printf("\", \"size_bytes\": %.0f, \"params\": %.0f, \"backend\": \"CPU\", \"isa\": \"%s\", \"threads\": %d, "
           "\"test\": \"%s\", \"n_prompt\": %d, \"n_gen\": %d, \"n_depth\": %d, \"avg_ts\": %.4f, \"stddev_ts\": %.4f, \"samples_ts\": [",
           r->gib * 1024 * 1024 * 1024, r->params, r->isa, r->threads, r->test, r->test[0] == 'p' ? r->n_tokens : 0,
           r->test[0] == 't' ? r->n_tokens : 0, r->depth, r->mean, r->sd);
    for (int i = 0; i < n_reps; i++)
        printf("%s%.4f", i ? ", " : "", r->samples[i]);
    printf("]}");
    fflush(stdout);
}

/* Runs both tests of one model; prints rows as they finish. Returns 0/1. */
static int bench_one(const bench_opts *o, const char *path, bool *first)
{
    bench_model b = {0};
    int rc = 1;
    double *samples = calloc((size_t)o->n_reps, sizeof(double));
    if (!samples) {
        fprintf(stderr, "tern bench: out of memory\n");
        return 1;
    }
    const tn_model_opts mo = ep_model_opts(&o->ep);
    if (tn_model_load_opts(path, &mo, &b.model) != TN_OK) {
        fprintf(stderr, "tern bench: cannot load %s: %s\n", path, tn_last_error());
        goto out;
    }
    const tn_hparams *hp = &b.model->hp;
    int32_t n_ctx = o->depth + (o->n_prompt > o->n_gen ? o->n_prompt : o->n_gen);
    /* the depth prefill goes in batches of up to 512 tokens even for tg */
    b.n_batch = TN_MAX(TN_MAX(TN_MAX(o->n_prompt, 1), o->n_seqs), TN_MIN(o->depth, 512));
    b.n_ctx = n_ctx;
    b.depth = o->depth;
    b.n_seqs = o->n_seqs;
    if (ep_join("tern bench", &o->ep, b.model, b.n_batch, &b.ep) != 0)
        goto out;
    const int32_t n_threads = ep_threads(&b.ep, o->n_threads);
    const int32_t n_slots = n_ctx * o->n_seqs;
    if (tn_pool_new(n_threads, &b.pool) != TN_OK ||
        tn_kv_new_typed(b.model, n_slots, o->n_seqs, o->kv_type, &b.kv) != TN_OK ||
        tn_forward_new(b.model, b.n_batch, &b.fwd) != TN_OK || ep_attach("tern bench", &b.ep, b.fwd) != 0) {
        fprintf(stderr, "tern bench: %s: %s\n", path, tn_last_error());
        goto out;
    }
    /* step_seqs reads n_seqs tokens from the last position on */
    const int32_t n_tok = n_ctx + o->n_seqs;
    b.tok = malloc((size_t)n_tok * sizeof *b.tok);
    b.pos = malloc((size_t)b.n_batch * sizeof *b.pos);
    b.seq = malloc((size_t)b.n_batch * sizeof *b.seq);
    b.kslot = malloc((size_t)b.n_batch * sizeof *b.kslot);
    b.slot = malloc((size_t)o->n_seqs * sizeof *b.slot);
    b.want = malloc((size_t)b.n_batch * sizeof *b.want);
    b.logits = malloc((size_t)o->n_seqs * (size_t)hp->n_vocab * sizeof *b.logits);
    if (!b.tok || !b.pos || !b.seq || !b.kslot || !b.slot || !b.want || !b.logits) {
        fprintf(stderr, "tern bench: out of memory\n");
        goto out;
    }
    uint32_t s = 12345;
    for (int32_t i = 0; i < n_tok; i++) {
        s = s * 1664525u + 1013904223u;
        b.tok[i] = (int32_t)((s >> 8) % (uint32_t)hp->n_vocab);
    }

    result r = {.path = path,
                .isa = tn_isa_name(tn_kern_isa()),
                .threads = tn_pool_size(b.pool),
                .samples = samples,
                .depth = o->depth};
    describe(b.model, r.model, sizeof r.model, &r.gib, &r.params);
    for (int test = 0; test < 2; test++) {
        const bool gen = test == 1;
        const int32_t n = gen ? o->n_gen : o->n_prompt;
        if (n == 0)
            continue;
        if (gen && o->n_seqs > 1)
            snprintf(r.test, sizeof r.test, "tg%dx%d", (int)n, (int)o->n_seqs);
        else
            snprintf(r.test, sizeof r.test, "%s%d", gen ? "tg" : "pp", (int)n);
        if (o->depth > 0) {
            const size_t at = strlen(r.test);
            snprintf(r.test + at, sizeof r.test - at, " @ d%d", (int)o->depth);
        }
        r.n_tokens = n;
        /* tokens per run over all ranks: the ranks run the same test in lockstep */
        const double n_all = (double)n * (gen ? o->n_seqs : 1) * b.ep.size;
        fprintf(stderr, "tern bench: %s %s ...\n", r.model, r.test);
        if (prefill_depth(&b, gen) != TN_OK) {
            fprintf(stderr, "tern bench: %s %s: depth prefill: %s\n", path, r.test, tn_last_error());
            goto out;
        }
        if (run_test(&b, gen, n) < 0) { /* warm-up */
            fprintf(stderr, "tern bench: %s %s: %s\n", path, r.test, tn_last_error());
            goto out;
        }
        double sum = 0, sq = 0;
        if (b.ep.ep)
            tn_ep_reset_timing(b.ep.ep);
        uint64_t jobs0, sleeps0, jobs1, sleeps1;
        tn_pool_counters(b.pool, &jobs0, &sleeps0);
        for (int i = 0; i < o->n_reps; i++) {
            double t = run_test(&b, gen, n);
            if (t < 0) {
                fprintf(stderr, "tern bench: %s %s: %s\n", path, r.test, tn_last_error());
                goto out;
            }
            samples[i] = n_all / t;
            sum += samples[i];
        }
        tn_pool_counters(b.pool, &jobs1, &sleeps1);
        tn_log(TN_LOG_INFO, "tern bench: %s: %.1f parallel jobs and %.2f worker sleeps per %s\n", r.test,
               (double)(jobs1 - jobs0) / ((double)o->n_reps * (gen ? n : 1)),
               (double)(sleeps1 - sleeps0) / ((double)o->n_reps * (gen ? n : 1)), gen ? "step" : "run");
        r.mean = sum / o->n_reps;
        for (int i = 0; i < o->n_reps; i++)
            sq += (samples[i] - r.mean) * (samples[i] - r.mean);
        r.sd = o->n_reps > 1 ? sqrt(sq / (o->n_reps - 1)) : 0.0;
        if (b.ep.ep) {
            tn_ep_timing et = tn_ep_get_timing(b.ep.ep);
            const double steps = (double)o->n_reps * (gen ? n : 1);
            tn_log(TN_LOG_INFO,
                   "tern bench: rank %d/%d %s: per step %.2f ms in MoE exchanges, %.2f ms in experts (%lld layer calls)\n",
                   b.ep.rank, b.ep.size, r.test, 1e3 * et.comm_s / steps, 1e3 * et.compute_s / steps,
                   (long long)et.n_calls);
        }
        if (b.ep.rank > 0)
            continue; /* rank 0 prints the table */
        if (o->json)
            print_json_row(&r, o->n_reps, *first);
        else
            print_md_row(&r);
        *first = false;
    }
    ep_report("tern bench", &b.ep);
    rc = 0;
out:
    free(samples);
    bench_model_free(&b);
    return rc;
}

/* `tern bench`: returns the exit status (0 ok, 1 failure, 2 usage). */
int tn_cmd_bench(int argc, char **argv)
{
    bench_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    if (o.ep.n_ep > 0 && o.n_models > 1) {
        fprintf(stderr, "tern bench: --ep takes one model (an MPI job starts MPI once)\n");
        return 2;
    }
    /* Under --ep only rank 0 writes stdout (OMPI_COMM_WORLD_RANK is set
     * before MPI starts; ep_join checks the job itself). */
    const char *rank_env = getenv("OMPI_COMM_WORLD_RANK");
    const bool quiet = o.ep.n_ep > 0 && rank_env && strcmp(rank_env, "0") != 0;
    bool first = true;
    if (quiet)
        ;
    else if (o.json)
        printf("[\n");
    else
        print_md_header();
    for (int i = 0; i < o.n_models && rc == 0; i++)
        rc = bench_one(&o, o.models[i], &first);
    if (o.json && !quiet)
        printf("\n]\n");
    return rc;
}
