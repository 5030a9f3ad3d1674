/*
 * cmd_imatrix.c — `tern imatrix -m MODEL -f TEXT -o FILE`: importance
 * matrix (mean squared activation of each input column of each matrix) over
 * a calibration text, in llama.cpp's legacy .dat format
 * (src/compress/imatrix.h), for `tern quantize --imatrix FILE` or
 * llama-quantize.
 *
 * Exit codes: 0 success, 1 failure (input, model, write), 2 usage.
 */
#include "args.h"
#include "tools.h"

#include "compress/hessian.h"
#include "compress/imatrix.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tern imatrix -m MODEL.gguf -f TEXT -o FILE [options]\n"
            "\n"
            "Runs TEXT through the model in windows of --ctx tokens (BOS first) and writes,\n"
            "for every matrix, the mean square of each input column's activation\n"
            "(llama.cpp's imatrix .dat format: llama-quantize --imatrix reads it too).\n"
            "\n"
            "  -m, --model PATH    GGUF model (required)\n"
            "  -f, --file PATH     calibration text (required)\n"
            "  -o, --output PATH   importance matrix to write (required)\n"
            "  -c, --ctx N         window in tokens (default 512)\n"
            "      --chunks N      windows to evaluate (default: all that fit)\n"
            "      --hessian PATH  also write each dense matrix's input second moments\n"
            "                      H = sum x x^T / n_tokens (GGUF; for tern quantize --hessian: GPTQ)\n"
            "  -t, --threads N     compute threads (default: all cores)\n"
            "  -h, --help          this text\n");
}

static void progress(void *ud, int32_t i, int32_t n)
{
    double t0 = *(const double *)ud;
    fprintf(stderr, "\rtern imatrix: window %d/%d (%.1f s)%s", (int)i, (int)n, tn_time_s() - t0, i == n ? "\n" : "");
    fflush(stderr);
}

int tn_cmd_imatrix(int argc, char **argv)
{
    const char *model_path = NULL, *text_path = NULL, *out_path = NULL, *hess_path = NULL;
    int32_t n_threads = 0, n_ctx = 512, n_chunks = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tern imatrix: %s '%s'\n\n", a[0] == '-' ? "missing value after" : "unexpected argument", a);
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
        else if (FLAG("-o", "--output"))
            out_path = v;
        else if (FLAG("-c", "--ctx"))
            ok = tn_arg_i32(v, 2, 1 << 20, &n_ctx);
        else if (!strcmp(a, "--hessian"))
            hess_path = v;
        else if (!strcmp(a, "--chunks"))
            ok = tn_arg_i32(v, 1, INT32_MAX, &n_chunks);
        else if (FLAG("-t", "--threads"))
            ok = tn_arg_i32(v, 1, 4096, &n_threads);
        else {
            fprintf(stderr, "tern imatrix: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
#undef FLAG
        if (!ok) {
            fprintf(stderr, "tern imatrix: bad value '%s' for %s\n", v, a);
            return 2;
        }
    }
    if (!model_path || !text_path || !out_path) {
        fprintf(stderr, "tern imatrix: %s is required\n\n",
                !model_path ? "-m MODEL" : !text_path ? "-f TEXT" : "-o FILE");
        usage(stderr);
        return 2;
    }
    int rc = 1;
    tn_model *m = NULL;
    tn_vocab *voc = NULL;
    tn_pool *pool = NULL;
    tn_imatrix *im = NULL;
    tn_hessian *hs = NULL;
    size_t len = 0;
    char *text = tn_read_file("imatrix", text_path, &len);
    if (!text)
        goto out;
    if (tn_model_load(model_path, &m) != TN_OK || tn_vocab_from_gguf(m->gguf, &voc) != TN_OK ||
        tn_pool_new(n_threads, &pool) != TN_OK || tn_imatrix_new(&im) != TN_OK ||
        (hess_path && tn_hessian_new(&hs) != TN_OK)) {
        fprintf(stderr, "tern imatrix: %s\n", tn_last_error());
        goto out;
    }
    tn_imatrix_set_hessian(im, hs);
    double t0 = tn_time_s();
    if (tn_imatrix_collect(im, m, voc, pool, text, len, n_ctx, n_chunks, progress, &t0) != TN_OK ||
        tn_imatrix_save(im, out_path, text_path) != TN_OK) {
        fprintf(stderr, "\ntern imatrix: %s\n", tn_last_error());
        goto out;
    }
    fprintf(stderr, "tern imatrix: %lld entries from %d windows of %d tokens -> %s\n",
            (long long)tn_imatrix_n_entries(im), (int)tn_imatrix_n_chunks(im), (int)n_ctx, out_path);
    if (hs) {
        if (tn_hessian_save(hs, hess_path, text_path, tn_imatrix_n_chunks(im)) != TN_OK) {
            fprintf(stderr, "tern imatrix: %s\n", tn_last_error());
            goto out;
        }
        fprintf(stderr, "tern imatrix: %lld hessians -> %s\n", (long long)tn_hessian_n_entries(hs), hess_path);
    }
    rc = 0;
out:
    tn_hessian_free(hs);
    tn_imatrix_free(im);
    tn_pool_free(pool);
    tn_vocab_free(voc);
    tn_model_free(m);
    free(text);
    return rc;
}
