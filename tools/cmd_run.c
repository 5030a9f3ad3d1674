/*
 * cmd_run.c — `tern run`: generate text from a prompt with one model on
 * this machine's CPU.
 *
 * Key idea: the simplest client of the batched forward. One sequence, a KV
 * cache of --ctx slots with slot = position, the prompt prefilled in chunks
 * of up to --batch tokens (only the last token's logits are computed), then
 * one forward call per generated token. stdout carries exactly the prompt
 * and the generated text, streamed token by token through the UTF-8-safe
 * detokenizer; everything else (load information, the seed, timings) goes
 * to stderr, so `tern run ... > out.txt` captures the text alone.
 *
 * THE PROMPT ECHO. llama.cpp prints the prompt by detokenizing its tokens,
 * not by copying the argument: with an SPM vocabulary the first word's
 * token carries the leading-space marker, so "Once upon a time" is echoed
 * as " Once upon a time" (see ../shared/data/models/stories260K/
 * llamacpp-greedy-64.txt, whose blocks start with 0x20). We do the same:
 * the echo is the detokenized prompt tokens (BOS renders as nothing), so
 * stdout is byte-for-byte what llama.cpp prints for the same tokens.
 *
 * Exit codes: 0 success, 1 a failure while running (the model cannot be
 * loaded, the prompt does not fit the context, stdout cannot be written),
 * 2 a usage error (unknown flag, missing or malformed value).
 */
#include "args.h"
#include "ep_tool.h"
#include "tools.h"

#include "base/pool.h"
#include "engine/sample.h"
#include "model/model.h"
#include "tok/tok.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_BATCH 512

typedef struct run_opts {
    const char *model;
    const char *prompt;
    int32_t n_predict;       /* -1: until end of generation or the context is full */
    int32_t n_threads;       /* 0: all cores */
    int32_t n_ctx;           /* 0: min(n_ctx_train, prompt + n_predict) */
    int32_t n_batch;
    tn_kv_type kv_type;      /* --kv-type (default F32) */
    const char *moe_stats;   /* --moe-stats FILE: routing statistics written at exit, or NULL */
    bool seed_given;
    tn_sample_params sp;
    ep_opts ep;
} run_opts;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tern run -m MODEL.gguf -p PROMPT [options]\n"
            "\n"
            "Generates text after PROMPT. stdout receives the prompt (as its tokens\n"
            "detokenize) followed by the generated text, streamed; logs and timings go\n"
            "to stderr.\n"
            "\n"
            "  -m, --model PATH          GGUF model file (required)\n"
            "  -p, --prompt TEXT         the prompt (required; BOS is added if the\n"
            "                            vocabulary says so)\n"
            "  -n, --n-predict N         tokens to generate (default 128; -1: until\n"
            "                            end of generation or a full context)\n"
            "      --temp T              temperature (default 0.8; <= 0: greedy)\n"
            "      --top-k K             keep the K most likely tokens (default 40; 0: off)\n"
            "      --top-p P             nucleus sampling (default 0.95; 1: off)\n"
            "      --min-p P             drop tokens below P * p(best) (default 0.05; 0: off)\n"
            "      --repeat-penalty R    penalize repeated tokens (default 1: off)\n"
            "      --presence-penalty P  subtract P from repeated tokens (default 0)\n"
            "      --frequency-penalty F subtract F per repetition (default 0)\n"
            "      --repeat-last-n N     tokens the penalties look back (default 64;\n"
            "                            0: off, -1: all)\n"
            "  -s, --seed S              RNG seed (default: random, printed on stderr)\n"
            "  -t, --threads N           compute threads (default: all cores)\n"
            "  -c, --ctx N               KV-cache size in tokens (default:\n"
            "                            min(training context, prompt + N))\n"
            "  -b, --batch N             prompt tokens per forward call (default 512)\n"
            "      --kv-type T           KV-cache storage: f32 (default), f16, q8\n"
            "      --moe-stats FILE      write the MoE routing statistics at exit (CSV if\n"
            "                            FILE ends in .csv, else JSON; docs/moe.md)\n");
    ep_usage(out);
    fprintf(out, "  -h, --help                this text\n"
                 "\n"
                 "With --ep N (under mpirun -np N) rank 0 runs the prompt and prints; the\n"
                 "other ranks hold their share of the experts and step along.\n"
                 "\n"
                 "Exit status: 0 success, 1 failure (model, context, output, a rank lost),\n"
                 "2 usage error.\n");
}

