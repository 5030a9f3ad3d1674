/*
 * cmd_quantize.c — `tern quantize IN.gguf OUT.gguf TYPE`: convert a model's
 * weights (src/compress/quantize.h has the rules for which tensor gets which
 * type).
 *
 * stderr gets one progress line per tensor (name, shape, source -> target
 * type, why a type differs from the base) and a summary; with --stats,
 * stdout gets a table of each converted tensor's weight RMSE against the
 * source and the total, so `tern quantize ... --stats > rmse.txt` keeps the
 * figures alone.
 *
 * Exit codes: 0 success, 1 failure (input, unsupported type, write), 2 usage.
 */
#include "tools.h"

#include "compress/quantize.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tern quantize IN.gguf OUT.gguf TYPE [options]\n"
            "\n"
            "Writes OUT.gguf with IN.gguf's metadata and its matrices in TYPE, one\n"
            "tensor at a time. TYPE: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 IQ4_NL Q2_K\n"
            "Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K. Norms, biases and 1-D tensors stay as they\n"
            "are; rows that do not fill TYPE's blocks fall back (K-quants as llama.cpp,\n"
            "else F16); the mixes raise output, attn_v and ffn_down as llama.cpp does.\n"
            "\n"
            "      --imatrix FILE    importance matrix (tern imatrix, or llama-imatrix's .dat):\n"
            "                        weights each column's error in the K-quants, IQ4_NL\n"
            "                        and Q4_0/Q4_1/Q5_0/Q5_1\n"
            "      --hessian FILE    input second moments (tern imatrix --hessian): GPTQ for every\n"
            "                        dense matrix with one (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 IQ4_NL and the\n"
            "                        K-quants); diag H is the importance of the scale fits\n"
            "      --gptq-damp X     GPTQ damping: H += X * mean(diag H) * I (default 0.01)\n"
            "      --output-type T   type of output.weight (token_embd when tied)\n"
            "      --pure            every matrix in TYPE (no mix rules)\n"
            "      --stats           print each tensor's weight RMSE vs the source (stdout)\n"
            "  -t, --threads N       threads (default: all cores)\n"
            "  -h, --help            this text\n");
}

typedef struct progress_state {
    double t0;
} progress_state;

static void progress(void *ud, int64_t i, int64_t n, const tn_quant_tensor *t)
{
    progress_state *ps = ud;
    const int width = 30, done = (int)(width * i / (n ? n : 1));
    char bar[32];
    for (int k = 0; k < width; k++)
        bar[k] = k < done ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "[%s] [%4lld/%4lld] %-28s %10lld elements  %-6s -> %-6s %s%s%s(%.1f s)\n", bar, (long long)i,
            (long long)n, t->name, (long long)t->n_elements, tn_dtype_traits_of(t->src_type)->name,
            tn_dtype_traits_of(t->dst_type)->name, t->gptq ? "gptq " : t->imatrix ? "imatrix " : "", t->note ? t->note : "",
            t->note ? " " : "", tn_time_s() - ps->t0);
}

int tn_cmd_quantize_w8a8(int argc, char **argv); /* cmd_quantize_w8a8.c: tern's own W8A8 type */

int tn_cmd_quantize(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "w8a8") || !strcmp(argv[i], "W8A8"))
            return tn_cmd_quantize_w8a8(argc, argv);
    tn_quant_opts o = {0};
    const char *pos[3];
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--pure")) {
            o.pure = true;
        } else if (!strcmp(a, "--stats")) {
            o.stats = true;
        } else if (!strcmp(a, "--output-type") || !strcmp(a, "--imatrix") || !strcmp(a, "--hessian") ||
                   !strcmp(a, "--gptq-damp") || !strcmp(a, "-t") ||
                   !strcmp(a, "--threads")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "tern quantize: missing value after '%s'\n", a);
                return 2;
            }
            const char *v = argv[++i];
            if (!strcmp(a, "--output-type")) {
                o.output_type = v;
            } else if (!strcmp(a, "--imatrix")) {
                o.imatrix = v;
            } else if (!strcmp(a, "--hessian")) {
                o.hessian = v;
            } else if (!strcmp(a, "--gptq-damp")) {
                char *end;
                errno = 0;
                double d = strtod(v, &end);
                if (errno || *end || !(d >= 0 && d <= 10)) {
                    fprintf(stderr, "tern quantize: bad value '%s' for %s: want a number in [0, 10]\n", v, a);
                    return 2;
                }
                o.gptq_damp = d;
                o.gptq_damp_set = true;
            } else {
                char *end;
                errno = 0;
                long t = strtol(v, &end, 10);
                if (errno || *end || t < 1 || t > 4096) {
                    fprintf(stderr, "tern quantize: bad value '%s' for %s: want an integer in [1, 4096]\n", v, a);
                    return 2;
                }
                o.n_threads = (int)t;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "tern quantize: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        } else if (n_pos < 3) {
            pos[n_pos++] = a;
        } else {
            fprintf(stderr, "tern quantize: unexpected argument '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (n_pos != 3) {
        fprintf(stderr, "tern quantize: IN.gguf, OUT.gguf and TYPE are required\n\n");
        usage(stderr);
        return 2;
    }
    o.in_path = pos[0];
    o.out_path = pos[1];
    o.type = pos[2];
    tn_dtype base;
    uint32_t ft;
    if (!tn_quant_mix_from_name(o.type, &base, &ft)) {
        fprintf(stderr, "tern quantize: unknown type '%s'\n\n", o.type);
        usage(stderr);
        return 2;
    }
    progress_state ps = {.t0 = tn_time_s()};
    o.progress = progress;
    o.progress_ud = &ps;

    tn_quant_report rep;
    tn_status st = tn_quantize_model(&o, &rep);
    if (st != TN_OK) {
        fprintf(stderr, "tern quantize: %s\n", tn_last_error());
        tn_quant_report_deinit(&rep);
        return 1;
    }
    double bpw = rep.n_elements ? 8.0 * (double)rep.dst_bytes / (double)rep.n_elements : 0.0;
    fprintf(stderr, "tern quantize: %s -> %s (%s, file_type %u): %.3f MiB -> %.3f MiB, %.2f bits per weight, %.2f s\n",
            o.in_path, o.out_path, o.type, (unsigned)rep.file_type, rep.src_bytes / 1048576.0,
            rep.dst_bytes / 1048576.0, bpw, tn_time_s() - ps.t0);
    if (o.stats) {
        printf("%-32s %-6s %-6s %12s %12s %12s\n", "tensor", "from", "to", "elements", "rmse", "rel_rmse");
        for (int64_t i = 0; i < rep.n_tensors; i++) {
            const tn_quant_tensor *t = &rep.tensors[i];
            if (!t->quantized)
                continue;
            printf("%-32s %-6s %-6s %12lld %12.4e %12.4e\n", t->name, tn_dtype_traits_of(t->src_type)->name,
                   tn_dtype_traits_of(t->dst_type)->name, (long long)t->n_elements,
                   sqrt(t->sse / (double)t->n_elements), t->ssq > 0 ? sqrt(t->sse / t->ssq) : 0.0);
        }
        double n = (double)(rep.n_quant_elements ? rep.n_quant_elements : 1);
        printf("%-32s %-6s %-6s %12lld %12.4e %12.4e\n", "TOTAL", "", o.type, (long long)rep.n_quant_elements,
               sqrt(rep.sse / n), rep.ssq > 0 ? sqrt(rep.sse / rep.ssq) : 0.0);
    }
    tn_quant_report_deinit(&rep);
    return 0;
}
