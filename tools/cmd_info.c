/*
 * cmd_info.c — `tern info MODEL.gguf`: print a GGUF file's header, every
 * metadata entry and the tensor table.
 *
 * Key idea: a read-only view over tn_gguf_open, which has validated the
 * whole file, so printing is a plain walk; long arrays and strings are
 * abbreviated by tn_gguf_kv_format.
 */
#include "tools.h"

#include "format/gguf.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tern info MODEL.gguf\n"
            "\n"
            "Prints the GGUF version and alignment, every metadata key with its type\n"
            "and value (long arrays abbreviated: type, count, first elements), the\n"
            "tensor table (name, type, shape, offset in the data section, bytes) and\n"
            "totals. Exits 1 if the file cannot be opened or is malformed.\n");
}

/* Writes "[ne0, ne1, ...]" into buf. */
static void format_shape(const tn_gguf_tensor *t, char *buf, size_t cap)
{
    size_t len = 0;
    len += (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < t->n_dims && len < cap; d++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%" PRId64, d ? ", " : "", t->ne[d]);
    if (len < cap)
        snprintf(buf + len, cap - len, "]");
}

static void print_info(const char *path, const tn_gguf *g)
{
    int64_t n_kv = tn_gguf_n_kv(g), n_t = tn_gguf_n_tensors(g);
    printf("file:      %s\n", path);
    printf("version:   %" PRIu32 "\n", tn_gguf_version(g));
    printf("alignment: %" PRIu32 "\n", tn_gguf_alignment(g));

    int kw = 10;
    for (int64_t i = 0; i < n_kv; i++) {
        int l = (int)strlen(tn_gguf_kv_key(g, i));
        if (l > kw)
            kw = l > 48 ? 48 : l;
    }
    printf("\nmetadata: %" PRId64 " keys\n", n_kv);
    char val[320];
    for (int64_t i = 0; i < n_kv; i++)
        printf("  %-*s  %-4s  %s\n", kw, tn_gguf_kv_key(g, i), tn_gguf_type_name(tn_gguf_kv_type(g, i)),
               tn_gguf_kv_format(g, i, val, sizeof val));

    int nw = 4;
    for (int64_t i = 0; i < n_t; i++) {
        int l = (int)strlen(tn_gguf_tensor_at(g, i)->name);
        if (l > nw)
            nw = l > 64 ? 64 : l;
    }
    printf("\ntensors: %" PRId64 "\n", n_t);
    printf("  %-*s  %-6s  %-24s  %12s  %12s\n", nw, "name", "type", "shape", "offset", "bytes");
    uint64_t params = 0, bytes = 0;
    char shape[128];
    for (int64_t i = 0; i < n_t; i++) {
        const tn_gguf_tensor *t = tn_gguf_tensor_at(g, i);
        const tn_dtype_traits *tr = tn_dtype_traits_of(t->type);
        format_shape(t, shape, sizeof shape);
        printf("  %-*s  %-6s  %-24s  %12" PRIu64 "  %12" PRIu64 "\n", nw, t->name, tr ? tr->name : "?", shape,
               t->offset, t->nbytes);
        /* validated at open: the element count of each tensor fits int64 */
        params += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
        bytes += t->nbytes;
    }
    printf("\ntotal: %" PRId64 " tensors, %" PRIu64 " parameters, %" PRIu64 " bytes\n", n_t, params, bytes);
}

/* `tern info MODEL.gguf`: returns 0 on success, 1 if the file cannot be
 * read (message on stderr), 2 on a usage error. */
int tn_cmd_info(int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        if (argv[i][0] == '-' || path) {
            fprintf(stderr, "tern info: unexpected argument '%s'\n\n", argv[i]);
            usage(stderr);
            return 2;
        }
        path = argv[i];
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    tn_gguf *g;
    if (tn_gguf_open(path, &g) != TN_OK) {
        fprintf(stderr, "tern info: %s\n", tn_last_error());
        return 1;
    }
    print_info(path, g);
    tn_gguf_free(g);
    return fflush(stdout) == 0 ? 0 : 1;
}