/* --- argument parsing ----------------------------------------------------- */

/* Parses argv into o. Returns 0 to go on, 2 on a usage error (message
 * printed), -1 if --help was printed. */
static int parse_args(int argc, char **argv, run_opts *o)
{
    memset(o, 0, sizeof *o);
    o->n_predict = 128;
    o->n_batch = DEFAULT_BATCH;
    o->sp = tn_sample_params_default();

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return -1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tern run: %s '%s'\n\n", a[0] == '-' ? "missing value after" : "unexpected argument", a);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        bool ok = true;
        const char *want = NULL;
        int epf = ep_parse_flag("tern run", a, v, &o->ep);
        if (epf == 2)
            return 2;
        if (epf == 1)
            continue;
#define FLAG(s, l) (!strcmp(a, s) || !strcmp(a, l))
        if (FLAG("-m", "--model")) {
            o->model = v;
        } else if (FLAG("-p", "--prompt")) {
            o->prompt = v;
        } else if (FLAG("-n", "--n-predict")) {
            ok = tn_arg_i32(v, -1, INT32_MAX, &o->n_predict);
            want = "an integer >= -1";
        } else if (!strcmp(a, "--temp")) {
            ok = tn_arg_f32(v, -INFINITY, INFINITY, &o->sp.temperature);
            want = "a number";
        } else if (!strcmp(a, "--top-k")) {
            ok = tn_arg_i32(v, 0, INT32_MAX, &o->sp.top_k);
            want = "an integer >= 0";
        } else if (!strcmp(a, "--top-p")) {
            ok = tn_arg_f32(v, 0.0f, 1.0f, &o->sp.top_p);
            want = "a number in [0, 1]";
        } else if (!strcmp(a, "--min-p")) {
            ok = tn_arg_f32(v, 0.0f, 1.0f, &o->sp.min_p);
            want = "a number in [0, 1]";
        } else if (!strcmp(a, "--repeat-penalty")) {
            ok = tn_arg_f32(v, 0.0f, INFINITY, &o->sp.repeat_penalty) && o->sp.repeat_penalty > 0.0f;
            want = "a number > 0";
        } else if (!strcmp(a, "--presence-penalty")) {
            ok = tn_arg_f32(v, -INFINITY, INFINITY, &o->sp.presence_penalty);
            want = "a number";
        } else if (!strcmp(a, "--frequency-penalty")) {
            ok = tn_arg_f32(v, -INFINITY, INFINITY, &o->sp.frequency_penalty);
            want = "a number";
        } else if (!strcmp(a, "--repeat-last-n")) {
            ok = tn_arg_i32(v, -1, 1 << 20, &o->sp.penalty_last_n);
            want = "an integer in [-1, 1048576]";
        } else if (FLAG("-s", "--seed")) {
            ok = tn_arg_u64(v, &o->sp.seed);
            o->seed_given = true;
            want = "an unsigned 64-bit integer";
        } else if (FLAG("-t", "--threads")) {
            ok = tn_arg_i32(v, 1, 4096, &o->n_threads);
            want = "an integer >= 1";
        } else if (FLAG("-c", "--ctx")) {
            ok = tn_arg_i32(v, 1, 1 << 24, &o->n_ctx);
            want = "an integer in [1, 16777216]";
        } else if (!strcmp(a, "--kv-type")) {
            ok = tn_kv_type_from_name(v, &o->kv_type);
            want = "f32, f16 or q8";
        } else if (!strcmp(a, "--moe-stats")) {
            o->moe_stats = v;
        } else if (FLAG("-b", "--batch")) {
            ok = tn_arg_i32(v, 1, 1 << 16, &o->n_batch);
            want = "an integer in [1, 65536]";
        } else {
            fprintf(stderr, "tern run: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
#undef FLAG
        if (!ok) {
            fprintf(stderr, "tern run: bad value '%s' for %s: want %s\n", v, a, want);
            return 2;
        }
    }
    if (!o->model || !o->prompt) {
        fprintf(stderr, "tern run: %s is required\n\n", !o->model ? "-m MODEL" : "-p PROMPT");
        usage(stderr);
        return 2;
    }
    return 0;
}

/* A seed nobody chose: wall-clock nanoseconds mixed with the process id. */
static uint64_t random_seed(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    tn_rng r;
    tn_rng_seed(&r, x);
    return tn_rng_next(&r);
}

/* --- generation ------------------------------------------------------------ */

/* Everything a run owns; freed by run_free whatever was reached. */
typedef struct run_state {
    tn_model *model;
    tn_vocab *vocab;
    tn_pool *pool;
    tn_kv_cache *kv;
    tn_forward *fwd;
    tn_sampler *sampler;
    int32_t *tokens;   /* (n_prompt) */
    int32_t *pos;      /* (n_batch) */
    int32_t *seq;      /* (n_batch) zeros */
    bool *want;        /* (n_batch) */
    float *logits;     /* (n_vocab) */
    ep_ctx ep;         /* expert parallelism (--ep); size 1 without */
} run_state;

static void run_free(run_state *r)
{
    tn_sampler_free(r->sampler);
    tn_forward_free(r->fwd);
    tn_kv_free(r->kv);
    tn_pool_free(r->pool);
    ep_leave(&r->ep);
    tn_vocab_free(r->vocab);
    tn_model_free(r->model);
    free(r->tokens);
    free(r->pos);
    free(r->seq);
    free(r->want);
    free(r->logits);
}

/* Writes n bytes to stdout and flushes; false if stdout failed. */
static bool emit(const char *s, size_t n)
{
    if (n && fwrite(s, 1, n, stdout) != n)
        return false;
    return fflush(stdout) == 0;
}

/* Tokenizes the prompt into r->tokens; returns the count or -1 (message
 * printed). */
static int32_t tokenize_prompt(run_state *r, const char *prompt)
{
    size_t len = strlen(prompt);
    bool add_bos = tn_vocab_add_bos(r->vocab);
    size_t cap = len + 2, n = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        free(r->tokens);
        r->tokens = malloc(cap * sizeof *r->tokens);
        if (!r->tokens) {
            fprintf(stderr, "tern run: out of memory for %zu prompt tokens\n", cap);
            return -1;
        }
        tn_status st = tn_tokenize(r->vocab, prompt, len, add_bos, true, r->tokens, cap, &n);
        if (st == TN_OK)
            break;
        if (st != TN_ERR_FULL || attempt == 1) {
            fprintf(stderr, "tern run: cannot tokenize the prompt: %s\n", tn_last_error());
            return -1;
        }
        cap = n;
    }
    if (n == 0) {
        fprintf(stderr, "tern run: the prompt is empty and the vocabulary adds no BOS: nothing to start from\n");
        return -1;
    }
    if (n > INT32_MAX) {
        fprintf(stderr, "tern run: the prompt is too long (%zu tokens)\n", n);
        return -1;
    }
    return (int32_t)n;
}

