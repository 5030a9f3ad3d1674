/*
 * test_tok_spm — the SentencePiece tokenizer against llama.cpp's test
 * vectors, special-token splitting, the leading-space rule, invalid UTF-8,
 * and the vocabulary loader's checks on hand-written GGUF files.
 */
#include "testutil.h"

#include "tok/tok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VOCAB_DIR TN_SHARED_DATA "vocab/"
#define STORIES TN_SHARED_DATA "models/stories260K/stories260K.v3.derived.gguf"

static tn_vocab *load_vocab(const char *path)
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

/* Tokenizes into a fresh malloc'd array; *n gets the count. */
static int32_t *tok(const tn_vocab *v, const char *s, size_t len, bool bos, bool special, size_t *n)
{
    size_t need = 0;
    tn_status st = tn_tokenize(v, s, len, bos, special, NULL, 0, &need);
    assert_true(st == TN_OK || st == TN_ERR_FULL);
    int32_t *ids = malloc((need ? need : 1) * sizeof *ids);
    assert_non_null(ids);
    assert_int_equal(tn_tokenize(v, s, len, bos, special, ids, need, n), TN_OK);
    assert_int_equal(*n, need);
    return ids;
}

static void assert_ids(const int32_t *got, size_t n, const int32_t *want, size_t m)
{
    if (n != m || memcmp(got, want, n * sizeof *got) != 0) {
        print_error("got %zu ids:", n);
        for (size_t i = 0; i < n; i++)
            print_error(" %d", got[i]);
        print_error("\nwant %zu ids:", m);
        for (size_t i = 0; i < m; i++)
            print_error(" %d", want[i]);
        print_error("\n");
        fail();
    }
}

/* ---------------------------------------------------------------------------
 * llama.cpp's vectors: NAME.gguf.inp holds each string followed by the line
 * "__ggml_vocab_test__" (so the separator is "\n__ggml_vocab_test__\n" and
 * the newline before it is not part of the string); NAME.gguf.out holds one
 * line of ids per string, without BOS.
 * ------------------------------------------------------------------------ */
static int run_vectors(const char *name, int *n_cases)
{
    char path[512], inp[512], out[512];
    snprintf(path, sizeof path, VOCAB_DIR "ggml-vocab-%s.gguf", name);
    snprintf(inp, sizeof inp, VOCAB_DIR "ggml-vocab-%s.gguf.inp", name);
    snprintf(out, sizeof out, VOCAB_DIR "ggml-vocab-%s.gguf.out", name);
    tn_vocab *v = load_vocab(path);
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
        }
        free(got);
    }
    tn_test_vectors_free(vec, n_vec);
    tn_vocab_free(v);
    *n_cases = n_vec;
    return failures;
}

static void test_llama_spm_vectors(void **state)
{
    (void)state;
    int n;
    int failures = run_vectors("llama-spm", &n);
    print_message("llama-spm: %d of %d vectors pass\n", n - failures, n);
    assert_int_equal(n, 46);
    assert_int_equal(failures, 0);
}

static void test_phi3_vectors(void **state)
{
    (void)state;
    int n;
    int failures = run_vectors("phi-3", &n);
    print_message("phi-3: %d of %d vectors pass\n", n - failures, n);
    assert_int_equal(n, 46);
    assert_int_equal(failures, 0);
}

/* ---------------------------------------------------------------------------
 * BOS, the leading-space rule, special tokens
 * ------------------------------------------------------------------------ */
