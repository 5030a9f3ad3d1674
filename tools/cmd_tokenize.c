/*
 * cmd_tokenize.c — `tern tokenize` and `tern detokenize`: text on stdin to
 * token ids on stdout, and back.
 *
 * Key idea: a thin shell over tn_tokenize and the streaming detokenizer, so
 * any vocabulary can be checked by hand against a reference. MODEL is any
 * GGUF file with tokenizer.ggml.* keys (a full model or a vocabulary-only
 * file), a Hugging Face tokenizer.json, or a tiktoken rank file.
 */
#include "tools.h"

#include "tok/tok.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out, bool detok)
{
    if (detok)
        fprintf(out, "usage: tern detokenize -m MODEL [--special]\n"
                     "\n"
                     "Reads token ids (separated by spaces, commas or newlines) from stdin\n"
                     "and prints the text they stand for. --special prints the text of\n"
                     "control tokens too. An id outside the vocabulary is an error (exit 1).\n");
    else
        fprintf(out, "usage: tern tokenize -m MODEL [--special] [--pieces] [--no-bos]\n"
                     "\n"
                     "Reads text from stdin (all of it, byte for byte: a final newline is\n"
                     "part of the text) and prints the token ids separated by spaces.\n"
                     "  --special  recognize control tokens (<|im_start|>, <s>, ...) in the text\n"
                     "  --pieces   print one token per line: id, a tab, the token's text\n"
                     "             (escaped: \\n \\t \\\\ \\xNN)\n"
                     "  --no-bos   do not add BOS even if the vocabulary asks for it\n");
    fprintf(out, "\nMODEL: a GGUF file with a vocabulary, a tokenizer.json, or a tiktoken\n"
                 "rank file (Llama 3's tokenizer.model).\n");
}

/* Loads a vocabulary by the file's kind: GGUF magic, ".json", or else a
 * tiktoken rank file. */
static tn_status load_vocab(const char *path, tn_vocab **v)
{
    size_t n = strlen(path);
    if (n >= 5 && strcmp(path + n - 5, ".json") == 0)
        return tn_vocab_from_hf_json(path, v);
    FILE *f = fopen(path, "rb"); /* if it cannot be opened, the tiktoken loader says why */
    char magic[4] = {0};
    size_t got = f ? fread(magic, 1, 4, f) : 0;
    if (f)
        fclose(f);
    if (got == 4 && memcmp(magic, "GGUF", 4) == 0) {
        tn_gguf *g;
        tn_status s = tn_gguf_open(path, &g);
        if (s != TN_OK)
            return s;
        s = tn_vocab_from_gguf(g, v);
        tn_gguf_free(g);
        return s;
    }
    return tn_vocab_from_tiktoken(path, v);
}

static char *read_stdin(size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, stdin);
        n += got;
        if (got == 0)
            break;
        if (n == cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) {
                free(buf);
                return NULL;
            }
            buf = b;
            cap *= 2;
        }
    }
    *len = n;
    return buf;
}

static void print_escaped(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\\')
            fputs("\\\\", stdout);
        else if (c < 0x20 || c == 0x7F)
            printf("\\x%02X", c);
        else
            putchar(c);
    }
}

/* Parses the common options; returns 0 to go on, else the exit status. */
static int parse(int argc, char **argv, bool detok, const char **model, bool *special, bool *pieces, bool *no_bos)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout, detok);
            return -1;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (++i >= argc) {
                fprintf(stderr, "tern: %s needs a value\n", a);
                return 2;
            }
            *model = argv[i];
        } else if (!strcmp(a, "--special")) {
            *special = true;
        } else if (!detok && !strcmp(a, "--pieces")) {
            *pieces = true;
        } else if (!detok && !strcmp(a, "--no-bos")) {
            *no_bos = true;
        } else {
            fprintf(stderr, "tern: unknown option '%s'\n\n", a);
            usage(stderr, detok);
            return 2;
        }
    }
    if (!*model) {
        fprintf(stderr, "tern: -m MODEL is required\n\n");
        usage(stderr, detok);
        return 2;
    }
    return 0;
}

