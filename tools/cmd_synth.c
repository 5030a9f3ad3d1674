/*
 * cmd_synth.c — `tern synth`: write a random-weight model of a real shape.
 *
 * A thin main over tn_synth_write (src/model/synth.h): parse the options,
 * report progress on stderr, print a one-line summary.
 */
#include "model/synth.h"
#include "tools.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tern synth --preset NAME --dtype TYPE --vocab VOCAB.gguf -o OUT.gguf [--seed S]\n"
            "       tern synth --list\n"
            "\n"
            "Writes a GGUF model with the shapes of a real one and deterministic random\n"
            "weights, carrying the tokenizer of VOCAB.gguf.\n"
            "\n"
            "  --preset NAME   model shape (see --list)\n"
            "  --dtype TYPE    matrix type: f32, f16, bf16, q8_0, q4_0 (norms stay f32)\n"
            "  --vocab FILE    GGUF file whose tokenizer.* metadata is copied\n"
            "  -o, --output F  output GGUF file\n"
            "  --seed S        random seed (default 0); the same seed gives the same file\n"
            "  -t, --threads N threads producing the weights (default 0: all cores);\n"
            "                  the file does not depend on it\n"
            "  --list          list the presets and exit\n");
}

static void list_presets(void)
{
    size_t n;
    const tn_synth_preset *p = tn_synth_presets(&n);
    printf("%-24s %6s %6s %5s %9s %8s %6s  %s\n", "preset", "n_embd", "layers", "heads", "head_dim", "n_ff",
           "params", "description");
    for (size_t i = 0; i < n; i++) {
        char heads[16];
        snprintf(heads, sizeof heads, "%d/%d", p[i].n_head, p[i].n_head_kv);
        double params = (double)tn_synth_n_params(&p[i], 32000);
        char ps[16];
        if (params >= 1e9)
            snprintf(ps, sizeof ps, "%.2fB", params / 1e9);
        else if (params >= 1e6)
            snprintf(ps, sizeof ps, "%.1fM", params / 1e6);
        else
            snprintf(ps, sizeof ps, "%.0fK", params / 1e3);
        printf("%-24s %6d %6d %5s %9d %8d %6s  %s\n", p[i].name, p[i].n_embd, p[i].n_layer, heads, p[i].head_dim,
               p[i].n_ff, ps, p[i].desc);
    }
    printf("\n(params counted with a 32000-token vocabulary)\n");
}

typedef struct progress_state {
    double t0;
    int last_pct;
    int last_decile; /* without a terminal: one line per 10% */
    bool tty;
} progress_state;

static void on_progress(void *ud, int64_t i, int64_t n, const char *name, uint64_t done, uint64_t total)
{
    progress_state *ps = ud;
    int pct = total ? (int)(100.0 * (double)done / (double)total) : 100;
    if (pct == ps->last_pct && i != n)
        return;
    ps->last_pct = pct;
    double mib = (double)done / (1024.0 * 1024.0);
    double dt = tn_time_s() - ps->t0;
    if (ps->tty)
        fprintf(stderr, "\rsynth: %3d%%  %4" PRId64 "/%" PRId64 " tensors  %9.1f MiB  %6.1f s  %-32s", pct, i, n,
                mib, dt, name);
    else if (pct / 10 > ps->last_decile || i == n) {
        ps->last_decile = pct / 10;
        fprintf(stderr, "synth: %3d%%  %" PRId64 "/%" PRId64 " tensors  %.1f MiB  %.1f s\n", pct, i, n, mib, dt);
    }
    if (ps->tty && i == n)
        fputc('\n', stderr);
}

/* `tern synth`: returns 0 on success, 1 on failure, 2 on bad usage. */
int tn_cmd_synth(int argc, char **argv)
{
    tn_synth_opts o = {0};
    bool list = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--list")) {
            list = true;
        } else if (!strcmp(a, "--preset") && has_val) {
            o.preset = argv[++i];
        } else if (!strcmp(a, "--dtype") && has_val) {
            o.dtype = argv[++i];
        } else if (!strcmp(a, "--vocab") && has_val) {
            o.vocab_path = argv[++i];
        } else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && has_val) {
            o.out_path = argv[++i];
        } else if ((!strcmp(a, "-t") || !strcmp(a, "--threads")) && has_val) {
            const char *v = argv[++i];
            char *end = NULL;
            long n = strtol(v, &end, 10);
            if (end == v || *end || n < 0 || n > 4096) {
                fprintf(stderr, "tern synth: --threads wants a count (0: all cores), got '%s'\n", v);
                return 2;
            }
            o.n_threads = (int)n;
        } else if (!strcmp(a, "--seed") && has_val) {
            const char *v = argv[++i];
            char *end = NULL;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 0);
            if (errno || end == v || *end || v[0] == '-') {
                fprintf(stderr, "tern synth: --seed wants a non-negative integer, got '%s'\n", v);
                return 2;
            }
            o.seed = (uint64_t)s;
        } else {
            fprintf(stderr, "tern synth: unknown option or missing value: '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (list) {
        list_presets();
        return 0;
    }
    if (!o.preset || !o.dtype || !o.vocab_path || !o.out_path) {
        fprintf(stderr, "tern synth: --preset, --dtype, --vocab and -o are required\n\n");
        usage(stderr);
        return 2;
    }

    progress_state ps = {.t0 = tn_time_s(), .last_pct = -1, .last_decile = -1, .tty = isatty(2) != 0};
    o.progress = on_progress;
    o.progress_ud = &ps;
    tn_status s = tn_synth_write(&o);
    if (s != TN_OK) {
        if (ps.tty && ps.last_pct >= 0)
            fputc('\n', stderr);
        fprintf(stderr, "tern %s (%s)\n", tn_last_error(), tn_status_str(s)); /* messages start "synth: " */
        return 1;
    }
    fprintf(stderr, "tern synth: wrote %s (%s, %s, seed %" PRIu64 ") in %.1f s\n", o.out_path, o.preset, o.dtype,
            o.seed, tn_time_s() - ps.t0);
    return 0;
}