static void test_bos_and_specials(void **state)
{
    (void)state;
    tn_vocab *v = load_vocab(VOCAB_DIR "ggml-vocab-llama-spm.gguf");
    assert_int_equal(tn_vocab_n_tokens(v), 32000);
    assert_int_equal(tn_vocab_bos(v), 1);
    assert_int_equal(tn_vocab_eos(v), 2);
    assert_true(tn_vocab_add_bos(v));
    assert_true(tn_vocab_is_eog(v, 2));
    assert_false(tn_vocab_is_eog(v, 1));
    assert_false(tn_vocab_is_eog(v, -1));
    assert_false(tn_vocab_is_eog(v, 32000));
    assert_string_equal(tn_vocab_piece(v, 15043), "\xe2\x96\x81Hello");
    assert_null(tn_vocab_piece(v, 32000));
    assert_int_equal(tn_vocab_token_type(v, 1), TN_TOKEN_CONTROL);
    assert_int_equal(tn_vocab_token_type(v, 13), TN_TOKEN_BYTE);
    assert_int_equal(tn_vocab_token_type(v, 0), TN_TOKEN_UNKNOWN);
    assert_int_equal(tn_vocab_token_type(v, 15043), TN_TOKEN_NORMAL);
    assert_int_equal(tn_vocab_token_type(v, -5), 0);

    size_t n;
    int32_t *ids = tok(v, "Hello world", 11, true, false, &n);
    assert_ids(ids, n, (int32_t[]){1, 15043, 3186}, 3);
    free(ids);
    /* empty text: BOS alone, or nothing (no lone "▁") */
    ids = tok(v, "", 0, true, false, &n);
    assert_ids(ids, n, (int32_t[]){1}, 1);
    free(ids);
    ids = tok(v, NULL, 0, false, false, &n);
    assert_int_equal(n, 0);
    free(ids);

    /* parse_special: control texts become their ids, and the text after a
     * special token gets the leading space again */
    const char *s = "<s>Hello</s>";
    ids = tok(v, s, strlen(s), false, true, &n);
    assert_ids(ids, n, (int32_t[]){1, 15043, 2}, 3);
    free(ids);
    s = "Hello<s>world";
    ids = tok(v, s, strlen(s), false, true, &n);
    assert_ids(ids, n, (int32_t[]){15043, 1, 3186}, 3);
    free(ids);
    /* without it they are plain text */
    ids = tok(v, s, strlen(s), false, false, &n);
    assert_true(n > 3);
    for (size_t i = 0; i < n; i++)
        assert_true(ids[i] != 1 && ids[i] != 2 && ids[i] >= 0 && ids[i] < 32000);
    free(ids);
    s = "<unk>";
    ids = tok(v, s, strlen(s), false, true, &n);
    assert_ids(ids, n, (int32_t[]){0}, 1);
    free(ids);

    /* add_bos with parse_special: "<s>" in the text gives a second BOS */
    s = "<s>Hi";
    ids = tok(v, s, strlen(s), true, true, &n);
    assert_true(n >= 3 && ids[0] == 1 && ids[1] == 1);
    free(ids);
    tn_vocab_free(v);
}

/* Phi-3: llama.cpp strips white space after its special tokens (rstrip),
 * and user-defined tokens (</s> is one) are matched even without
 * parse_special. */
static void test_phi3_specials(void **state)
{
    (void)state;
    tn_vocab *v = load_vocab(VOCAB_DIR "ggml-vocab-phi-3.gguf");
    assert_int_equal(tn_vocab_eos(v), 32000);
    assert_true(tn_vocab_is_eog(v, 32000)); /* <|endoftext|> */
    assert_true(tn_vocab_is_eog(v, 32007)); /* <|end|> */
    assert_false(tn_vocab_is_eog(v, 32010));

    size_t nh, n;
    int32_t *hi = tok(v, "Hi", 2, false, false, &nh); /* "▁Hi" */
    const char *s = "<|user|>\n  Hi<|end|>\n";
    int32_t *ids = tok(v, s, strlen(s), false, true, &n);
    int32_t want[16];
    size_t m = 0;
    want[m++] = 32010;
    for (size_t i = 0; i < nh; i++)
        want[m++] = hi[i];
    want[m++] = 32007;
    assert_ids(ids, n, want, m);
    free(ids);

    /* <s> is not rstrip: the newline after it stays */
    s = "<s>\nHi";
    ids = tok(v, s, strlen(s), false, true, &n);
    assert_true(n >= 3 && ids[0] == 1);
    assert_int_equal(ids[1], 29871); /* "▁" then <0x0A> */
    assert_int_equal(ids[2], 13);
    free(ids);

    /* user-defined </s> is split out without parse_special; control
     * <|end|> is not */
    s = "Hi</s>Hi<|end|>";
    ids = tok(v, s, strlen(s), false, false, &n);
    m = 0;
    for (size_t i = 0; i < nh; i++)
        want[m++] = hi[i];
    want[m++] = 2;
    for (size_t i = 0; i < nh; i++)
        want[m++] = hi[i];
    assert_true(n > m);
    assert_memory_equal(ids, want, m * sizeof *ids);
    for (size_t i = m; i < n; i++)
        assert_true(ids[i] != 32007);
    free(ids);
    free(hi);
    tn_vocab_free(v);
}

