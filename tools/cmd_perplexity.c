/*
 * cmd_perplexity.c — `tern perplexity -m MODEL -f TEXT`: perplexity over
 * non-overlapping windows (src/compress/perplexity.h), optionally saving
 * the scored log-probabilities or comparing with a saved run.
 *
 * stderr: load information and the running PPL after each window
 * ("[1]12.3456,[2]..." as llama.cpp prints it). stdout: the final line,
 * "Final estimate: PPL = X +/- E", the KL table when --kl-base is given,
 * and one JSON object on the last line (every figure, for scripts).
 *
 * Exit codes: 0 success, 1 failure (model, text, files), 2 usage.
 */
#include "args.h"
#include "tools.h"

#include "compress/perplexity.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tern perplexity -m MODEL.gguf -f TEXT [options]\n"
            "\n"
            "Tokenizes TEXT, cuts it into windows of --ctx tokens (BOS first in each),\n"
            "scores the second half of every window and prints the perplexity.\n"
            "\n"
            "  -m, --model PATH        GGUF model (required)\n"
            "  -f, --file PATH         text file (required)\n"
            "  -c, --ctx N             window in tokens (default 512, or the base file's)\n"
            "      --chunks N          windows to evaluate (default: all that fit)\n"
            "  -b, --batch N           tokens per forward call (default min(ctx, 512))\n"
            "      --save-logits FILE  save the scored log-probabilities (TNLOGITS, docs/formats.md)\n"
            "      --kl-base FILE      compare with a saved run: KL divergence, top-1, delta p\n"
            "      --kl-out FILE       with --kl-base: each scored position's KL, one per line\n"
            "  -t, --threads N         compute threads (default: all cores)\n"
            "      --kv-type T         KV-cache storage: f32 (default), f16, q8\n"
            "  -h, --help              this text\n");
}

static void progress(void *ud, int32_t i, int32_t n, double ppl)
{
    fprintf(stderr, "[%d]%.4f,", (int)i, ppl);
    if (i == n)
        fprintf(stderr, "\n");
    fflush(stderr);
}

int tn_cmd_perplexity(int argc, char **argv)
{
    const char *model_path = NULL, *text_path = NULL;
    int32_t n_threads = 0;
    tn_ppl_opts o = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tern perplexity: %s '%s'\n\n", a[0] == '-' ? "missing value after" : "unexpected argument",
                    a);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        bool ok = true;
#define FLAG(s, l) (!strcmp(a, s) || !strcmp(a, l))
        if (FLAG("-m", "--model"))
            model_path = v;
        else if (FLAG("-f", "--file"))
            text_path = v;
        else if (FLAG("-c", "--ctx"))
            ok = tn_arg_i32(v, 4, 1 << 24, &o.n_ctx);
        else if (!strcmp(a, "--chunks"))
            ok = tn_arg_i32(v, 1, INT32_MAX, &o.n_chunks);
        else if (FLAG("-b", "--batch"))
            ok = tn_arg_i32(v, 1, 1 << 16, &o.n_batch);
        else if (FLAG("-t", "--threads"))
            ok = tn_arg_i32(v, 1, 4096, &n_threads);
        else if (!strcmp(a, "--save-logits"))
            o.save_logits = v;
        else if (!strcmp(a, "--kl-base"))
            o.kl_base = v;
        else if (!strcmp(a, "--kl-out"))
            o.kl_out = v;
        else if (!strcmp(a, "--kv-type"))
            ok = tn_kv_type_from_name(v, &o.kv_type);
        else {
            fprintf(stderr, "tern perplexity: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
#undef FLAG
        if (!ok) {
            fprintf(stderr, "tern perplexity: bad value '%s' for %s\n", v, a);
            return 2;
        }
    }
    if (!model_path || !text_path) {
        fprintf(stderr, "tern perplexity: %s is required\n\n", !model_path ? "-m MODEL" : "-f TEXT");
        usage(stderr);
        return 2;
    }

    int rc = 1;
    tn_model *m = NULL;
    tn_vocab *voc = NULL;
    tn_pool *pool = NULL;
    size_t len = 0;
    char *text = tn_read_file("perplexity", text_path, &len);
    if (!text)
        goto out;
    if (tn_model_load(model_path, &m) != TN_OK || tn_vocab_from_gguf(m->gguf, &voc) != TN_OK ||
        tn_pool_new(n_threads, &pool) != TN_OK) {
        fprintf(stderr, "tern perplexity: %s\n", tn_last_error());
        goto out;
    }
    fprintf(stderr, "tern perplexity: %s: %s, %d layers, vocab %d; %s: %zu bytes; %d threads\n", model_path,
            m->hp.arch_name, (int)m->hp.n_layer, (int)m->hp.n_vocab, text_path, len, tn_pool_size(pool));
    o.progress = progress;
    tn_ppl_result r;
    if (tn_perplexity(m, voc, pool, text, len, &o, &r) != TN_OK) {
        fprintf(stderr, "\ntern perplexity: %s\n", tn_last_error());
        goto out;
    }
    fprintf(stderr, "tern perplexity: %d windows of %d tokens (%lld scored) in %.2f s\n", (int)r.n_chunks,
            (int)r.n_ctx, (long long)r.n_scored, r.seconds);
    printf("Final estimate: PPL = %.4f +/- %.5f\n", r.ppl, r.ppl_err);
    if (r.has_kl) {
        printf("\n%-22s %s\n", "statistic", "value");
        printf("%-22s %.4f\n", "PPL (base)", r.base_ppl);
        printf("%-22s %.6f\n", "ln(PPL/PPL base)", log(r.ppl / r.base_ppl));
        printf("%-22s %.6f +/- %.6f\n", "mean KL", r.kl_mean, r.kl_err);
        printf("%-22s %.6f\n", "median KL", r.kl_median);
        printf("%-22s %.6f\n", "99% KL", r.kl_p99);
        printf("%-22s %.6f\n", "99.9% KL", r.kl_p999);
        printf("%-22s %.6f\n", "max KL", r.kl_max);
        printf("%-22s %.3f %%\n", "top-1 agreement", 100.0 * r.top1);
        printf("%-22s %.4f %%\n", "mean delta p", 100.0 * r.dp_mean);
        printf("%-22s %.4f %%\n", "RMS delta p", 100.0 * r.dp_rms);
    }
    printf("{\"ppl\": %.6f, \"ppl_err\": %.6f, \"nll\": %.6f, \"n_ctx\": %d, \"n_chunks\": %d, \"n_scored\": %lld",
           r.ppl, r.ppl_err, r.nll, (int)r.n_ctx, (int)r.n_chunks, (long long)r.n_scored);
    if (r.has_kl)
        printf(", \"base_ppl\": %.6f, \"kl_mean\": %.8f, \"kl_median\": %.8f, \"kl_p99\": %.8f, \"kl_p999\": %.8f, "
               "\"kl_max\": %.8f, \"top1\": %.6f, \"dp_mean\": %.8f, \"dp_rms\": %.8f",
               r.base_ppl, r.kl_mean, r.kl_median, r.kl_p99, r.kl_p999, r.kl_max, r.top1, r.dp_mean, r.dp_rms);
    printf("}\n");
    rc = fflush(stdout) == 0 ? 0 : 1;
out:
    tn_pool_free(pool);
    tn_vocab_free(voc);
    tn_model_free(m);
    free(text);
    return rc;
}
