/*
 * tiktoken.c — a byte-level BPE vocabulary from a tiktoken rank file
 * (Llama 3's tokenizer.model: one "base64-token rank" per line).
 *
 * Key idea: tiktoken merges, at each step, the adjacent pair whose
 * concatenation has the lowest rank. That is ordinary rank-ordered BPE over
 * the merge list made of every split of every token into two tokens,
 * ordered by the token's rank (then by the two halves' ranks), which is
 * what Hugging Face's converter writes for Llama 3 and what llama.cpp's
 * GGUF carries. So the file becomes tokenizer.ggml.* keys (tokens in GPT-2's
 * byte alphabet, merges, "llama-bpe") and is built like any GGUF vocabulary.
 */
#include "tok/tok_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#define LLAMA3_N_RANKS 128000
#define LLAMA3_N_SPECIAL 256

static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decodes base64 s[0..n) into out (room for 3 * n / 4 bytes); returns the
 * length or -1 if s is not base64. */
static long b64_decode(const char *s, size_t n, unsigned char *out)
{
    while (n > 0 && s[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return -1;
    long w = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_val((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[w++] = (unsigned char)(acc >> bits);
        }
    }
    return w;
}

/* Llama 3.1's names of its special tokens 128000..128255. */
static void llama3_special(int i, char *buf, size_t cap)
{
    static const struct {
        int id;
        const char *name;
    } named[] = {{0, "<|begin_of_text|>"}, {1, "<|end_of_text|>"}, {4, "<|finetune_right_pad_id|>"},
                 {6, "<|start_header_id|>"}, {7, "<|end_header_id|>"}, {8, "<|eom_id|>"},
                 {9, "<|eot_id|>"}, {10, "<|python_tag|>"}};
    int reserved = 0;
    for (int k = 0; k < i; k++) {
        bool is_named = false;
        for (size_t j = 0; j < TN_ARRAY_LEN(named); j++)
            is_named |= named[j].id == k;
        reserved += !is_named;
    }
    for (size_t j = 0; j < TN_ARRAY_LEN(named); j++)
        if (named[j].id == i) {
            snprintf(buf, cap, "%s", named[j].name);
            return;
        }
    snprintf(buf, cap, "<|reserved_special_token_%d|>", reserved);
}

/* A hash from raw token bytes to rank. */
typedef struct rank_map {
    uint32_t *slot; /* rank + 1, 0: empty */
    uint32_t mask;
    unsigned char *const *tok;
    const uint32_t *len;
} rank_map;

static int64_t rank_of(const rank_map *m, const unsigned char *s, size_t n)
{
    uint64_t h = tn__tok_hash((const char *)s, n);
    for (uint32_t i = (uint32_t)h & m->mask;; i = (i + 1) & m->mask) {
        uint32_t r = m->slot[i];
        if (r == 0)
            return -1;
        r--;
        if (m->len[r] == n && memcmp(m->tok[r], s, n) == 0)
            return r;
    }
}

typedef struct merge {
    uint32_t rank, l, r;
} merge;

static int cmp_merge(const void *a, const void *b)
{
    const merge *x = a, *y = b;
    if (x->rank != y->rank)
        return x->rank < y->rank ? -1 : 1;
    if (x->l != y->l)
        return x->l < y->l ? -1 : 1;
    return x->r < y->r ? -1 : x->r > y->r;
}

/* Token bytes in GPT-2's byte alphabet, NUL-terminated, malloc'd. */
static char *mapped(const unsigned char *s, size_t n)
{
    char *o = malloc(2 * n + 1);
    if (!o)
        return NULL;
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        w += (size_t)tn__bpe_byte_to_utf8(s[i], o + w);
    o[w] = '\0';
    return o;
}

/* Writes the vocabulary's tokenizer.ggml.* keys; see tok.h. */
tn_status tn_vocab_tiktoken_to_gguf(const char *path, tn_gguf_writer *w)
{
    if (!path || !w)
        return tn__err(TN_ERR_INVALID, "tok: tn_vocab_tiktoken_to_gguf: NULL path or writer");
    size_t size = 0;
    char *data = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return tn__err(TN_ERR_IO, "tok: cannot open %s: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) == 0) {
        long sz = ftell(f);
        if (sz >= 0 && fseek(f, 0, SEEK_SET) == 0) {
            size = (size_t)sz;
            data = malloc(size + 1);
            if (data && fread(data, 1, size, f) != size) {
                free(data);
                data = NULL;
            }
        }
    }
    fclose(f);
    if (!data)
        return tn__err(TN_ERR_IO, "tok: cannot read %s", path);

    tn_status s = TN_OK;
    size_t cap = 1024, n = 0, n_merges = 0;
    unsigned char **tok = malloc(cap * sizeof *tok);
    uint32_t *len = malloc(cap * sizeof *len);
    rank_map m = {0};
    merge *mg = NULL;
    char **pieces = NULL, **mstr = NULL;
    int32_t *types = NULL;
    size_t n_pieces = 0;
    if (!tok || !len)
        goto nomem;

    /* parse: "base64 rank" lines, ranks 0, 1, 2, ... */
    for (size_t at = 0, line = 1; at < size; line++) {
        char *eol = memchr(data + at, '\n', size - at);
        size_t end = eol ? (size_t)(eol - data) : size;
        char *l = data + at, *sp = memchr(l, ' ', end - at);
        at = end + 1;
        if (end == (size_t)(l - data))
            continue; /* an empty line */
        char *ep = NULL;
        unsigned long rank = sp ? strtoul(sp + 1, &ep, 10) : 0;
        unsigned char *buf = sp ? malloc((size_t)(sp - l) + 4) : NULL;
        long bl = buf ? b64_decode(l, (size_t)(sp - l), buf) : -1;
        if (!sp || bl <= 0 || ep == sp + 1 || rank != n) {
            free(buf);
            s = tn__err(TN_ERR_FORMAT, "tok: %s:%zu: expected \"<base64 token> %zu\"", path, line, n);
            goto done;
        }
        if (n == cap) {
            cap *= 2;
            unsigned char **t2 = realloc(tok, cap * sizeof *tok);
            if (t2)
                tok = t2;
            uint32_t *l2 = realloc(len, cap * sizeof *len);
            if (l2)
                len = l2;
            if (!t2 || !l2) {
                free(buf);
                goto nomem;
            }
        }
        tok[n] = buf;
        len[n++] = (uint32_t)bl;
    }
    if (n == 0) {
        s = tn__err(TN_ERR_FORMAT, "tok: %s holds no ranks", path);
        goto done;
    }

    /* the rank hash, then every split of every token into two tokens */
    uint32_t hc = 16;
    while (hc < 2 * n)
        hc *= 2;
    m = (rank_map){calloc(hc, sizeof *m.slot), hc - 1, tok, len};
    if (!m.slot)
        goto nomem;
    for (size_t r = 0; r < n; r++) {
        if (rank_of(&m, tok[r], len[r]) >= 0) {
            s = tn__err(TN_ERR_FORMAT, "tok: %s: rank %zu repeats an earlier token", path, r);
            goto done;
        }
        uint64_t h = tn__tok_hash((const char *)tok[r], len[r]);
        uint32_t i = (uint32_t)h & m.mask;
        while (m.slot[i])
            i = (i + 1) & m.mask;
        m.slot[i] = (uint32_t)r + 1;
    }
    size_t mcap = 4 * n;
    mg = malloc(mcap * sizeof *mg);
    if (!mg)
        goto nomem;
    for (size_t r = 0; r < n; r++)
        for (size_t k = 1; k < len[r]; k++) {
            int64_t a = rank_of(&m, tok[r], k), b = rank_of(&m, tok[r] + k, len[r] - k);
            if (a < 0 || b < 0)
                continue;
            if (n_merges == mcap) {
                mcap *= 2;
                merge *g2 = realloc(mg, mcap * sizeof *mg);
                if (!g2)
                    goto nomem;
                mg = g2;
            }
            mg[n_merges++] = (merge){(uint32_t)r, (uint32_t)a, (uint32_t)b};
        }
    qsort(mg, n_merges, sizeof *mg, cmp_merge);

    /* the keys */
    bool llama3 = n == LLAMA3_N_RANKS;
    n_pieces = n + (llama3 ? LLAMA3_N_SPECIAL : 0);
    pieces = calloc(n_pieces, sizeof *pieces);
    types = malloc(n_pieces * sizeof *types);
    mstr = calloc(n_merges ? n_merges : 1, sizeof *mstr);
    if (!pieces || !types || !mstr)
        goto nomem;
    for (size_t r = 0; r < n; r++) {
        if (!(pieces[r] = mapped(tok[r], len[r])))
            goto nomem;
        types[r] = TN_TOKEN_NORMAL;
    }
    for (size_t k = n; k < n_pieces; k++) {
        char name[64];
        llama3_special((int)(k - n), name, sizeof name);
        if (!(pieces[k] = strdup(name)))
            goto nomem;
        types[k] = TN_TOKEN_CONTROL;
    }
    for (size_t k = 0; k < n_merges; k++) {
        const char *a = pieces[mg[k].l], *b = pieces[mg[k].r];
        size_t al = strlen(a), bl = strlen(b);
        if (!(mstr[k] = malloc(al + bl + 2)))
            goto nomem;
        memcpy(mstr[k], a, al);
        mstr[k][al] = ' ';
        memcpy(mstr[k] + al + 1, b, bl + 1);
    }
    if ((s = tn_gguf_set_str(w, "tokenizer.ggml.model", "gpt2")) != TN_OK ||
        (s = tn_gguf_set_str(w, "tokenizer.ggml.pre", "llama-bpe")) != TN_OK ||
        (s = tn_gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)pieces, n_pieces)) != TN_OK ||
        (s = tn_gguf_set_arr(w, "tokenizer.ggml.token_type", TN_GGUF_INT32, types, n_pieces)) != TN_OK ||
        (s = tn_gguf_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)mstr, n_merges)) != TN_OK)
        goto done;
    if (llama3 && ((s = tn_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", LLAMA3_N_RANKS)) != TN_OK ||
                   (s = tn_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", LLAMA3_N_RANKS + 1)) != TN_OK ||
                   (s = tn_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", true)) != TN_OK))
        goto done;
    s = TN_OK;
    goto done;
nomem:
    s = tn__err(TN_ERR_NOMEM, "tok: %s: out of memory", path);
done:
    if (tok)
        for (size_t k = 0; k < n; k++)
            free(tok[k]);
    free(tok);
    free(len);
    free(m.slot);
    free(mg);
    if (pieces)
        for (size_t k = 0; k < n_pieces; k++)
            free(pieces[k]);
    free(pieces);
    free(types);
    if (mstr)
        for (size_t k = 0; k < n_merges; k++)
            free(mstr[k]);
    free(mstr);
    free(data);
    return s;
}

/* Builds the vocabulary of a tiktoken rank file; see tok.h. */
tn_status tn_vocab_from_tiktoken(const char *path, tn_vocab **out)
{
    return tn__vocab_from_converter(path, tn_vocab_tiktoken_to_gguf, out);
}