/* The output buffer: TN_ERR_FULL with the full count, prefix written. */
static void test_capacity(void **state)
{
    (void)state;
    tn_vocab *v = load_vocab(VOCAB_DIR "ggml-vocab-llama-spm.gguf");
    int32_t ids[8] = {-7, -7, -7, -7, -7, -7, -7, -7};
    size_t n = 99;
    assert_int_equal(tn_tokenize(v, "Hello world", 11, true, false, ids, 2, &n), TN_ERR_FULL);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 15043);
    assert_int_equal(ids[2], -7);
    assert_int_equal(tn_tokenize(v, "Hello world", 11, true, false, NULL, 0, &n), TN_ERR_FULL);
    assert_int_equal(n, 3);
    assert_int_equal(tn_tokenize(v, "Hello world", 11, true, false, ids, 3, &n), TN_OK);
    assert_int_equal(n, 3);
    assert_int_equal(tn_tokenize(v, NULL, 5, false, false, ids, 8, &n), TN_ERR_INVALID);
    assert_int_equal(tn_tokenize(NULL, "x", 1, false, false, ids, 8, &n), TN_ERR_INVALID);
    tn_vocab_free(v);
}

/* ---------------------------------------------------------------------------
 * Invalid and random UTF-8: never a crash or an out-of-range id, and the
 * encoder is lossless: the raw pieces of the ids (byte tokens as their
 * byte) concatenate to the escaped text, "▁" + text with ' ' → "▁". (The
 * printed pieces need not give the text back: with invalid UTF-8 a
 * character can swallow the bytes of an escaped space, as in llama.cpp.)
 * ------------------------------------------------------------------------ */
static uint64_t rng_state = 0x243F6A8885A308D3ull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static void check_roundtrip(const tn_vocab *v, const char *text, size_t len)
{
    size_t n;
    int32_t *ids = tok(v, text, len, false, false, &n);
    size_t cap = 3 * len + 3;
    char *want = malloc(cap), *got = malloc(cap + 64);
    size_t m = 0, w = 0;
    if (len > 0) {
        memcpy(want, "\xe2\x96\x81", 3);
        m = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(want + m, "\xe2\x96\x81", 3);
            m += 3;
        } else {
            want[m++] = text[i];
        }
    }
    for (size_t i = 0; i < n; i++) {
        assert_true(ids[i] >= 0 && ids[i] < tn_vocab_n_tokens(v));
        const char *p = tn_vocab_piece(v, ids[i]);
        if (tn_vocab_token_type(v, ids[i]) == TN_TOKEN_BYTE) {
            assert_true(w < cap);
            got[w++] = (char)strtol(p + 3, NULL, 16);
        } else {
            assert_int_equal(tn_vocab_token_type(v, ids[i]), TN_TOKEN_NORMAL);
            size_t k = strlen(p);
            assert_true(w + k <= cap);
            memcpy(got + w, p, k);
            w += k;
        }
    }
    assert_int_equal(w, m);
    assert_memory_equal(got, want, m);
    free(want);
    free(got);
    free(ids);
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    tn_vocab *v = load_vocab(VOCAB_DIR "ggml-vocab-llama-spm.gguf");
    static const char *const cases[] = {
        "\xff", "\xc3", "\xe2\x82", "\xf0\x9f\xa6", "a\xf0", "\x80\x80\x80", "\xc0\xaf", "\xed\xa0\x80",
        "\xf8\x88\x80\x80\x80", "caf\xc3", "\xe2 x", "\xf0\x9f \x99", "\xfe\xff\xfe", "abc\xc3\xa9\xcc",
    };
    for (size_t i = 0; i < TN_ARRAY_LEN(cases); i++) {
        size_t len = strlen(cases[i]);
        char *t = malloc(len); /* exact size: ASan catches a read past the end */
        memcpy(t, cases[i], len);
        check_roundtrip(v, t, len);
        free(t);
    }
    /* random byte strings biased towards UTF-8 structure and spaces */
    static const unsigned char pool[] = {' ', 'a', 'e', 't', 'h', '.', '\n', 0xc3, 0xa9, 0xe2, 0x82, 0xac,
                                         0xf0, 0x9f, 0x98, 0x80, 0xff, 0x00, 0xe4, 0xb8, 0xad, '<', 's', '>'};
    for (int iter = 0; iter < 3000; iter++) {
        size_t len = rnd() % 40;
        char *t = malloc(len ? len : 1);
        for (size_t i = 0; i < len; i++)
            t[i] = (char)(rnd() % 4 == 0 ? (rnd() & 0xff) : pool[rnd() % sizeof pool]);
        /* a literal U+2581 in the input would come back as a space */
        if (len >= 3 && memmem(t, len, "\xe2\x96\x81", 3)) {
            free(t);
            continue;
        }
        check_roundtrip(v, t, len);
        free(t);
    }
    tn_vocab_free(v);
}