/* Runs tokens[0..n) at positions start.. through the model; logits of the
 * last one go to r->logits when want_last. */
static tn_status forward_chunk(run_state *r, const int32_t *tokens, int32_t n, int32_t start, bool want_last)
{
    for (int32_t i = 0; i < n; i++) {
        r->pos[i] = start + i;
        r->seq[i] = 0;
        r->want[i] = want_last && i == n - 1;
    }
    tn_batch b = {
        .n_tokens = n,
        .token = tokens,
        .pos = r->pos,
        .seq_id = r->seq,
        .kv_slot = r->pos, /* slot = position */
        .want_logits = r->want,
    };
    if (r->ep.ep) { /* tell the other ranks there is a step to take */
        int32_t agreed;
        tn_status s = tn_ep_sync(r->ep.ep, TN_EP_STEP, &agreed);
        if (s != TN_OK)
            return s;
    }
    return tn_forward_run(r->fwd, r->kv, r->pool, &b, r->logits);
}

/* Rank 0 under --ep: tells the other ranks to stop (also after a failure
 * of its own, so they do not wait for their timeout). */
static void lead_done(run_state *r)
{
    int32_t agreed;
    if (r->ep.ep && !tn_comm_broken(r->ep.comm) && tn_ep_sync(r->ep.ep, TN_EP_DONE, &agreed) != TN_OK)
        fprintf(stderr, "tern run: rank 0: cannot tell the other ranks to stop: %s\n", tn_last_error());
}