/* `tern tokenize`: see usage(). */
int tn_cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL;
    bool special = false, pieces = false, no_bos = false;
    int rc = parse(argc, argv, false, &model, &special, &pieces, &no_bos);
    if (rc)
        return rc < 0 ? 0 : rc;
    tn_vocab *v;
    if (load_vocab(model, &v) != TN_OK) {
        fprintf(stderr, "tern: %s: %s\n", model, tn_last_error());
        return 1;
    }
    size_t len;
    char *text = read_stdin(&len);
    if (!text) {
        fprintf(stderr, "tern: out of memory reading stdin\n");
        tn_vocab_free(v);
        return 1;
    }
    size_t cap = len + 16, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    tn_status s = ids ? tn_tokenize(v, text, len, !no_bos && tn_vocab_add_bos(v), special, ids, cap, &n) : TN_ERR_NOMEM;
    if (s == TN_ERR_FULL) { /* never with len + 16 slots, but the contract allows it */
        int32_t *b = realloc(ids, n * sizeof *ids);
        s = b ? tn_tokenize(v, text, len, !no_bos && tn_vocab_add_bos(v), special, b, n, &n) : TN_ERR_NOMEM;
        ids = b ? b : ids;
    }
    if (s != TN_OK) {
        fprintf(stderr, "tern: tokenize: %s\n", s == TN_ERR_NOMEM ? "out of memory" : tn_last_error());
        rc = 1;
    } else if (pieces) {
        char buf[TN_DETOK_MAX];
        for (size_t i = 0; i < n; i++) {
            size_t pl = tn_token_to_piece(v, ids[i], true, buf, sizeof buf);
            printf("%d\t", (int)ids[i]);
            print_escaped(buf, TN_MIN(pl, sizeof buf));
            putchar('\n');
        }
    } else {
        for (size_t i = 0; i < n; i++)
            printf(i ? " %d" : "%d", (int)ids[i]);
        putchar('\n');
    }
    free(ids);
    free(text);
    tn_vocab_free(v);
    return rc;
}

/* `tern detokenize`: see usage(). */
int tn_cmd_detokenize(int argc, char **argv)
{
    const char *model = NULL;
    bool special = false, pieces = false, no_bos = false;
    int rc = parse(argc, argv, true, &model, &special, &pieces, &no_bos);
    if (rc)
        return rc < 0 ? 0 : rc;
    tn_vocab *v;
    if (load_vocab(model, &v) != TN_OK) {
        fprintf(stderr, "tern: %s: %s\n", model, tn_last_error());
        return 1;
    }
    size_t len;
    char *text = read_stdin(&len);
    if (!text) {
        fprintf(stderr, "tern: out of memory reading stdin\n");
        tn_vocab_free(v);
        return 1;
    }
    tn_detok d;
    tn_detok_init(&d);
    char out[TN_DETOK_MAX];
    size_t at = 0;
    while (at < len) {
        while (at < len && strchr(" \t\r\n,", text[at]))
            at++;
        if (at == len)
            break;
        size_t start = at;
        while (at < len && !strchr(" \t\r\n,", text[at]))
            at++;
        char tokbuf[32];
        size_t tl = at - start;
        char *end = NULL;
        long id = -1;
        if (tl < sizeof tokbuf) {
            memcpy(tokbuf, text + start, tl);
            tokbuf[tl] = '\0';
            errno = 0;
            id = strtol(tokbuf, &end, 10);
        }
        if (tl >= sizeof tokbuf || *end != '\0' || errno || id < 0 || id >= tn_vocab_n_tokens(v)) {
            fflush(stdout);
            fprintf(stderr, "tern: detokenize: \"%.*s\" at byte %zu is not a token id of this vocabulary (0..%d)\n",
                    (int)TN_MIN(tl, 32), text + start, start, (int)tn_vocab_n_tokens(v) - 1);
            rc = 1;
            break;
        }
        int t = tn_vocab_token_type(v, (int32_t)id);
        size_t w;
        if (special && (t == TN_TOKEN_CONTROL || t == TN_TOKEN_UNKNOWN)) {
            w = tn_detok_flush(&d, out, sizeof out);
            fwrite(out, 1, w, stdout);
            w = TN_MIN(tn_token_to_piece(v, (int32_t)id, true, out, sizeof out), sizeof out);
        } else {
            w = tn_detok_push(&d, v, (int32_t)id, out, sizeof out);
        }
        fwrite(out, 1, w, stdout);
    }
    size_t w = tn_detok_flush(&d, out, sizeof out);
    fwrite(out, 1, w, stdout);
    free(text);
    tn_vocab_free(v);
    return rc;
}