/* stories260K (512 tokens): the prompt of the reference generations. */
static void test_stories_prompt(void **state)
{
    (void)state;
    tn_vocab *v = load_vocab(STORIES);
    assert_int_equal(tn_vocab_n_tokens(v), 512);
    size_t n;
    int32_t *ids = tok(v, "Once upon a time", 16, true, false, &n);
    /* the first ids of the reference greedy run (BOS, then the prompt) */
    size_t len;
    char *ref = tn_test_read_file(TN_SHARED_DATA "models/stories260K/expected-greedy-t0.tokens.derived.txt", &len);
    assert_non_null(ref);
    int32_t want[5];
    char *p = ref;
    for (int i = 0; i < 5; i++)
        want[i] = (int32_t)strtol(p, &p, 10);
    free(ref);
    assert_ids(ids, n, want, 5);
    char text[64];
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        w += tn_token_to_piece(v, ids[i], false, text + w, sizeof text - w);
    assert_int_equal(w, 17);
    assert_memory_equal(text, " Once upon a time", 17);
    free(ids);
    tn_vocab_free(v);
}

/* ---------------------------------------------------------------------------
 * Vocabulary errors on hand-written GGUF files
 * ------------------------------------------------------------------------ */
enum { DROP_NONE, DROP_TOKENS, DROP_MODEL };

typedef struct vocab_spec {
    const char *model;
    int drop;
    int n_scores, n_types; /* entries written; 4 is right */
    int64_t bos;           /* < -1: not written */
    bool dup;
} vocab_spec;

static tn_status build(const vocab_spec *sp)
{
    const char *tokens[4] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81" "a"};
    if (sp->dup)
        tokens[3] = "<s>";
    float scores[8] = {0, 0, 0, -1};
    int32_t types[8] = {TN_TOKEN_UNKNOWN, TN_TOKEN_CONTROL, TN_TOKEN_CONTROL, TN_TOKEN_NORMAL};
    tn_gguf_writer *w;
    assert_int_equal(tn_gguf_writer_new(&w), TN_OK);
    if (sp->drop != DROP_MODEL)
        assert_int_equal(tn_gguf_set_str(w, "tokenizer.ggml.model", sp->model), TN_OK);
    if (sp->drop != DROP_TOKENS)
        assert_int_equal(tn_gguf_set_arr_str(w, "tokenizer.ggml.tokens", tokens, 4), TN_OK);
    assert_int_equal(tn_gguf_set_arr(w, "tokenizer.ggml.scores", TN_GGUF_FLOAT32, scores, (uint64_t)sp->n_scores), TN_OK);
    assert_int_equal(tn_gguf_set_arr(w, "tokenizer.ggml.token_type", TN_GGUF_INT32, types, (uint64_t)sp->n_types), TN_OK);
    if (sp->bos >= 0)
        assert_int_equal(tn_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)sp->bos), TN_OK);
    else if (sp->bos == -1)
        assert_int_equal(tn_gguf_set_i32(w, "tokenizer.ggml.bos_token_id", -1), TN_OK);
    char *path = tn_test_tmp_path(".gguf");
    assert_int_equal(tn_gguf_writer_write(w, path), TN_OK);
    tn_gguf_writer_free(w);
    tn_gguf *g;
    assert_int_equal(tn_gguf_open(path, &g), TN_OK);
    remove(path);
    free(path);
    tn_vocab *v = NULL;
    tn_status s = tn_vocab_from_gguf(g, &v);
    tn_gguf_free(g);
    if (s == TN_OK) {
        assert_non_null(v);
        int32_t ids[4];
        size_t n;
        assert_int_equal(tn_tokenize(v, " a", 2, false, false, ids, 4, &n), TN_OK);
        assert_int_equal(n, 2); /* "▁" has no piece nor byte token: UNK, then "▁a" */
        assert_int_equal(ids[0], 0);
        assert_int_equal(ids[1], 3);
        tn_vocab_free(v);
    } else {
        assert_null(v);
    }
    return s;
}

static void expect_err(const vocab_spec *sp, tn_status want, const char *key)
{
    tn_status s = build(sp);
    if (s != want || !strstr(tn_last_error(), key))
        print_error("status %d, message \"%s\"; wanted %d naming %s\n", s, tn_last_error(), want, key);
    assert_int_equal(s, want);
    assert_non_null(strstr(tn_last_error(), key));
}

