/*
 * test_tok_bpe — byte-level BPE and WordPiece against llama.cpp's test
 * vectors (GGUF vocabularies, Qwen2's through a Hugging Face tokenizer.json,
 * Llama 3's through its tiktoken rank file), round trips through the
 * detokenizer, invalid UTF-8, special tokens, the merge loop checked against
 * a naive string-based BPE written here, and the loader's errors.
 */
#include "testutil.h"

#include "tok/tok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VOCAB_DIR TN_SHARED_DATA "vocab/"

static tn_vocab *load_gguf(const char *path)
{
    tn_gguf *g = NULL;
    tn_status s = tn_gguf_open(path, &g);
    if (s != TN_OK)
        print_error("%s: %s\n", path, tn_last_error());
    assert_int_equal(s, TN_OK);
    tn_vocab *v = NULL;
    s = tn_vocab_from_gguf(g, &v);
    if (s != TN_OK)
        print_error("%s: %s\n", path, tn_last_error());
    assert_int_equal(s, TN_OK);
    tn_gguf_free(g);
    return v;
}

static tn_vocab *load_named(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, VOCAB_DIR "ggml-vocab-%s.gguf", name);
    return load_gguf(path);
}

static int32_t *tok(const tn_vocab *v, const char *s, size_t len, bool bos, bool special, size_t *n)
{
    size_t need = 0;
    tn_status st = tn_tokenize(v, s, len, bos, special, NULL, 0, &need);
    if (st != TN_OK && st != TN_ERR_FULL)
        print_error("tokenize: %s\n", tn_last_error());
    assert_true(st == TN_OK || st == TN_ERR_FULL);
    int32_t *ids = malloc((need ? need : 1) * sizeof *ids);
    assert_non_null(ids);
    assert_int_equal(tn_tokenize(v, s, len, bos, special, ids, need, n), TN_OK);
    assert_int_equal(*n, need);
    return ids;
}

/* Streams ids through tn_detok into a malloc'd string. */
static char *detok(const tn_vocab *v, const int32_t *ids, size_t n, size_t *len)
{
    char *out = malloc((n + 1) * TN_DETOK_MAX);
    assert_non_null(out);
    tn_detok d;
    tn_detok_init(&d);
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        w += tn_detok_push(&d, v, ids[i], out + w, TN_DETOK_MAX);
    w += tn_detok_flush(&d, out + w, TN_DETOK_MAX);
    *len = w;
    return out;
}

/* ---------------------------------------------------------------------------
 * llama.cpp's vectors (format: see test_tok_spm.c). Every case must match;
 * every valid-UTF-8 case that has no special-token text must also come back
 * unchanged through the detokenizer (byte-level BPE only: WordPiece loses
 * case and spaces).
 * ------------------------------------------------------------------------ */
static int run_vectors(tn_vocab *v, const char *name, bool round_trip, int *n_cases)
{
    char inp[512], out[512];
    snprintf(inp, sizeof inp, VOCAB_DIR "ggml-vocab-%s.gguf.inp", name);
    snprintf(out, sizeof out, VOCAB_DIR "ggml-vocab-%s.gguf.out", name);
    tn_test_vector *vec;
    int n_vec = tn_test_vectors_read(inp, out, &vec);
    assert_true(n_vec > 0);

    int failures = 0;
    for (int c = 0; c < n_vec; c++) {
        const tn_test_vector *t = &vec[c];
        size_t n;
        int32_t *got = tok(v, t->text, t->len, false, false, &n);
        if (n != t->n_ids || memcmp(got, t->ids, n * sizeof *got) != 0) {
            failures++;
            print_error("%s case %d (\"%.*s\"): got", name, c, (int)TN_MIN(t->len, 60), t->text);
            for (size_t i = 0; i < n; i++)
                print_error(" %d", got[i]);
            print_error("\n");
        } else if (round_trip) {
            size_t blen;
            char *back = detok(v, got, n, &blen);
            if (blen != t->len || memcmp(back, t->text, t->len) != 0) {
                failures++;
                print_error("%s case %d: detokenizes to \"%.*s\"\n", name, c, (int)TN_MIN(blen, 60), back);
            }
            free(back);
        }
        free(got);
    }
    tn_test_vectors_free(vec, n_vec);
    *n_cases = n_vec;
    return failures;
}