static int run(const run_opts *o)
{
    run_state r = {0};
    int rc = 1;

    double t0 = tn_time_s();
    const tn_model_opts mo = ep_model_opts(&o->ep);
    if (tn_model_load_opts(o->model, &mo, &r.model) != TN_OK) {
        fprintf(stderr, "tern run: cannot load the model: %s\n", tn_last_error());
        goto out;
    }
    if (tn_vocab_from_gguf(r.model->gguf, &r.vocab) != TN_OK) {
        fprintf(stderr, "tern run: cannot read the vocabulary of %s: %s\n", o->model, tn_last_error());
        goto out;
    }
    const tn_hparams *hp = &r.model->hp;
    const int32_t n_vocab = hp->n_vocab;
    if (tn_vocab_n_tokens(r.vocab) > n_vocab) {
        fprintf(stderr, "tern run: %s: the vocabulary has %d tokens but the model only %d logits\n", o->model,
                (int)tn_vocab_n_tokens(r.vocab), (int)n_vocab);
        goto out;
    }
    tn_log(TN_LOG_INFO, "tern run: %s: %s, %d layers, n_embd %d, vocab %d, trained context %d (%.2f s)\n",
           o->model, hp->arch_name, (int)hp->n_layer, (int)hp->n_embd, (int)n_vocab, (int)hp->n_ctx_train,
           tn_time_s() - t0);
    if (o->ep.n_ep > 0) {
        if (ep_join("tern run", &o->ep, r.model, TN_MAX(o->n_batch, 1), &r.ep) != 0)
            goto out;
        if (r.ep.rank > 0) { /* no sequence of its own: steps along with rank 0 */
            rc = ep_follow("tern run", &r.ep, r.model, o->n_threads);
            goto out;
        }
    }

    int32_t n_prompt = tokenize_prompt(&r, o->prompt);
    if (n_prompt < 0)
        goto out;

    /* The context: prompt + n_predict - 1 cells would suffice (the last
     * generated token is never fed back); we keep the simpler bound, capped
     * at the trained context unless --ctx asks for more. */
    int32_t n_ctx = o->n_ctx;
    if (n_ctx == 0) {
        int64_t want = o->n_predict < 0 ? hp->n_ctx_train : (int64_t)n_prompt + o->n_predict;
        n_ctx = (int32_t)TN_MAX(TN_MIN(want, (int64_t)hp->n_ctx_train), 1);
    }
    if (n_prompt > n_ctx) {
        fprintf(stderr, "tern run: the prompt has %d tokens but the context holds %d%s\n", (int)n_prompt, (int)n_ctx,
                o->n_ctx ? " (raise --ctx)" : " (the model's trained context; --ctx overrides)");
        goto out;
    }
    if (n_ctx > hp->n_ctx_train)
        tn_log(TN_LOG_INFO, "tern run: warning: context %d exceeds the trained context %d\n", (int)n_ctx,
               (int)hp->n_ctx_train);

    int32_t n_batch = TN_MIN(o->n_batch, n_prompt);
    tn_sample_params sp = o->sp;
    if (!o->seed_given)
        sp.seed = random_seed();
    if (tn_pool_new(ep_threads(&r.ep, o->n_threads), &r.pool) != TN_OK ||
        tn_kv_new_typed(r.model, n_ctx, 1, o->kv_type, &r.kv) != TN_OK || tn_forward_new(r.model, n_batch, &r.fwd) != TN_OK ||
        tn_sampler_new(&sp, n_vocab, &r.sampler) != TN_OK || ep_attach("tern run", &r.ep, r.fwd) != 0) {
        fprintf(stderr, "tern run: %s\n", tn_last_error());
        goto out;
    }
    r.pos = malloc((size_t)n_batch * sizeof *r.pos);
    r.seq = malloc((size_t)n_batch * sizeof *r.seq);
    r.want = malloc((size_t)n_batch * sizeof *r.want);
    r.logits = malloc((size_t)n_vocab * sizeof *r.logits);
    if (!r.pos || !r.seq || !r.want || !r.logits) {
        fprintf(stderr, "tern run: out of memory\n");
        goto out;
    }
    tn_log(TN_LOG_INFO, "tern run: %d threads, context %d, batch %d, seed %llu, temp %g, top-k %d, top-p %g, min-p %g\n",
           tn_pool_size(r.pool), (int)n_ctx, (int)n_batch, (unsigned long long)sp.seed, (double)sp.temperature,
           (int)sp.top_k, (double)sp.top_p, (double)sp.min_p);

    /* echo the prompt as its tokens detokenize (see the file comment) */
    tn_detok dt;
    tn_detok_init(&dt);
    char text[TN_DETOK_MAX];
    for (int32_t i = 0; i < n_prompt; i++) {
        size_t k = tn_detok_push(&dt, r.vocab, r.tokens[i], text, sizeof text);
        if (k && fwrite(text, 1, k, stdout) != k)
            goto write_err;
        tn_sampler_accept(r.sampler, r.tokens[i]);
    }
    if (fflush(stdout) != 0)
        goto write_err;

    /* prefill */
    double tp0 = tn_time_s();
    for (int32_t i = 0; i < n_prompt; i += n_batch) {
        int32_t n = TN_MIN(n_batch, n_prompt - i);
        if (forward_chunk(&r, r.tokens + i, n, i, i + n == n_prompt) != TN_OK) {
            fprintf(stderr, "\ntern run: prompt evaluation failed: %s\n", tn_last_error());
            goto out;
        }
    }
    double t_prefill = tn_time_s() - tp0;

    /* decode: sample from the last logits, print, feed the token back */
    double td0 = tn_time_s();
    int32_t n_gen = 0, n_steps = 0, pos = n_prompt;
    const char *stop = "token limit";
    while (o->n_predict < 0 || n_gen < o->n_predict) {
        int32_t tok = tn_sampler_sample(r.sampler, r.logits);
        tn_sampler_accept(r.sampler, tok);
        if (tn_vocab_is_eog(r.vocab, tok)) {
            stop = "end of generation";
            break;
        }
        n_gen++;
        size_t k = tn_detok_push(&dt, r.vocab, tok, text, sizeof text);
        if (!emit(text, k))
            goto write_err;
        if (o->n_predict >= 0 && n_gen == o->n_predict)
            break;
        if (pos >= n_ctx) {
            stop = "context full";
            break;
        }
        if (forward_chunk(&r, &tok, 1, pos, true) != TN_OK) {
            fprintf(stderr, "\ntern run: decoding failed at position %d: %s\n", (int)pos, tn_last_error());
            goto out;
        }
        pos++;
        n_steps++;
    }
    double t_decode = tn_time_s() - td0;
    size_t k = tn_detok_flush(&dt, text, sizeof text);
    if (!emit(text, k))
        goto write_err;

    tn_log(TN_LOG_INFO, "\ntern run: stopped: %s\n", stop);
    tn_log(TN_LOG_INFO, "tern run: prompt:    %6d tokens in %8.3f s = %9.2f tokens/s\n", (int)n_prompt, t_prefill,
           t_prefill > 0 ? n_prompt / t_prefill : 0.0);
    tn_log(TN_LOG_INFO, "tern run: generated: %6d tokens in %8.3f s = %9.2f tokens/s (%d decode steps)\n",
           (int)n_gen, t_decode, t_decode > 0 ? n_gen / t_decode : 0.0, (int)n_steps);
    if (r.ep.ep)
        ep_report("tern run", &r.ep);
    if (o->moe_stats && tn_moe_stats_write(tn_forward_moe_stats(r.fwd), o->moe_stats) != TN_OK) {
        fprintf(stderr, "tern run: %s\n", tn_last_error());
        goto out;
    }
    rc = 0;
    goto out;

write_err:
    fprintf(stderr, "tern run: cannot write to stdout: %s\n", strerror(errno));
out:
    if (r.ep.rank == 0)
        lead_done(&r);
    run_free(&r);
    return rc;
}

/* `tern run`: returns the process exit status (0 ok, 1 failure, 2 usage). */
int tn_cmd_run(int argc, char **argv)
{
    run_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    return run(&o);
}