static void test_vocab_errors(void **state)
{
    (void)state;
    vocab_spec ok = {"llama", DROP_NONE, 4, 4, 1, false};
    assert_int_equal(build(&ok), TN_OK);

    vocab_spec s = ok;
    s.drop = DROP_TOKENS;
    expect_err(&s, TN_ERR_FORMAT, "tokenizer.ggml.tokens");
    s = ok;
    s.drop = DROP_MODEL;
    expect_err(&s, TN_ERR_FORMAT, "tokenizer.ggml.model");
    s = ok;
    s.n_scores = 3;
    expect_err(&s, TN_ERR_FORMAT, "tokenizer.ggml.scores");
    s = ok;
    s.n_scores = 5;
    expect_err(&s, TN_ERR_FORMAT, "tokenizer.ggml.scores");
    s = ok;
    s.n_types = 2;
    expect_err(&s, TN_ERR_FORMAT, "tokenizer.ggml.token_type");
    s = ok;
    s.bos = 4;
    expect_err(&s, TN_ERR_FORMAT, "tokenizer.ggml.bos_token_id");
    s = ok;
    s.dup = true;
    expect_err(&s, TN_ERR_FORMAT, "tokenizer.ggml.tokens");
    s = ok;
    s.model = "gpt2"; /* byte-level BPE needs its merges */
    expect_err(&s, TN_ERR_FORMAT, "tokenizer.ggml.merges");
    s = ok;
    s.model = "t5";
    expect_err(&s, TN_ERR_UNSUPPORTED, "t5");
    s = ok;
    s.model = "nonsense";
    expect_err(&s, TN_ERR_UNSUPPORTED, "nonsense");

    /* a negative id means "none" */
    s = ok;
    s.bos = -1;
    assert_int_equal(build(&s), TN_OK);
}

/* baichuan (SPM, no vectors) loads and adds BOS. */
static void test_other_families(void **state)
{
    (void)state;
    tn_vocab *v = load_vocab(VOCAB_DIR "ggml-vocab-baichuan.gguf");
    size_t n;
    int32_t *ids = tok(v, "Hello world", 11, true, false, &n);
    assert_true(n >= 2 && ids[0] == tn_vocab_bos(v));
    free(ids);
    tn_vocab_free(v);
}

/* Merging word by word is only allowed when no piece has a "▁" inside; a
 * vocabulary with "a▁b" must merge across the word start. */
static void test_word_split_guard(void **state)
{
    (void)state;
    const char *tokens[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", "a\xe2\x96\x81", "a\xe2\x96\x81" "b"};
    float scores[] = {0, 0, 0, -5, -5, -5, -1, -0.5f};
    int32_t types[] = {TN_TOKEN_UNKNOWN, TN_TOKEN_CONTROL, TN_TOKEN_CONTROL, 1, 1, 1, 1, 1};
    tn_gguf_writer *w;
    assert_int_equal(tn_gguf_writer_new(&w), TN_OK);
    assert_int_equal(tn_gguf_set_str(w, "tokenizer.ggml.model", "llama"), TN_OK);
    assert_int_equal(tn_gguf_set_arr_str(w, "tokenizer.ggml.tokens", tokens, 8), TN_OK);
    assert_int_equal(tn_gguf_set_arr(w, "tokenizer.ggml.scores", TN_GGUF_FLOAT32, scores, 8), TN_OK);
    assert_int_equal(tn_gguf_set_arr(w, "tokenizer.ggml.token_type", TN_GGUF_INT32, types, 8), TN_OK);
    char *path = tn_test_tmp_path(".gguf");
    assert_int_equal(tn_gguf_writer_write(w, path), TN_OK);
    tn_gguf_writer_free(w);
    tn_vocab *v = load_vocab(path);
    remove(path);
    free(path);
    size_t n;
    int32_t *ids = tok(v, "a b", 3, false, false, &n); /* "▁a▁b" */
    assert_ids(ids, n, (int32_t[]){3, 7}, 2);
    free(ids);
    ids = tok(v, "ab a", 4, false, false, &n); /* "▁ab▁a": "a▁" cannot merge ("b" absorbs nothing) */
    assert_ids(ids, n, (int32_t[]){3, 4, 5, 3, 4}, 5);
    free(ids);
    tn_vocab_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_spm_vectors), cmocka_unit_test(test_phi3_vectors),
        cmocka_unit_test(test_bos_and_specials),  cmocka_unit_test(test_phi3_specials),
        cmocka_unit_test(test_capacity),          cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_stories_prompt),    cmocka_unit_test(test_vocab_errors),
        cmocka_unit_test(test_word_split_guard),  cmocka_unit_test(test_other_families),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