static void check_vectors(tn_vocab *v, const char *name, bool round_trip)
{
    int n;
    int failures = run_vectors(v, name, round_trip, &n);
    print_message("%s: %d of %d vectors pass\n", name, n - failures, n);
    assert_true(n >= 30);
    assert_int_equal(failures, 0);
}

static void test_gguf_bpe_vectors(void **state)
{
    (void)state;
    static const char *const names[] = {"gpt-2", "falcon", "mpt", "starcoder", "deepseek-llm"};
    for (size_t i = 0; i < TN_ARRAY_LEN(names); i++) {
        tn_vocab *v = load_named(names[i]);
        check_vectors(v, names[i], true);
        tn_vocab_free(v);
    }
}

static void test_bert_vectors(void **state)
{
    (void)state;
    tn_vocab *v = load_named("bert-bge");
    check_vectors(v, "bert-bge", false);
    /* add_bos gives [CLS] ... [SEP] */
    size_t n;
    int32_t *ids = tok(v, "Hello", 5, true, false, &n);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 101);
    assert_int_equal(ids[2], 102);
    free(ids);
    tn_vocab_free(v);
}

static void test_qwen2_hf_json(void **state)
{
    (void)state;
    tn_vocab *v = NULL;
    tn_status s = tn_vocab_from_hf_json(VOCAB_DIR "hf/qwen3/tokenizer.json", &v);
    if (s != TN_OK)
        print_error("%s\n", tn_last_error());
    assert_int_equal(s, TN_OK);
    check_vectors(v, "qwen2", true);
    /* added tokens: <|im_start|> is special (control), found only on request */
    size_t n;
    const char *t = "<|im_start|>user";
    int32_t *ids = tok(v, t, strlen(t), false, true, &n);
    assert_true(n == 2 && strcmp(tn_vocab_piece(v, ids[0]), "<|im_start|>") == 0);
    assert_int_equal(tn_vocab_token_type(v, ids[0]), TN_TOKEN_CONTROL);
    free(ids);
    ids = tok(v, t, strlen(t), false, false, &n);
    assert_true(n > 2);
    free(ids);
    assert_true(tn_vocab_is_eog(v, tn_vocab_eos(v)));
    tn_vocab_free(v);
}

static void test_llama3_tiktoken(void **state)
{
    (void)state;
    tn_vocab *v = NULL;
    tn_status s = tn_vocab_from_tiktoken(VOCAB_DIR "llama3-tiktoken/tokenizer.model", &v);
    if (s != TN_OK)
        print_error("%s\n", tn_last_error());
    assert_int_equal(s, TN_OK);
    assert_int_equal(tn_vocab_n_tokens(v), 128256);
    check_vectors(v, "llama-bpe", true);
    assert_int_equal(tn_vocab_bos(v), 128000);
    assert_true(tn_vocab_add_bos(v));
    assert_string_equal(tn_vocab_piece(v, 128009), "<|eot_id|>");
    assert_string_equal(tn_vocab_piece(v, 128255), "<|reserved_special_token_247|>");
    assert_true(tn_vocab_is_eog(v, 128009));
    size_t n;
    const char *t = "<|start_header_id|>user<|end_header_id|>";
    int32_t *ids = tok(v, t, strlen(t), true, true, &n);
    assert_int_equal(n, 4);
    assert_int_equal(ids[0], 128000);
    assert_int_equal(ids[1], 128006);
    assert_int_equal(ids[3], 128007);
    free(ids);
    tn_vocab_free(v);
}

/* ---------------------------------------------------------------------------
 * Invalid UTF-8: each byte that does not start a sequence counts as U+FFFD
 * (llama.cpp), nothing crashes, and the result is the same as for the
 * cleaned text.
 * ------------------------------------------------------------------------ */
