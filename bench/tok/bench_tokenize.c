/*
 * bench_tokenize — tokenization and detokenization speed on one thread.
 *
 * Key idea: tokenize a real corpus the two ways a server does, as one text
 * (a long prompt, the perplexity tool) and line by line (many short
 * requests), and stream the ids back through tn_detok; print MB/s as a
 * table. Times are the thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so a
 * loaded machine slows the figures less. A benchmark, not a test: it
 * never fails on speed.
 *
 * Build and run (CMake does not build bench/ yet), from the repo root:
 *   cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release && cmake --build build-rel --target tern_tok
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc bench/tok/bench_tokenize.c \
 *      -Lbuild-rel -ltern_tok -ltern_format -ltern_kern -ltern_base \
 *      -lpcre2-8 -ljansson -lutf8proc -lm -lpthread -o /tmp/bench_tokenize
 *   /tmp/bench_tokenize [VOCAB] [TEXT]
 * VOCAB: a GGUF file, a tokenizer.json, or a tiktoken rank file (as for
 * `tern tokenize`). Defaults: the Llama 2 vocabulary and wikitext-2 test
 * set in ../shared/data. bench/tok/run.sh runs the table of docs/tokenizers.md.
 */
#include "tok/tok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Seconds of this thread's CPU time: on a shared machine the time other
 * jobs hold the core does not count (their use of the caches still does). */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf)
        *len = (size_t)n;
    return buf;
}

int main(int argc, char **argv)
{
    const char *vocab_path = argc > 1 ? argv[1] : "../shared/data/vocab/ggml-vocab-llama-spm.gguf";
    const char *text_path = argc > 2 ? argv[2] : "../shared/data/corpora/en/wikitext-2-raw/wiki.test.raw";
    tn_vocab *v = NULL;
    size_t pl = strlen(vocab_path);
    tn_status st;
    if (pl >= 5 && !strcmp(vocab_path + pl - 5, ".json")) {
        st = tn_vocab_from_hf_json(vocab_path, &v);
    } else if (pl >= 5 && !strcmp(vocab_path + pl - 5, ".gguf")) {
        tn_gguf *g;
        st = tn_gguf_open(vocab_path, &g);
        if (st == TN_OK) {
            st = tn_vocab_from_gguf(g, &v);
            tn_gguf_free(g);
        }
    } else {
        st = tn_vocab_from_tiktoken(vocab_path, &v);
    }
    if (st != TN_OK) {
        fprintf(stderr, "bench_tokenize: %s: %s\n", vocab_path, tn_last_error());
        return 1;
    }
    size_t len;
    char *text = read_all(text_path, &len);
    if (!text) {
        fprintf(stderr, "bench_tokenize: cannot read %s\n", text_path);
        return 1;
    }
    size_t cap = len + 16;
    int32_t *ids = malloc(cap * sizeof *ids), *line_ids = malloc(cap * sizeof *line_ids);
    char *back = malloc(2 * len + 1024);
    if (!ids || !line_ids || !back)
        return 1;

    printf("vocab %s (%d tokens)\ntext  %s (%.2f MB)\n\n", vocab_path, (int)tn_vocab_n_tokens(v), text_path, len / 1e6);
    printf("%-28s %10s %10s %8s\n", "what", "tokens", "seconds", "MB/s");

    /* one text, best of 3 */
    size_t n = 0;
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = cpu_s();
        if (tn_tokenize(v, text, len, tn_vocab_add_bos(v), false, ids, cap, &n) != TN_OK) {
            fprintf(stderr, "bench_tokenize: %s\n", tn_last_error());
            return 1;
        }
        double dt = cpu_s() - t0;
        best = dt < best ? dt : best;
    }
    printf("%-28s %10zu %10.3f %8.2f\n", "tokenize, one text", n, best, len / 1e6 / best);

    /* line by line (each line a request: BOS, leading-space rule) */
    best = 1e30;
    size_t n_lines_tok = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = cpu_s();
        n_lines_tok = 0;
        for (size_t i = 0; i < len;) {
            const char *nl = memchr(text + i, '\n', len - i);
            size_t e = nl ? (size_t)(nl - text) + 1 : len, k;
            if (tn_tokenize(v, text + i, e - i, tn_vocab_add_bos(v), false, line_ids, cap, &k) != TN_OK)
                return 1;
            n_lines_tok += k;
            i = e;
        }
        double dt = cpu_s() - t0;
        best = dt < best ? dt : best;
    }
    printf("%-28s %10zu %10.3f %8.2f\n", "tokenize, line by line", n_lines_tok, best, len / 1e6 / best);

    /* streaming detokenization of the one-text ids */
    best = 1e30;
    size_t w = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = cpu_s();
        tn_detok d;
        tn_detok_init(&d);
        w = 0;
        for (size_t i = 0; i < n; i++)
            w += tn_detok_push(&d, v, ids[i], back + w, TN_DETOK_MAX);
        w += tn_detok_flush(&d, back + w, TN_DETOK_MAX);
        double dt = cpu_s() - t0;
        best = dt < best ? dt : best;
    }
    printf("%-28s %10zu %10.3f %8.2f\n", "detok stream", n, best, w / 1e6 / best);
    /* SPM puts a space before the text; the other families give it back as it was */
    bool same = (w == len + 1 && back[0] == ' ' && memcmp(back + 1, text, len) == 0) ||
                (w == len && memcmp(back, text, len) == 0);
    printf("\nround trip (detok == text, or \" \" + text for SPM): %s\n", same ? "yes" : "NO");

    free(back);
    free(ids);
    free(line_ids);
    free(text);
    tn_vocab_free(v);
    return same ? 0 : 1;
}
