/*
 * vocab_file.c — a vocabulary straight from a GGUF path (public API): opens
 * the file, builds the vocabulary, closes the file again.
 */
#include "tok/tok.h"

tn_status tn_vocab_load(const char *path, tn_vocab **out)
{
    *out = NULL;
    tn_gguf *g = NULL;
    tn_status st = tn_gguf_open(path, &g);
    if (st != TN_OK)
        return st;
    st = tn_vocab_from_gguf(g, out);
    tn_gguf_free(g);
    if (st != TN_OK)
        return tn__err_prefix(st, "%s", path);
    return TN_OK;
}
