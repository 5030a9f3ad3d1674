/*
 * cmd_quantize_w8a8.c — `tern quantize IN.gguf OUT.gguf w8a8 [--calib TEXT]
 * [--alpha A]`: tern's own W8A8 type (kern/w8a8.h) with SmoothQuant scales
 * calibrated on TEXT (src/compress/smoothquant.h). tern quantize hands its
 * arguments here when the type is w8a8.
 *
 * Exit codes: 0 success, 1 failure (input, unsupported model, write), 2 usage.
 */
#include "args.h"
#include "tools.h"

#include "compress/smoothquant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tern quantize IN.gguf OUT.gguf w8a8 [options]\n"
            "\n"
            "Writes the seven matrices of every layer as W8A8 (int8 per output row with an\n"
            "f32 scale; activations int8 per token at run time), tern's own type. With\n"
            "--calib, SmoothQuant scales s = max|X|^alpha / max|W|^(1-alpha) measured on TEXT\n"
            "move activation outliers into the weights (folded into attn_norm / ffn_norm).\n"
            "\n"
            "  --calib TEXT      calibration text (without it: no smoothing)\n"
            "  --alpha A         migration strength in [0, 1] (default 0.5)\n"
            "  --ctx N           calibration window in tokens (default min(256, trained))\n"
            "  --chunks N        windows to run (default: all, at most 64)\n"
            "  --keep LIST       matrices left in their type, e.g. ffn_down (comma-separated)\n"
            "  --rotate LIST     matrices whose input is rotated by a block Hadamard before\n"
            "                    it is quantized (type w8a8_had; default ffn_down; 'none')\n"
            "  -t, --threads N   compute threads (default: all cores)\n");
}

int tn_cmd_quantize_w8a8(int argc, char **argv)
{
    tn_w8a8_opts o = {.rotate = "ffn_down"};
    const char *pos[3], *calib = NULL;
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (a[0] != '-') {
            if (n_pos == 3) {
                fprintf(stderr, "tern quantize: unexpected argument '%s'\n", a);
                return 2;
            }
            pos[n_pos++] = a;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tern quantize: missing value after '%s'\n", a);
            return 2;
        }
        const char *v = argv[++i];
        bool ok = true;
        if (!strcmp(a, "--calib"))
            calib = v;
        else if (!strcmp(a, "--keep"))
            o.keep = v;
        else if (!strcmp(a, "--rotate"))
            o.rotate = strcmp(v, "none") ? v : NULL;
        else if (!strcmp(a, "--alpha"))
            ok = tn_arg_f32(v, 0.0f, 1.0f, &o.alpha) && o.alpha > 0.0f;
        else if (!strcmp(a, "--ctx"))
            ok = tn_arg_i32(v, 2, 1 << 20, &o.n_ctx);
        else if (!strcmp(a, "--chunks"))
            ok = tn_arg_i32(v, 1, 1 << 20, &o.n_chunks);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            ok = tn_arg_i32(v, 1, 4096, &o.n_threads);
        else {
            fprintf(stderr, "tern quantize: unknown option '%s' for w8a8\n\n", a);
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "tern quantize: bad value '%s' for %s\n", v, a);
            return 2;
        }
    }
    if (n_pos != 3 || strcasecmp(pos[2], "w8a8")) {
        usage(stderr);
        return 2;
    }
    o.in_path = pos[0];
    o.out_path = pos[1];
    char *text = NULL;
    if (calib) {
        text = tn_read_file("quantize", calib, &o.calib_len);
        if (!text)
            return 1;
        o.calib_text = text;
    }
    double t0 = tn_time_s();
    tn_w8a8_result r;
    tn_status st = tn_quantize_w8a8(&o, &r);
    free(text);
    if (st != TN_OK) {
        fprintf(stderr, "tern quantize: %s\n", tn_last_error());
        return 1;
    }
    fprintf(stderr, "tern quantize: %d matrices to w8a8 (%d with a rotated input), %.2f -> %.2f MB, %s in %.1f s\n",
            (int)r.n_w8a8, (int)r.n_rotated, (double)r.bytes_in / 1e6, (double)r.bytes_out / 1e6,
            calib ? "smoothed" : "not smoothed", tn_time_s() - t0);
    if (calib)
        fprintf(stderr, "tern quantize: %d calibration windows, alpha %.2f, scales in [%.3g, %.3g]\n",
                (int)r.n_chunks, (double)(o.alpha > 0 ? o.alpha : 0.5f), r.min_s, r.max_s);
    return 0;
}