static void test_invalid_utf8(void **state)
{
    (void)state;
    static const char *const names[] = {"gpt-2", "deepseek-llm", "bert-bge"};
    static const struct {
        const char *bad, *clean;
    } cases[] = {
        {"a\xff" "b", "a\xef\xbf\xbd" "b"},
        {"\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd"},
        {"x\xe4\xbd", "x\xef\xbf\xbd\xef\xbf\xbd"},  /* truncated: both bytes replaced */
        {"\xc0\x80z", "\x00z"},                      /* overlong NUL decodes to NUL */
        {"\xed\xa0\x80!", "\xef\xbf\xbd!"},          /* a surrogate */
        {"hi \xf8\x88\x80\x80\x80", "hi \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    };
    for (size_t k = 0; k < TN_ARRAY_LEN(names); k++) {
        tn_vocab *v = load_named(names[k]);
        for (size_t i = 0; i < TN_ARRAY_LEN(cases); i++) {
            size_t bl = strlen(cases[i].bad), cl = strlen(cases[i].clean);
            if (i == 3)
                cl = 2;
            size_t n1, n2;
            int32_t *a = tok(v, cases[i].bad, bl, false, false, &n1);
            int32_t *b = tok(v, cases[i].clean, cl, false, false, &n2);
            assert_true(n1 > 0 || k == 2); /* WordPiece drops U+FFFD */
            assert_int_equal(n1, n2);
            assert_memory_equal(a, b, n1 * sizeof *a);
            free(a);
            free(b);
        }
        tn_vocab_free(v);
    }
}

/* ---------------------------------------------------------------------------
 * The merge loop against a naive BPE over strings (llama.cpp's way): split
 * into mapped characters, repeatedly merge the adjacent pair with the lowest
 * rank in the merges list, leftmost first. Words up to 300 bytes cover both
 * the short scan and the heap path.
 * ------------------------------------------------------------------------ */
typedef struct merge_entry {
    char *text; /* "left right" */
    int64_t rank;
} merge_entry;

typedef struct naive {
    tn_gguf *g;
    int64_t kv;
    uint64_t n;
    merge_entry *sorted; /* the merges sorted by text, for lookup by binary search */
} naive;

static int merge_cmp(const void *a, const void *b)
{
    return strcmp(((const merge_entry *)a)->text, ((const merge_entry *)b)->text);
}

static void naive_index(naive *nv)
{
    nv->sorted = calloc(nv->n, sizeof *nv->sorted);
    assert_non_null(nv->sorted);
    for (uint64_t i = 0; i < nv->n; i++) {
        const char *s;
        size_t len;
        assert_int_equal(tn_gguf_arr_str(nv->g, nv->kv, i, &s, &len), TN_OK);
        nv->sorted[i].text = strndup(s, len);
        nv->sorted[i].rank = (int64_t)i;
    }
    qsort(nv->sorted, nv->n, sizeof *nv->sorted, merge_cmp);
}

static void naive_free(naive *nv)
{
    for (uint64_t i = 0; i < nv->n; i++)
        free(nv->sorted[i].text);
    free(nv->sorted);
}

static int64_t naive_rank(const naive *nv, const char *l, size_t ll, const char *r, size_t rl)
{
    char key[820];
    assert_true(ll + rl + 2 <= sizeof key);
    memcpy(key, l, ll);
    key[ll] = ' ';
    memcpy(key + ll + 1, r, rl);
    key[ll + 1 + rl] = '\0';
    merge_entry probe = {key, 0};
    const merge_entry *hit = bsearch(&probe, nv->sorted, nv->n, sizeof *nv->sorted, merge_cmp);
    return hit ? hit->rank : -1;
}

static void test_merge_against_naive(void **state)
{
    (void)state;
    naive nv;
    assert_int_equal(tn_gguf_open(VOCAB_DIR "ggml-vocab-gpt-2.gguf", &nv.g), TN_OK);
    nv.kv = tn_gguf_find_key(nv.g, "tokenizer.ggml.merges");
    tn_gguf_type et;
    const void *data;
    assert_int_equal(tn_gguf_get_arr(nv.g, "tokenizer.ggml.merges", &et, &nv.n, &data), TN_OK);
    naive_index(&nv);
    tn_vocab *v = load_named("gpt-2");

    /* words of letters only, so the pre-tokenizer keeps each whole */
    static const char *const words[] = {"internationalization", "abracadabra", "Pneumonoultramicroscopicsilicovolcanoconiosis",
                                        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "x"};
    char word[400];
    for (size_t w = 0; w < TN_ARRAY_LEN(words) + 2; w++) {
        if (w < TN_ARRAY_LEN(words)) {
            snprintf(word, sizeof word, "%s", words[w]);
        } else { /* long pseudo-random letter strings */
            uint32_t x = 12345u + (uint32_t)w;
            size_t len = w == TN_ARRAY_LEN(words) ? 120 : 300;
            for (size_t i = 0; i < len; i++) {
                x = x * 1103515245u + 12345u;
                word[i] = (char)('a' + (x >> 16) % 7);
            }
            word[len] = '\0';
        }
        size_t len = strlen(word);
        /* naive: symbols are the mapped characters (letters map to themselves) */
        static char sym[400][400];
        size_t ns = len;
        for (size_t i = 0; i < len; i++) {
            sym[i][0] = word[i];
            sym[i][1] = '\0';
        }
        for (;;) {
            int64_t best = -1;
            size_t at = 0;
            for (size_t i = 0; i + 1 < ns; i++) {
                int64_t r = naive_rank(&nv, sym[i], strlen(sym[i]), sym[i + 1], strlen(sym[i + 1]));
                if (r >= 0 && (best < 0 || r < best)) {
                    best = r;
                    at = i;
                }
            }
            if (best < 0)
                break;
            size_t la = strlen(sym[at]), lb = strlen(sym[at + 1]);
            assert_true(la + lb < sizeof sym[0]);
            char joined[sizeof sym[0]];
            memcpy(joined, sym[at], la);
            memcpy(joined + la, sym[at + 1], lb + 1);
            memcpy(sym[at], joined, la + lb + 1);
            memmove(sym[at + 1], sym[at + 2], (ns - at - 2) * sizeof sym[0]);
            ns--;
        }
        size_t n;
        int32_t *ids = tok(v, word, len, false, false, &n);
        assert_int_equal(n, ns);
        for (size_t i = 0; i < n; i++)
            assert_string_equal(tn_vocab_piece(v, ids[i]), sym[i]);
        free(ids);
    }
    tn_vocab_free(v);
    naive_free(&nv);
    tn_gguf_free(nv.g);
}

/* ---------------------------------------------------------------------------
 * Special tokens, streaming detokenization of split characters, long pieces
 * ------------------------------------------------------------------------ */
static void test_specials_and_detok(void **state)
{
    (void)state;
    tn_vocab *v = load_named("gpt-2");
    size_t n;
    const char *t = "a<|endoftext|>b";
    int32_t *ids = tok(v, t, strlen(t), false, true, &n);
    assert_int_equal(n, 3);
    assert_int_equal(ids[1], 50256);
    free(ids);
    ids = tok(v, t, strlen(t), false, false, &n);
    assert_true(n > 3);
    for (size_t i = 0; i < n; i++)
        assert_true(ids[i] != 50256);
    free(ids);
    /* a control token prints nothing, or its text when rendered */
    char buf[64];
    assert_int_equal(tn_token_to_piece(v, 50256, false, buf, sizeof buf), 0);
    assert_int_equal(tn_token_to_piece(v, 50256, true, buf, sizeof buf), 13);
    /* "Ġworld" is " world" */
    ids = tok(v, " world", 6, false, false, &n);
    assert_int_equal(n, 1);
    assert_int_equal(tn_token_to_piece(v, ids[0], false, buf, sizeof buf), 6);
    assert_memory_equal(buf, " world", 6);
    free(ids);

    /* an emoji is split over byte tokens: the stream holds the bytes until
     * the character is complete */
    const char *e = "\xf0\x9f\xa6\x99"; /* 🦙 */
    ids = tok(v, e, 4, false, false, &n);
    assert_true(n >= 2);
    tn_detok d;
    tn_detok_init(&d);
    char out[TN_DETOK_MAX];
    size_t total = 0;
    for (size_t i = 0; i + 1 < n; i++)
        total += tn_detok_push(&d, v, ids[i], out + total, sizeof out - total);
    assert_int_equal(total, 0);
    total += tn_detok_push(&d, v, ids[n - 1], out + total, sizeof out - total);
    assert_int_equal(total, 4);
    assert_memory_equal(out, e, 4);
    free(ids);
    tn_vocab_free(v);
}

/* ---------------------------------------------------------------------------
 * Loader errors on hand-written vocabularies
 * ------------------------------------------------------------------------ */
static tn_status build_bpe(const char *pre, const char *const *merges, uint64_t n_merges, tn_vocab **out)
{
    static const char *const tokens[] = {"a", "b", "ab", "<|end|>"};
    tn_gguf_writer *w;
    assert_int_equal(tn_gguf_writer_new(&w), TN_OK);
    assert_int_equal(tn_gguf_set_str(w, "tokenizer.ggml.model", "gpt2"), TN_OK);
    if (pre)
        assert_int_equal(tn_gguf_set_str(w, "tokenizer.ggml.pre", pre), TN_OK);
    assert_int_equal(tn_gguf_set_arr_str(w, "tokenizer.ggml.tokens", tokens, 4), TN_OK);
    if (merges)
        assert_int_equal(tn_gguf_set_arr_str(w, "tokenizer.ggml.merges", merges, n_merges), TN_OK);
    char *path = tn_test_tmp_path(".gguf");
    assert_int_equal(tn_gguf_writer_write(w, path), TN_OK);
    tn_gguf_writer_free(w);
    tn_gguf *g;
    assert_int_equal(tn_gguf_open(path, &g), TN_OK);
    remove(path);
    free(path);
    *out = NULL;
    tn_status s = tn_vocab_from_gguf(g, out);
    tn_gguf_free(g);
    return s;
}

static void test_loader_errors(void **state)
{
    (void)state;
    static const char *const merges[] = {"a b"};
    tn_vocab *v;
    assert_int_equal(build_bpe("gpt-2", merges, 1, &v), TN_OK);
    size_t n;
    int32_t *ids = tok(v, "abba", 4, false, false, &n);
    int32_t want[] = {2, 1, 0};
    assert_int_equal(n, 3);
    assert_memory_equal(ids, want, sizeof want);
    free(ids);
    tn_vocab_free(v);

    assert_int_equal(build_bpe("no-such-pre", merges, 1, &v), TN_ERR_UNSUPPORTED);
    assert_null(v);
    assert_non_null(strstr(tn_last_error(), "no-such-pre"));
    assert_int_equal(build_bpe("gpt-2", NULL, 0, &v), TN_ERR_FORMAT);
    assert_non_null(strstr(tn_last_error(), "tokenizer.ggml.merges"));
    static const char *const bad[] = {"ab"};
    assert_int_equal(build_bpe("gpt-2", bad, 1, &v), TN_ERR_FORMAT);
    assert_non_null(strstr(tn_last_error(), "tokenizer.ggml.merges[0]"));
    /* no pre key: llama.cpp's "default" */
    assert_int_equal(build_bpe(NULL, merges, 1, &v), TN_OK);
    tn_vocab_free(v);

    /* missing files and broken JSON name the file */
    assert_int_equal(tn_vocab_from_hf_json("/nonexistent/tokenizer.json", &v), TN_ERR_IO);
    assert_non_null(strstr(tn_last_error(), "/nonexistent/tokenizer.json"));
    char *path = tn_test_tmp_path(".json");
    assert_int_equal(tn_test_write_file(path, "{\"model\": {\"type\": \"Unigram\"}}", 30), 0);
    assert_int_equal(tn_vocab_from_hf_json(path, &v), TN_ERR_UNSUPPORTED);
    assert_non_null(strstr(tn_last_error(), "model.type"));
    assert_int_equal(tn_test_write_file(path, "{\"model\": ", 10), 0);
    assert_int_equal(tn_vocab_from_hf_json(path, &v), TN_ERR_FORMAT);
    assert_int_equal(tn_test_write_file(path, "QUJD 0\nnot base64!! 1\n", 22), 0);
    assert_int_equal(tn_vocab_from_tiktoken(path, &v), TN_ERR_FORMAT);
    assert_non_null(strstr(tn_last_error(), ":2"));
    remove(path);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gguf_bpe_vectors),  cmocka_unit_test(test_bert_vectors),
        cmocka_unit_test(test_qwen2_hf_json),     cmocka_unit_test(test_llama3_tiktoken),
        cmocka_unit_test(test_invalid_utf8),      cmocka_unit_test(test_merge_against_naive),
        cmocka_unit_test(test_specials_and_detok), cmocka_unit_test(test_loader_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
